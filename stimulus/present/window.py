"""The PsychoPy window: a :class:`~stimulus.present.schedule.Display` on the screen the subject sees.

Textures are made from the checked images before the run is armed. Times
are PsychoPy's: ``win.flip()`` returns the moment of the flip on
``logging.defaultClock``, and keys are stamped on the same clock, so the run
loop measures onsets and responses on one time base. With a monitor
calibration (PsychoPy's Monitor Center name) sizes are in degrees of visual
angle; without one, in pixels.

The refresh rate is measured when the window opens. Onsets are scheduled
in frames of the measured rate; a rate the operator declared
(``expected_hz``, from the monitor's settings) that differs by more than 2 %
is reported as a warning, since it means the display is not running in the
mode the experiment was designed for. Without vsync (Xvfb, some drivers)
no stable rate can be measured; the declared rate is then used.

Keys: presses of the scanner's trigger key are kept apart from responses
(:meth:`PsychoPyDisplay.trigger_presses`), so a trigger is never scored as a
button press.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from stimulus.errors import PresenterError

__all__ = ["PsychoPyClock", "PsychoPyDisplay", "choose_refresh_rate"]

log = logging.getLogger(__name__)


class PsychoPyClock:
    """PsychoPy's default clock, the one ``win.flip()`` and key stamps use."""

    def __init__(self) -> None:
        from psychopy import logging as psychopy_logging

        self._clock = psychopy_logging.defaultClock

    def now(self) -> float:
        return float(self._clock.getTime())

    def seconds_to_wall(self, seconds: float) -> float:
        return seconds

    def sleep_until(self, t: float) -> None:
        from psychopy import core

        remaining = t - self.now()
        if remaining > 0:
            core.wait(remaining, hogCPUperiod=min(remaining, 0.002))


class PsychoPyDisplay:
    """A PsychoPy window that the run loop draws into.

    Parameters
    ----------
    size : (width, height) in pixels
    fullscreen : bool
    screen : int
    monitor : str, optional
        A calibrated monitor's name; sizes are then in degrees.
    image_size : float
        Side of the square images: degrees with a monitor, else pixels.
    fixation_size : float
        Diameter of the fixation point, in the same units.
    background : RGB on -1..1
    expected_hz : float, optional
        The refresh rate the monitor is set to; compared with the measured one.
    trigger_keys : tuple of str
        Keys that are the scanner's triggers, not responses.
    """

    def __init__(
        self,
        *,
        size: tuple[int, int] = (800, 600),
        fullscreen: bool = False,
        screen: int = 0,
        monitor: str | None = None,
        image_size: float = 400.0,
        fixation_size: float = 8.0,
        background: tuple[float, float, float] = (0.0, 0.0, 0.0),
        expected_hz: float | None = None,
        trigger_keys: tuple[str, ...] = (),
    ) -> None:
        from psychopy import event, visual

        if monitor is not None:
            _check_monitor(monitor)
        self._event = event
        self._visual = visual
        units = "deg" if monitor else "pix"
        self.win = visual.Window(
            size=size, fullscr=fullscreen, screen=screen, monitor=monitor, units=units, color=background,
            colorSpace="rgb", allowGUI=False, waitBlanking=True, checkTiming=False,
        )  # fmt: skip
        self.clock = PsychoPyClock()
        measured = self.win.getActualFrameRate(nIdentical=10, nMaxFrames=120, nWarmUpFrames=10, threshold=1)
        self.measured_hz = None if measured is None else float(measured)
        self.refresh_hz, self.refresh_warning = choose_refresh_rate(self.measured_hz, expected_hz)
        if self.refresh_warning:
            log.warning("%s", self.refresh_warning)
        self.trigger_keys = frozenset(trigger_keys)
        self._keys: list[tuple[str, float]] = []
        self._trigger_times: list[float] = []
        self.image_size = image_size
        self.fixation = visual.Circle(
            self.win,
            radius=fixation_size / 2,
            units=units,
            fillColor=(1, -1, -1),
            lineColor=None,
            colorSpace="rgb",
        )
        self.stims: dict[str, Any] = {}

    def prepare(self, images: dict[str, npt.NDArray[np.uint8]]) -> None:
        side = (self.image_size, self.image_size)
        self.stims = {
            name: self._visual.ImageStim(self.win, image=Image.fromarray(pixels), size=side, interpolate=True)
            for name, pixels in images.items()
        }

    def draw_stimulus(self, name: str) -> None:
        self.stims[name].draw()
        self.fixation.draw()

    def draw_fixation(self, colour: tuple[float, float, float]) -> None:
        self.fixation.fillColor = colour
        self.fixation.draw()

    def flip(self) -> float:
        return float(self.win.flip())

    def _collect_keys(self) -> None:
        # PsychoPy's hardware Keyboard stamps keys in the HID driver only with psychtoolbox; without it
        # (this project's CI) it falls back to the event module and, as measured with psychopy-lib
        # 2025, returns each key's name as [name, time] and the time of the call as its rt. The event
        # module's own stamps (pyglet's, each frame) are the better ones there, so they are used.
        for key, t in self._event.getKeys(timeStamped=self.clock._clock):
            if key in self.trigger_keys:
                self._trigger_times.append(float(t))
            else:
                self._keys.append((str(key), float(t)))

    def pressed_keys(self) -> list[tuple[str, float]]:
        self._collect_keys()
        keys, self._keys = self._keys, []
        return keys

    def trigger_presses(self) -> list[float]:
        """Times of trigger-key presses since the last call."""
        self._collect_keys()
        times, self._trigger_times = self._trigger_times, []
        return times

    def close(self) -> None:
        self.win.close()


def choose_refresh_rate(measured_hz: float | None, expected_hz: float | None) -> tuple[float, str | None]:
    """The rate to schedule in, and a warning for the operator when something is off."""
    if measured_hz is None:
        if expected_hz is None:
            return 60.0, (
                "the refresh rate could not be measured (no stable vsync) and none was declared; "
                "scheduling at 60 Hz. Declare the monitor's rate (--refresh-hz) and check that vsync is on."
            )
        return expected_hz, (
            f"the refresh rate could not be measured (no stable vsync); scheduling at the declared "
            f"{expected_hz:g} Hz. Onsets are measured all the same, but check that vsync is on."
        )
    if expected_hz is not None and abs(measured_hz - expected_hz) > 0.02 * expected_hz:
        return measured_hz, (
            f"the display refreshes at {measured_hz:.2f} Hz, not the declared {expected_hz:g} Hz: "
            "check the monitor's mode. Onsets are scheduled in frames of the measured rate."
        )
    return measured_hz, None


def _check_monitor(name: str) -> None:
    """A monitor PsychoPy has no calibration for would silently become its uncalibrated default."""
    from psychopy import monitors

    known = sorted(monitors.getAllMonitors())
    if name not in known:
        raise PresenterError(
            f"monitor {name!r} has no calibration on this computer (known: {', '.join(known) or 'none'}); "
            "check the name, or calibrate it in PsychoPy's Monitor Center (distance, width, resolution)"
        )
