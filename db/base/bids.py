"""BIDS conventions shared by the presenter's events files and the database's export.

Labels (``sub-01`` -> ``01``: letters and digits only), tab-separated tables
with ``n/a`` for missing values, JSON sidecars, the task of each kind of run,
and one writer of a run's events (:func:`write_events`, its rows
:class:`BidsEvent`): the events file the presenter writes during a run and the
one the export writes from the database have the same name, columns and rows.
Rows are the trials, the attention task's fixation colour changes and the
button responses, in time order.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, fields
from pathlib import Path
from typing import Any

from db.base.files import write_atomic

__all__ = [
    "EVENTS_SIDECAR",
    "EVENT_COLUMNS",
    "TASKS",
    "TASK_DESCRIPTIONS",
    "BidsEvent",
    "attention_events",
    "bids_label",
    "trial_event",
    "write_events",
    "write_json",
    "write_tsv",
]

_LABEL = re.compile(r"^[A-Za-z0-9]+$")

# The task of each kind of run (RunKind's values), as BIDS file names carry it.
TASKS = {"training": "training", "closed_loop": "closedloop", "localizer": "localizer"}
TASK_DESCRIPTIONS = {
    "training": "natural images for the encoding model",
    "closedloop": "closed-loop round: images synthesized to drive target ROIs, with natural controls",
    "localizer": "localizer",
}


@dataclass(frozen=True, kw_only=True)
class BidsEvent:
    """One row of a run's events file; its fields are the columns, in order."""

    onset: float
    duration: float
    trial_type: str | None
    planned_onset: float | None = None
    onset_measured: bool = False
    onset_error_ms: float | None = None
    stim_file: str | None = None
    stim_sha256: str | None = None
    stim_kind: str | None = None
    target_roi: str | None = None
    dropped_frames: int | None = None
    response_key: str | None = None


EVENT_COLUMNS = tuple(f.name for f in fields(BidsEvent))

EVENTS_SIDECAR: dict[str, Any] = {
    "onset": {
        "Description": "Stimulus onset from the run's first trigger: the flip time the presenter "
        "recorded when it is known (onset_measured = true), else the planned onset",
        "Units": "s",
    },
    "duration": {"Description": "Time the stimulus was on screen (planned when not measured)", "Units": "s"},
    "trial_type": {
        "Description": "Trial condition (e.g. target, nontarget, best-natural); fixation_change for the "
        "attention task's colour changes; response for a button press"
    },
    "planned_onset": {"Description": "Onset in the run plan", "Units": "s"},
    "onset_measured": {"Description": "Whether onset is a measured flip time (or a measured key press)"},
    "onset_error_ms": {"Description": "Measured minus planned onset", "Units": "ms"},
    "stim_file": {"Description": "Stimulus image file"},
    "stim_sha256": {"Description": "SHA-256 of the stimulus file's content"},
    "stim_kind": {"Description": "natural, synthesized or control"},
    "target_roi": {"Description": "ROI the stimulus was made or chosen to drive"},
    "dropped_frames": {"Description": "Frames dropped while the stimulus was shown"},
    "response_key": {"Description": "The button pressed (response rows)"},
}


def trial_event(
    *,
    planned_onset_s: float,
    planned_duration_s: float,
    actual_onset_s: float | None,
    actual_duration_s: float | None,
    **columns: Any,
) -> BidsEvent:
    """A trial's row: its measured onset and duration where the presenter measured them, else the plan's."""
    measured = actual_onset_s is not None
    return BidsEvent(
        onset=actual_onset_s if actual_onset_s is not None else planned_onset_s,
        duration=actual_duration_s if actual_duration_s is not None else planned_duration_s,
        planned_onset=planned_onset_s,
        onset_measured=measured,
        onset_error_ms=(actual_onset_s - planned_onset_s) * 1000 if actual_onset_s is not None else None,
        **columns,
    )


def attention_events(
    fixation_changes_s: Sequence[float], change_duration_s: float, responses: Sequence[tuple[str, float]]
) -> list[BidsEvent]:
    """The attention task's rows: each fixation colour change, and each button press with its key."""
    rows = [
        BidsEvent(onset=t, duration=change_duration_s, trial_type="fixation_change", planned_onset=t)
        for t in fixation_changes_s
    ]
    rows += [
        BidsEvent(onset=t, duration=0.0, trial_type="response", onset_measured=True, response_key=key)
        for key, t in responses
    ]
    return rows


def write_events(path: Path, rows: Iterable[BidsEvent], sidecar: dict[str, Any]) -> tuple[Path, Path]:
    """``path`` (an ``*_events.tsv``: ``rows`` in time order) and its ``.json`` sidecar, each atomically.

    ``sidecar`` adds the run's own facts (its task, its refresh rate...) to the columns' descriptions.
    """
    ordered = sorted(rows, key=lambda row: row.onset)  # stable: a trial before a change at its onset
    path.parent.mkdir(parents=True, exist_ok=True)
    write_tsv(path, EVENT_COLUMNS, (astuple(row) for row in ordered))
    json_path = path.with_suffix(".json")
    write_json(json_path, {**EVENTS_SIDECAR, **sidecar})
    return path, json_path


def bids_label(value: str, prefix: str) -> str:
    """Normalise a BIDS label: strip ``prefix-`` if given, require letters and digits.

    >>> bids_label("sub-01", "sub")
    '01'
    """
    label = value.removeprefix(f"{prefix}-")
    if not _LABEL.match(label):
        raise ValueError(
            f"{prefix} label {value!r} is not a BIDS label: use letters and digits only, "
            f"for example {prefix}-01"
        )
    return label


def _na(value: object) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return str(value)


def write_tsv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A table with ``n/a`` for missing values, written atomically."""
    text = io.StringIO()
    writer = csv.writer(text, delimiter="\t", lineterminator="\n")
    writer.writerow(header)
    writer.writerows([_na(v) for v in row] for row in rows)
    write_atomic(path, text.getvalue().encode("utf-8"))


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Indented JSON, written atomically."""
    write_atomic(path, (json.dumps(data, indent=2, default=str) + "\n").encode("utf-8"))
