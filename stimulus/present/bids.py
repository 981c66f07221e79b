"""A run's events as BIDS ``*_events.tsv`` with its JSON sidecar, as the presenter measured them.

Written by the one events writer the database's export uses too
(:func:`db.base.write_events`), so that the two files have the same columns
and rows: the trials, then the attention task's fixation changes and the
button responses, in time order. Onsets count from the run's first trigger. A
trial never shown (an aborted run) keeps its planned onset with
``onset_measured`` false. The file is named by the plan's run id, which the
controller makes the run's BIDS name (``sub-01_ses-01_task-training_run-01``).
"""

from __future__ import annotations

from pathlib import Path

from db.base import BidsEvent, attention_events, trial_event, write_events
from stimulus.present.events import RunLog
from stimulus.present.plan import RunPlan

__all__ = ["write_bids_events"]


def write_bids_events(log: RunLog, plan: RunPlan, path: Path) -> tuple[Path, Path]:
    """Write ``path`` (an ``*_events.tsv``) and its ``.json`` sidecar, each atomically."""
    rows: list[BidsEvent] = [
        trial_event(
            planned_onset_s=record.planned_onset_s, planned_duration_s=record.planned_duration_s,
            actual_onset_s=record.actual_onset_s, actual_duration_s=record.actual_duration_s,
            trial_type=record.condition, stim_file=record.stimulus, stim_sha256=record.sha256,
            target_roi=record.target_roi, dropped_frames=record.dropped_frames,
        )
        for record in log.trials
    ]  # fmt: skip
    rows += attention_events(log.fixation_changes_s, plan.fixation.change_duration_s, log.responses)
    # What the presenter measured of the run as a whole: one object, as BIDS wants every sidecar key.
    run = {
        "Description": "The run as the presenter ran it: its plan's id, the display's measured refresh "
        "rate (Hz), frames dropped in the run, whether it was aborted, and each trigger's time (s)",
        "RunId": plan.run_id, "RefreshRate": log.refresh_hz, "DroppedFrames": log.dropped_frames,
        "Aborted": log.aborted, "TriggerTimes": log.triggers_s,
    }  # fmt: skip
    return write_events(path, rows, {"PresenterRun": run})
