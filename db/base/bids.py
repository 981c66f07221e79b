"""BIDS conventions shared by the presenter's events files and the database's export.

Labels (``sub-01`` -> ``01``: letters and digits only), tab-separated tables
with ``n/a`` for missing values, JSON sidecars, and the description of the
events columns, so that the events file the presenter writes during a run
and the one the export writes from the database say the same things.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from db.base.files import write_atomic

__all__ = ["EVENTS_SIDECAR", "bids_label", "write_json", "write_tsv"]

_LABEL = re.compile(r"^[A-Za-z0-9]+$")

EVENTS_SIDECAR: dict[str, Any] = {
    "onset": {
        "Description": "Stimulus onset from the run's first trigger: the flip time the presenter "
        "recorded when it is known (onset_measured = true), else the planned onset",
        "Units": "s",
    },
    "duration": {"Description": "Time the stimulus was on screen (planned when not measured)", "Units": "s"},
    "trial_type": {"Description": "Trial condition (e.g. target, nontarget, best-natural)"},
    "planned_onset": {"Description": "Onset in the run plan", "Units": "s"},
    "onset_measured": {"Description": "Whether onset is a measured flip time"},
    "stim_file": {"Description": "Stimulus image file"},
    "stim_sha256": {"Description": "SHA-256 of the stimulus file's content"},
    "stim_kind": {"Description": "natural, synthesized or control"},
    "target_roi": {"Description": "ROI the stimulus was made or chosen to drive"},
    "dropped_frames": {"Description": "Frames dropped while the stimulus was shown"},
}


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
