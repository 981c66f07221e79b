"""Reading the inputs of the model commands: stimulus tables and response files.

A stimulus table is a TSV with a header and an ``image`` column (paths
relative to the table), optionally ``group`` (run or session) and
``stimulus`` (an id; rows sharing it are repeats). Responses are a ``.npy``
array (rows x voxels) or a ``.npz`` with ``responses`` and optionally
``roi_labels`` and ``voxel_indices``. Image sets (a folder or a TSV of images,
:mod:`stimulus.image_sets`) are read for a model after its file is checked.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from stimulus.image_sets import ImageSet

__all__ = ["Responses", "Stimuli", "read_images_for_model", "read_responses", "read_stimulus_table"]


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


def read_stimulus_table(path: Path) -> Stimuli:
    from stimulus import EncodingInputError

    try:
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
    except FileNotFoundError:
        raise EncodingInputError(f"stimulus table {path} does not exist") from None
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
