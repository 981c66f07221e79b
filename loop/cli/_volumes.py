"""Per-voxel values of an encoding model written as NIfTI volumes on a session's grid."""

from __future__ import annotations

import gzip
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from db.base import ConfigError, write_atomic

__all__ = ["Grid", "read_grid", "write_volumes"]


class Grid:
    """A reference volume's shape and affine, checked against the voxel indices that will be placed on it."""

    def __init__(self, shape: tuple[int, ...], affine: npt.NDArray[np.float64]) -> None:
        self.shape, self.affine = shape, affine

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def describe(self) -> str:
        return "x".join(map(str, self.shape))


def read_grid(reference: Path, indices: npt.NDArray[np.int64], *, owner: str) -> Grid:
    """The grid of ``reference`` (a NIfTI volume); refused unless all of ``owner``'s voxel indices fit."""
    import nibabel as nib

    try:
        image: Any = nib.load(reference)
        grid = Grid(tuple(int(n) for n in image.shape[:3]), np.asarray(image.affine, dtype=np.float64))
    except (OSError, ValueError, nib.filebasedimages.ImageFileError) as exc:
        raise ConfigError(f"--reference {reference} cannot be read as a NIfTI volume ({exc})") from None
    if len(grid.shape) != 3 or indices.min(initial=0) < 0 or indices.max(initial=0) >= grid.size:
        raise ConfigError(
            f"{owner}'s voxel indices reach {indices.max(initial=0)}, outside the grid of --reference "
            f"{reference} ({grid.describe()}, {grid.size} voxels): give a volume of the session the model "
            "was fitted in"
        )
    return grid


def write_volumes(
    values: dict[str, tuple[npt.ArrayLike, type]], indices: npt.NDArray[np.int64], grid: Grid, out: Path
) -> dict[str, str]:
    """One ``NAME.nii.gz`` in ``out`` per entry (per-voxel values and their type); 0 where no voxel is."""
    from scanner_bridge.writers import nifti_bytes

    out.mkdir(parents=True, exist_ok=True)
    written = {}
    for name, (per_voxel, dtype) in values.items():
        volume: np.ndarray = np.zeros(grid.size, dtype=dtype)
        volume[indices] = np.asarray(per_voxel, dtype=dtype)
        path = out / f"{name}.nii.gz"
        write_atomic(
            path, gzip.compress(nifti_bytes(volume.reshape(grid.shape), grid.affine, tr_s=None), mtime=0)
        )
        written[name] = str(path)
    return written
