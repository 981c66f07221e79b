"""The :class:`Volume` value and the run-consistency check.

A volume is one 3D image of the brain, addressed by its 0-based index in the
run. Its data are the values the scanner means (NIfTI scaling and DICOM
rescale slope/intercept applied), in the voxel layout dcm2niix writes: the
first axis runs along the image columns, the second along the rows from the
bottom up, the third along the slices. ``affine`` maps voxel indices to RAS+
millimetres, as a NIfTI sform does.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from scanner_bridge.errors import VolumeMismatchError

__all__ = ["STAGES", "RunGeometry", "Volume"]

# Stage timestamps a volume collects on its way, in this order (wall clock, seconds since the epoch).
STAGES = ("written", "seen", "read", "sent", "received")

# Affines are compared to this many millimetres: float32 headers round, real changes are larger.
AFFINE_ATOL_MM = 1e-4


@dataclasses.dataclass(frozen=True, eq=False, kw_only=True)
class Volume:
    """One volume of a run.

    Parameters
    ----------
    index : int
        0-based position in the run.
    data : ndarray of shape (nx, ny, nz)
        Voxel values; read-only.
    affine : ndarray of shape (4, 4)
        Voxel indices to RAS+ millimetres.
    series : str
        The scanner series the volume belongs to (DICOM SeriesInstanceUID, or
        the file-name pattern of a NIfTI series).
    tr_s : float or None
        Repetition time in seconds, when the file says.
    source : str
        The file (or first slice file) the volume was read from; empty if none.
    acquisition_time : str or None
        The scanner's acquisition date and time as written in the file
        (ISO 8601, the scanner's local time), when the file says.
    stamps : dict of str to float
        Wall-clock time of each stage in :data:`STAGES` the volume has passed.
    """

    index: int
    data: npt.NDArray[Any]
    affine: npt.NDArray[np.float64]
    series: str
    tr_s: float | None = None
    source: str = ""
    acquisition_time: str | None = None
    stamps: dict[str, float] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.index < 0:
            raise ValueError(f"volume index must be >= 0, got {self.index} ({self.source or 'no file'})")
        if self.data.ndim != 3:
            raise ValueError(
                f"volume {self.index} has {self.data.ndim} dimensions {self.data.shape}; a volume is 3D"
            )
        if self.affine.shape != (4, 4):
            raise ValueError(f"volume {self.index} affine has shape {self.affine.shape}; expected (4, 4)")
        if self.data.flags.writeable:
            self.data.flags.writeable = False

    @property
    def shape(self) -> tuple[int, int, int]:
        x, y, z = self.data.shape
        return (x, y, z)

    @property
    def dtype(self) -> np.dtype[Any]:
        return self.data.dtype

    def stamped(self, stage: str, when: float | None = None) -> Volume:
        """A copy with ``stage`` stamped at ``when`` (default: now)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; stages are {', '.join(STAGES)}")
        stamps = {**self.stamps, stage: time.time() if when is None else when}
        return dataclasses.replace(self, stamps=stamps)

    def latency_ms(self, start: str = "seen", end: str = "received") -> float | None:
        """Milliseconds between two stages, or None when either was not stamped."""
        if start in self.stamps and end in self.stamps:
            return (self.stamps[end] - self.stamps[start]) * 1000.0
        return None


@dataclasses.dataclass(frozen=True)
class RunGeometry:
    """What every volume of a run shares: shape, affine and dtype."""

    shape: tuple[int, ...]
    affine: npt.NDArray[np.float64]
    dtype: np.dtype[Any]
    first_index: int

    @classmethod
    def of(cls, volume: Volume) -> RunGeometry:
        return cls(volume.shape, volume.affine.copy(), volume.dtype, volume.index)

    def check(self, volume: Volume) -> None:
        """Raise :class:`VolumeMismatchError` naming both values if ``volume`` differs."""
        where = f"volume {volume.index} ({volume.source or 'no file'})"
        first = f"the run's first volume ({self.first_index})"
        if volume.shape != self.shape:
            raise VolumeMismatchError(f"{where} has shape {volume.shape}; {first} had {self.shape}")
        if volume.dtype != self.dtype:
            raise VolumeMismatchError(f"{where} has dtype {volume.dtype}; {first} had {self.dtype}")
        if not np.allclose(volume.affine, self.affine, rtol=0, atol=AFFINE_ATOL_MM):
            raise VolumeMismatchError(
                f"{where} has affine {_rows(volume.affine)}; {first} had {_rows(self.affine)}. "
                "Was the slice prescription changed mid-run? Start a new run."
            )


def _rows(affine: npt.NDArray[np.float64]) -> str:
    return "[" + "; ".join(" ".join(f"{v:.4g}" for v in row) for row in affine[:3]) + "]"
