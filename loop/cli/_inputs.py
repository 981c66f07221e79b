"""Reading the inputs of the model commands: stimulus tables and response files.

A stimulus table is a TSV with a header and an ``image`` column (paths
relative to the table), optionally ``group`` (run or session) and
``stimulus`` (an id; rows sharing it are repeats). Responses are a ``.npy``
array (rows x voxels) or a ``.npz`` with ``responses`` and optionally
``roi_labels`` and ``voxel_indices``. Image sets (a folder or a TSV of images,
:mod:`stimulus.image_sets`) are read for a model after its file is checked.

A run table (time-series models: block and movie runs) is a TSV with one row
per run: ``run`` (a label), ``events`` (a TSV of what was on screen:
``onset`` in seconds from the run's first trigger, ``image`` or BIDS'
``stim_file``, and optionally ``duration``) and ``responses`` (one row per
TR, as above), optionally ``stimulus`` (what the run showed: runs that share
it are repeats) and ``split`` (``train`` or ``test``). Paths are relative to
the file that names them.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from stimulus import TimeSeriesRun
    from stimulus.image_sets import ImageSet

__all__ = [
    "Responses",
    "RunRow",
    "Stimuli",
    "read_images_for_model",
    "read_responses",
    "read_run_table",
    "read_stimulus_table",
]

SPLITS = ("train", "test")


@dataclass(frozen=True)
class Stimuli:
    paths: list[Path]
    groups: list[str] | None
    ids: list[str]


@dataclass(frozen=True)
class Responses:
    values: npt.NDArray[np.float64]
    roi_labels: list[str] | None
    voxel_indices: npt.NDArray[np.int64] | None


@dataclass(frozen=True)
class RunRow:
    """One block or movie run of a run table."""

    label: str
    stimulus: str
    split: str | None
    frames: list[Path]
    onsets_s: npt.NDArray[np.float64]
    responses: Responses

    def timeseries(self) -> TimeSeriesRun:
        from stimulus import TimeSeriesRun

        return TimeSeriesRun(self.frames, self.onsets_s, self.responses.values)


def _read_tsv(path: Path, what: str) -> list[dict[str, str]]:
    from stimulus import EncodingInputError

    try:
        with path.open(newline="") as handle:
            return list(csv.DictReader(handle, delimiter="\t"))
    except FileNotFoundError:
        raise EncodingInputError(f"{what} {path} does not exist") from None
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise EncodingInputError(f"{what} {path} is not a readable TSV ({exc})") from None


def read_run_table(path: Path, *, tr_s: float) -> list[RunRow]:
    """Every run of a run table, each events file and response file read and checked.

    An event with a ``duration`` stays on screen for it: it counts in every TR it
    overlaps, as a frame shown at the start of each.
    """
    from stimulus import EncodingInputError

    if not tr_s > 0:
        raise EncodingInputError(f"the TR must be positive, not {tr_s}")
    rows = _read_tsv(path, "run table")
    needed = ("run", "events", "responses")
    if not rows or any(column not in rows[0] for column in needed):
        raise EncodingInputError(
            f"run table {path} needs a header line with the columns {', '.join(needed)} (tab-separated) "
            "and one row per run"
        )
    labels = [row["run"] for row in rows]
    if len(set(labels)) != len(labels):
        twice = sorted({label for label in labels if labels.count(label) > 1})
        raise EncodingInputError(
            f"run table {path} names run(s) {', '.join(twice)} twice; give each run once"
        )
    runs = []
    for row in rows:
        split = row.get("split") or None
        if split is not None and split not in SPLITS:
            raise EncodingInputError(
                f"run {row['run']} of {path} has split {split!r}; use {' or '.join(SPLITS)}"
            )
        frames, onsets = _read_events(path.parent / row["events"], tr_s, f"run {row['run']}")
        responses = read_responses(path.parent / row["responses"])
        runs.append(
            RunRow(
                label=row["run"],
                stimulus=row.get("stimulus") or row["run"],
                split=split,
                frames=frames,
                onsets_s=onsets,
                responses=responses,
            )
        )
    widths = {run.responses.values.shape[1] for run in runs}
    if len(widths) != 1:
        raise EncodingInputError(
            f"the runs of {path} have responses of {sorted(widths)} voxels; every run needs the same voxels"
        )
    return runs


def _read_events(path: Path, tr_s: float, run: str) -> tuple[list[Path], npt.NDArray[np.float64]]:
    from stimulus import EncodingInputError

    rows = _read_tsv(path, f"events file of {run}")
    column = next((c for c in ("image", "stim_file") if rows and c in rows[0]), None)
    if not rows or "onset" not in rows[0] or column is None:
        raise EncodingInputError(
            f"events file {path} ({run}) needs a header line with 'onset' and 'image' (or 'stim_file') "
            "columns, tab-separated, and one row per frame or image shown"
        )
    frames: list[Path] = []
    onsets: list[float] = []
    for number, row in enumerate(rows, start=2):
        try:
            onset = float(row["onset"])
            duration = float(row["duration"]) if row.get("duration") not in (None, "", "n/a") else 0.0
        except ValueError:
            raise EncodingInputError(
                f"line {number} of {path}: onset {row['onset']!r} and duration must be numbers of seconds"
            ) from None
        image = path.parent / row[column]
        if not image.is_file():
            raise EncodingInputError(
                f"line {number} of {path}: image {image} does not exist; "
                "paths are relative to the events file"
            )
        # Shown at its onset, and again at the start of every later TR it is still on screen for.
        starts = [onset, *np.arange(np.floor(onset / tr_s) + 1, np.ceil((onset + duration) / tr_s)) * tr_s]
        frames.extend([image] * len(starts))
        onsets.extend(float(t) for t in starts)
    return frames, np.asarray(onsets)


def read_stimulus_table(path: Path) -> Stimuli:
    from stimulus import EncodingInputError

    rows = _read_tsv(path, "stimulus table")
    if not rows or "image" not in rows[0]:
        raise EncodingInputError(
            f"stimulus table {path} needs a header line with an 'image' column (tab-separated) and one row "
            "per presentation"
        )
    base = path.parent
    paths = [base / row["image"] for row in rows]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise EncodingInputError(
            f"{len(missing)} image(s) listed in {path} do not exist (first: {missing[0]}); "
            "paths are relative to the table"
        )
    groups = [row["group"] for row in rows] if "group" in rows[0] else None
    ids = [row.get("stimulus") or row["image"] for row in rows]
    return Stimuli(paths=paths, groups=groups, ids=ids)


def read_responses(path: Path, n_rows: int | None = None) -> Responses:
    from stimulus import EncodingInputError

    try:
        loaded: Any = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise EncodingInputError(f"response file {path} does not exist") from None
    except (ValueError, OSError) as exc:
        raise EncodingInputError(f"response file {path} is not a readable .npy or .npz ({exc})") from None
    roi_labels, voxel_indices = None, None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        with loaded:
            if "responses" not in loaded.files:
                raise EncodingInputError(
                    f"{path} has no 'responses' array (it has {', '.join(loaded.files)})"
                )
            values = loaded["responses"]
            if "roi_labels" in loaded.files:
                roi_labels = [str(x) for x in loaded["roi_labels"]]
            if "voxel_indices" in loaded.files:
                voxel_indices = np.asarray(loaded["voxel_indices"], dtype=np.int64)
    else:
        values = loaded
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise EncodingInputError(f"responses in {path} have shape {values.shape}; expected (rows, voxels)")
    if n_rows is not None and values.shape[0] != n_rows:
        raise EncodingInputError(
            f"responses in {path} have {values.shape[0]} rows but the stimulus table has {n_rows}; "
            "give one row of responses per table row, in the same order"
        )
    return Responses(values=values, roi_labels=roi_labels, voxel_indices=voxel_indices)


def read_images_for_model(model_path: Path, images: Path) -> ImageSet:
    """The image set ``images`` (a folder or TSV), every file checked, once ``model_path`` is known good.

    A wrong or damaged model file is named before a folder of thousands of images is read.
    """
    from stimulus.encoding import read_model_file
    from stimulus.image_sets import read_image_set

    read_model_file(model_path)
    return read_image_set(images, split=None)
