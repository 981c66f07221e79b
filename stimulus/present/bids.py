"""A run's events as BIDS ``*_events.tsv`` with its JSON sidecar, as the presenter measured them.

The columns are those of the session database's export (``db.export``), so
the two agree; rows are the trials, then the attention task's fixation
changes and the button responses, in time order. Onsets count from the
run's first trigger. A trial never shown (an aborted run) keeps its planned
onset with ``onset_measured`` false.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from db.base import EVENTS_SIDECAR, write_json, write_tsv
from stimulus.present.events import RunLog
from stimulus.present.plan import RunPlan

__all__ = ["write_bids_events"]

COLUMNS = (
    "onset", "duration", "trial_type", "planned_onset", "onset_measured", "onset_error_ms", "stim_file",
    "stim_sha256", "target_roi", "dropped_frames", "response_key",
)  # fmt: skip

SIDECAR: dict[str, Any] = {
    **{k: v for k, v in EVENTS_SIDECAR.items() if k in COLUMNS},
    "trial_type": {
        "Description": "Trial condition (e.g. target, nontarget, best-natural); fixation_change for the "
        "attention task's colour changes; response for a button press"
    },
    "onset_error_ms": {"Description": "Measured minus planned onset", "Units": "ms"},
    "response_key": {"Description": "The button pressed (response rows)"},
}


def write_bids_events(log: RunLog, plan: RunPlan, path: Path) -> tuple[Path, Path]:
    """Write ``path`` (an ``*_events.tsv``) and its ``.json`` sidecar, each atomically."""
    rows: list[tuple[float, list[object]]] = []
    for record in log.trials:
        measured = record.actual_onset_s is not None
        onset = record.actual_onset_s if record.actual_onset_s is not None else record.planned_onset_s
        duration = (
            record.actual_duration_s if record.actual_duration_s is not None else record.planned_duration_s
        )
        rows.append((onset, [
            onset, duration, record.condition, record.planned_onset_s, measured, record.onset_error_ms,
            record.stimulus, record.sha256, record.target_roi, record.dropped_frames, None,
        ]))  # fmt: skip
    for change in log.fixation_changes_s:
        rows.append((change, [change, plan.fixation.change_duration_s, "fixation_change", change, False, None,
                              None, None, None, None, None]))  # fmt: skip
    for key, t in log.responses:
        rows.append((t, [t, 0.0, "response", None, True, None, None, None, None, None, key]))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tsv(path, COLUMNS, [row for _, row in sorted(rows, key=lambda item: item[0])])
    sidecar = path.with_suffix(".json")
    write_json(sidecar, {**SIDECAR, "RunId": plan.run_id, "RefreshRate": log.refresh_hz,
                         "DroppedFrames": log.dropped_frames, "Aborted": log.aborted,
                         "TriggerTimes": log.triggers_s})  # fmt: skip
    return path, sidecar
