"""Run plans checked before arming, and the frame-locked run loop without a window."""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest

from stimulus import PlanError, TriggerTimeoutError
from stimulus.present import (
    FixationSettings,
    PlannedTrial,
    RunLog,
    RunPlan,
    VirtualClock,
    VirtualDisplay,
    VirtualTriggers,
    present_run,
    write_bids_events,
)
from stimulus.present.events import Done, Onset

REFRESH_HZ = 60.0
PERIOD = 1 / REFRESH_HZ


def _plan(stimuli: dict[str, str], n_trials: int = 6, **changes: object) -> RunPlan:
    names = sorted(stimuli)
    trials = tuple(
        PlannedTrial(
            stimulus=names[k % 3],
            sha256=stimuli[names[k % 3]],
            onset_s=2.0 + 3.0 * k,
            duration_s=1.0,
            condition="target" if k % 2 else "natural",
            target_roi="V1",
        )
        for k in range(n_trials)
    )
    settings: dict[str, object] = {
        "run_id": "run-1",
        "tr_s": 2.0,
        "n_volumes": 12,
        "trials": trials,
        **changes,
    }
    return RunPlan(**settings)  # type: ignore[arg-type]


def _run(
    plan: RunPlan, root: Path, late_flips: tuple[int, ...] = (), presses: tuple[tuple[str, float], ...] = ()
):  # type: ignore[no-untyped-def]
    clock = VirtualClock()
    display = VirtualDisplay(clock, REFRESH_HZ, late_flips=late_flips)
    for key, t in presses:
        display.press(key, t)
    events: list[dict[str, object]] = []
    log = present_run(
        plan, display, VirtualTriggers(clock, plan.tr_s, plan.n_volumes, first_at=0.5), clock,
        images=plan.load_images(root), on_event=events.append,
    )  # fmt: skip
    return log, display, events


def test_onsets_follow_the_plan_to_a_frame_in_order(stimuli: dict[str, str], tmp_path: Path) -> None:
    plan = _plan(stimuli)
    log, display, events = _run(plan, tmp_path)
    onsets = [r.actual_onset_s for r in log.trials]
    assert all(o is not None for o in onsets)
    assert onsets == sorted(onsets)  # type: ignore[type-var]
    for record in log.trials:
        assert record.onset_error_ms is not None
        assert abs(record.onset_error_ms) <= 1e3 * PERIOD + 1e-6
        assert record.actual_duration_s == pytest.approx(record.planned_duration_s, abs=PERIOD + 1e-9)
    assert log.dropped_frames == 0
    assert [e.trial for e in events if isinstance(e, Onset)] == list(range(6))
    # What was on screen at each planned onset is that trial's image; fixation between trials.
    for trial in plan.trials:
        at = [
            what for t, what in display.shown if 0.5 + trial.onset_s + PERIOD <= t < 0.5 + trial.onset_s + 0.9
        ]
        assert set(at) == {trial.stimulus}
    between = [what for t, what in display.shown if 0.5 + 3.5 <= t < 0.5 + 4.5]
    assert between
    assert all(what.startswith("fixation") for what in between)
    assert log.triggers_s == pytest.approx([2.0 * k for k in range(12)])


def test_dropped_frames_are_counted_and_onsets_stay_locked(stimuli: dict[str, str], tmp_path: Path) -> None:
    plan = _plan(stimuli)
    clean, _, _ = _run(plan, tmp_path)
    late, _, _ = _run(plan, tmp_path, late_flips=(130, 131, 400))
    assert late.dropped_frames == 3
    # Frames dropped during trial 0 (flips 130, 131 fall in 2.0-3.0 s) shorten nothing else.
    assert late.trials[0].dropped_frames == 2
    for a, b in zip(clean.trials[1:], late.trials[1:], strict=True):
        assert b.actual_onset_s == pytest.approx(a.actual_onset_s, abs=PERIOD + 1e-9)


def test_escape_aborts_and_keeps_what_happened(stimuli: dict[str, str], tmp_path: Path) -> None:
    plan = _plan(stimuli)
    log, _, events = _run(plan, tmp_path, presses=(("1", 0.5 + 4.2), ("escape", 0.5 + 9.1)))
    assert log.aborted
    shown = [r for r in log.trials if r.actual_onset_s is not None]
    assert [r.index for r in shown] == [0, 1, 2]
    assert log.responses == [("1", pytest.approx(4.2, abs=PERIOD))]
    assert events[-1] == Done(run_id=plan.run_id, aborted=True, dropped_frames=0)
    tsv, sidecar = write_bids_events(log, plan, tmp_path / "sub-01_task-x_run-1_events.tsv")
    rows = list(csv.DictReader(tsv.read_text().splitlines(), delimiter="\t"))
    assert [r["onset_measured"] for r in rows if r["trial_type"] != "response"] == ["true"] * 3 + [
        "false"
    ] * 3
    assert [r["response_key"] for r in rows if r["trial_type"] == "response"] == ["1"]
    assert json.loads(sidecar.read_text())["PresenterRun"]["Aborted"] is True


def test_a_long_run_takes_a_fraction_of_its_time_without_a_window(
    stimuli: dict[str, str], tmp_path: Path
) -> None:
    plan = _plan(stimuli, n_trials=90, n_volumes=140)  # 280 s of run
    start = time.perf_counter()
    log, _, _ = _run(plan, tmp_path)
    assert time.perf_counter() - start < 10
    assert sum(r.actual_onset_s is not None for r in log.trials) == 90


def test_the_attention_task_changes_colour_and_scores_responses(
    stimuli: dict[str, str], tmp_path: Path
) -> None:
    plan = _plan(stimuli, fixation=FixationSettings(task=True, changes_per_minute=12))
    log, display, _ = _run(plan, tmp_path)
    changes = log.fixation_changes_s
    assert len(changes) >= 3
    colours = {what for _, what in display.shown if what.startswith("fixation")}
    assert len(colours) == 2
    assert log.attention is not None
    assert (log.attention.changes, log.attention.hits) == (len(changes), 0)
    # The subject answers the first two changes after 0.4 s, misses the rest, and presses once at random;
    # a key that is not a response key is logged but not scored.
    presses = [("1", 0.5 + changes[0] + 0.4), ("2", 0.5 + changes[1] + 0.4), ("1", 0.5 + changes[0] - 0.3)]
    log, _, events = _run(plan, tmp_path, presses=(*presses, ("x", 0.5 + changes[2] + 0.4)))
    assert log.attention is not None
    assert (log.attention.hits, log.attention.false_alarms) == (2, 1)
    assert log.attention.reaction_times_s == pytest.approx([0.4, 0.4], abs=PERIOD)
    assert log.attention.hit_rate == pytest.approx(2 / len(changes))
    done = events[-1]
    assert isinstance(done, Done)
    assert done.attention == log.attention
    assert RunLog.from_wire(json.loads(json.dumps(log.to_wire()))) == log  # what the controller gets back
    assert [key for key, _ in log.responses] == ["1", "1", "2", "x"]


def test_a_missing_or_altered_file_fails_before_arming(stimuli: dict[str, str], tmp_path: Path) -> None:
    plan = _plan(stimuli)
    (tmp_path / "img1.png").unlink()
    (tmp_path / "img2.png").write_bytes(b"not the planned image")
    with pytest.raises(
        PlanError, match=r"img1\.png: No such file.*img2\.png: its contents differ from the plan's sha256"
    ):
        plan.load_images(tmp_path)


def test_plans_with_bad_timing_or_unknown_keys_are_refused(stimuli: dict[str, str]) -> None:
    with pytest.raises(PlanError, match=r"trial 1 starts at 2.5 s, before trial 0 ends at 3.0 s"):
        RunPlan(run_id="r", tr_s=2.0, n_volumes=10, trials=(
            PlannedTrial(stimulus="a", sha256="x", onset_s=2.0, duration_s=1.0),
            PlannedTrial(stimulus="b", sha256="y", onset_s=2.5, duration_s=1.0),
        ))  # fmt: skip
    with pytest.raises(PlanError, match=r"after the run's 2 volumes of 2.0 s"):
        _plan(stimuli, n_volumes=2)
    text = json.loads(_plan(stimuli).to_json())
    assert RunPlan.from_json(json.dumps(text)) == _plan(stimuli)
    text["trials"][0]["onset"] = 1.0
    with pytest.raises(PlanError, match=r"trials\[0\] has unknown key\(s\) onset"):
        RunPlan.from_json(json.dumps(text))


def test_a_trigger_that_never_comes_times_out(stimuli: dict[str, str], tmp_path: Path) -> None:
    plan = _plan(stimuli)
    clock = VirtualClock()
    with pytest.raises(TriggerTimeoutError, match="no trigger within 30"):
        present_run(plan, VirtualDisplay(clock), VirtualTriggers(clock, 2.0, 12, first_at=100.0), clock,
                    images=plan.load_images(tmp_path), trigger_timeout_s=30)  # fmt: skip
    assert np.isclose(clock.now(), 30, atol=0.1)


def test_the_refresh_rate_is_the_measured_one_and_a_mismatch_is_flagged() -> None:
    from stimulus.present.window import choose_refresh_rate

    assert choose_refresh_rate(119.9, 120.0) == (119.9, None)
    rate, warning = choose_refresh_rate(60.0, 120.0)
    assert rate == 60.0
    assert warning is not None
    assert "60.00 Hz, not the declared 120 Hz" in warning
    rate, warning = choose_refresh_rate(None, 144.0)  # no vsync: trust the monitor's declared mode
    assert rate == 144.0
    assert warning is not None
    assert "could not be measured" in warning
    assert choose_refresh_rate(None, None)[0] == 60.0
