"""The run loop in a real PsychoPy window (Xvfb at depth 24 in CI): what is on screen, and when."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image

from stimulus import natural_crops
from stimulus.present import PlannedTrial, RunPlan, VirtualTriggers, present_run

pytestmark = pytest.mark.skipif(not os.environ.get("DISPLAY"), reason="needs a display (Xvfb)")

WINDOW = (320, 240)
SIDE = 64  # images drawn at their own size, so the screen holds their exact pixels


def _capturing_display():  # type: ignore[no-untyped-def]
    from stimulus.present.window import PsychoPyDisplay

    class Capturing(PsychoPyDisplay):
        """Takes the back buffer before every flip: exactly what that flip shows."""

        def __init__(self) -> None:
            super().__init__(size=WINDOW, image_size=SIDE, fixation_size=6)
            self.shots: list[tuple[float, str, npt.NDArray[np.uint8]]] = []
            self.drawn = ""

        def draw_stimulus(self, name: str) -> None:
            super().draw_stimulus(name)
            self.drawn = name

        def draw_fixation(self, colour: tuple[float, float, float]) -> None:
            super().draw_fixation(colour)
            self.drawn = "fixation"

        def flip(self) -> float:
            shot = np.asarray(self.win.getMovieFrame(buffer="back"))
            self.win.movieFrames.clear()
            flipped = super().flip()
            self.shots.append((flipped, self.drawn, shot))
            return flipped

    return Capturing()


def test_the_screen_shows_each_stimulus_at_its_onset_and_fixation_between(tmp_path: Path) -> None:
    pictures = (natural_crops(3, size=SIDE, seed=4).transpose(0, 2, 3, 1) * 255).round().astype(np.uint8)
    trials = []
    for k, picture in enumerate(pictures):
        path = tmp_path / f"s{k}.png"
        Image.fromarray(picture).save(path)
        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        trials.append(PlannedTrial(stimulus=path.name, sha256=sha, onset_s=0.5 + 0.6 * k, duration_s=0.3))
    plan = RunPlan(run_id="window", tr_s=1.0, n_volumes=3, trials=tuple(trials))
    display = _capturing_display()
    try:
        triggers = VirtualTriggers(
            display.clock, plan.tr_s, plan.n_volumes, first_at=display.clock.now() + 0.1
        )
        log = present_run(plan, display, triggers, display.clock, images=plan.load_images(tmp_path))
    finally:
        display.close()
    first = triggers.first_at
    onsets = [r.actual_onset_s for r in log.trials]
    assert None not in onsets
    assert onsets == sorted(onsets)  # type: ignore[type-var]
    assert all(r.onset_error_ms is not None for r in log.trials)
    top, left = (WINDOW[1] - SIDE) // 2, (WINDOW[0] - SIDE) // 2
    centre = np.zeros((SIDE, SIDE), dtype=bool)
    centre[SIDE // 2 - 5 : SIDE // 2 + 5, SIDE // 2 - 5 : SIDE // 2 + 5] = True  # the fixation point
    for record, picture in zip(log.trials, pictures, strict=True):
        assert record.actual_onset_s is not None
        # The flip recorded as the onset is the one that showed this image, pixel for pixel.
        _, drawn, shot = next(s for s in display.shots if abs(s[0] - first - record.actual_onset_s) < 1e-9)
        assert drawn == record.stimulus
        region = shot[top : top + SIDE, left : left + SIDE].astype(int)
        difference = np.abs(region - picture.astype(int))[~centre]
        assert difference.mean() < 2, f"{record.stimulus}: mean difference {difference.mean():.1f} levels"
    # Between trials: the grey background with the red fixation point, no image.
    gap = next(s for s in display.shots if 0.85 < s[0] - first < 1.05)
    assert gap[1] == "fixation"
    screen = gap[2].astype(int)
    assert np.abs(screen[top : top + SIDE, left : left + SIDE][~centre] - 128).max() <= 1
    assert tuple(screen[WINDOW[1] // 2, WINDOW[0] // 2]) == (255, 0, 0)


def test_launchscan_triggers_come_through_the_keyboard_apart_from_responses(tmp_path: Path) -> None:
    from psychopy import event

    from stimulus.present.triggers import EmulatedScanTriggers
    from stimulus.present.window import PsychoPyDisplay

    Image.new("RGB", (SIDE, SIDE), (200, 10, 10)).save(tmp_path / "a.png")
    sha = hashlib.sha256((tmp_path / "a.png").read_bytes()).hexdigest()
    trials = (PlannedTrial(stimulus="a.png", sha256=sha, onset_s=0.4, duration_s=0.3),)
    plan = RunPlan(run_id="emulated", tr_s=0.3, n_volumes=6, trials=trials)
    display = PsychoPyDisplay(size=WINDOW, image_size=SIDE, trigger_keys=("5",))
    triggers = EmulatedScanTriggers(display, display.clock, plan.tr_s, plan.n_volumes, key="5")
    # The subject presses '1' during the run; the scanner's '5's must not count as responses.
    press = threading.Timer(0.9, lambda: event._onPygletKey(symbol="1", modifiers=0, emulated=True))
    press.start()
    try:
        log = present_run(plan, display, triggers, display.clock, images=plan.load_images(tmp_path))
    finally:
        triggers.stop()
        press.cancel()
        display.close()
    # One trigger per TR. The metronome is a Python thread: on a loaded machine one key can come late.
    assert len(log.triggers_s) == plan.n_volumes
    assert np.median(np.diff(log.triggers_s)) == pytest.approx(plan.tr_s, abs=0.05)
    assert log.triggers_s[-1] == pytest.approx((plan.n_volumes - 1) * plan.tr_s, abs=0.3)
    assert [key for key, _ in log.responses] == ["1"]
    assert log.trials[0].actual_onset_s is not None


def test_a_monitor_with_no_calibration_is_refused_naming_the_known_ones() -> None:
    from stimulus.errors import PresenterError
    from stimulus.present.window import PsychoPyDisplay

    with pytest.raises(
        PresenterError, match=r"monitor 'nosuchmonitor' has no calibration.*known: .*testMonitor"
    ):
        PsychoPyDisplay(monitor="nosuchmonitor")
