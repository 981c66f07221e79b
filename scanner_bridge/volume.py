"""The :class:`Volume` value and the run-consistency check.

A volume is one 3D image of the brain, addressed by its 0-based index in the
run. Its data are the values the scanner means (NIfTI scaling and DICOM
rescale slope/intercept applied), in the voxel layout dcm2niix writes: the
first axis runs along the image columns, the second along the rows from the
bottom up, the third along the slices. ``affine`` maps voxel indices to RAS+
millimetres, as a NIfTI sform does.

On the wire (docs/protocol.md) a volume is a ``volume`` message: its content
says what it is (:meth:`Volume.to_wire`), its one buffer holds the voxels,
sent as they lie in memory; :meth:`Volume.from_wire` checks every field
against the buffer before it makes a volume of them.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from db.base import Message, ProtocolError, RejectReason
from db.base.wire import Frame
from scanner_bridge.errors import VolumeMismatchError

__all__ = ["STAGES", "WIRE_DTYPES", "RunGeometry", "Volume"]

MAX_INDEX = (
    10_000_000  # no run has more volumes (a week at a TR of 60 ms); a message claiming more is refused
)

# Stage timestamps a volume collects on its way, in this order (wall clock, seconds since the epoch).
STAGES = ("written", "seen", "read", "sent", "received")

# Affines are compared to this many millimetres: float32 headers round, real changes are larger.
AFFINE_ATOL_MM = 1e-4

# Numeric dtypes a volume may have on the wire (numpy ``dtype.str``: byte order, kind, item size).
WIRE_DTYPES = frozenset(
    np.dtype(t).newbyteorder(o).str
    for t in ("u1", "i1", "u2", "i2", "u4", "i4", "f4", "f8")
    for o in ("<", ">")
) | {"|u1", "|i1"}


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

    def to_wire(self) -> tuple[dict[str, Any], list[Frame]]:
        """The content and buffer of a volume message (no copy: Fortran-ordered data go as they are)."""
        data = self.data
        order = "F" if data.flags.f_contiguous and not data.flags.c_contiguous else "C"
        if not (data.flags.c_contiguous or data.flags.f_contiguous):
            data = np.ascontiguousarray(data)
        content = {
            "index": self.index,
            "series": self.series,
            "shape": list(self.shape),
            "dtype": data.dtype.str,
            "order": order,
            "affine": self.affine.tolist(),
            "tr_s": self.tr_s,
            "acquisition_time": self.acquisition_time,
            "source": self.source,
            "stamps": self.stamps,
        }
        return content, [data.reshape(-1, order="A").data.cast("B")]

    @classmethod
    def from_wire(cls, message: Message) -> Volume:
        """The volume in a verified volume message; :class:`ProtocolError` if its content is inconsistent."""
        c = message.content
        try:
            index, shape, dtype = c["index"], c["shape"], np.dtype(c["dtype"])
            affine = np.array(c["affine"], dtype=np.float64)
            order, stamps = c["order"], {str(k): float(v) for k, v in c["stamps"].items()}
            tr_s = None if c["tr_s"] is None else float(c["tr_s"])
            if tr_s is not None and not 0 < tr_s < 3600:
                raise ValueError(f"tr_s {tr_s}")
            series, source, acquisition_time = str(c["series"]), str(c["source"]), c["acquisition_time"]
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise _malformed(f"volume content is incomplete ({exc!r})") from exc
        if not (isinstance(index, int) and 0 <= index <= MAX_INDEX):
            raise _malformed(f"volume index {index!r:.40} is not an integer in 0..{MAX_INDEX}")
        if not (
            isinstance(shape, list) and len(shape) == 3 and all(isinstance(n, int) and n > 0 for n in shape)
        ):
            raise _malformed(f"volume {index} shape {shape!r} is not 3 positive sizes")
        if dtype.str not in WIRE_DTYPES or order not in ("C", "F"):
            raise _malformed(f"volume {index} dtype {dtype.str!r} / order {order!r}")
        if affine.shape != (4, 4) or not np.isfinite(affine).all():
            raise _malformed(f"volume {index} affine is not a finite 4x4 matrix")
        if len(message.buffers) != 1:
            raise ProtocolError(
                RejectReason.TRUNCATED, f"volume {index} has {len(message.buffers)} buffers; 1"
            )
        expected = int(np.prod(shape)) * dtype.itemsize
        got = message.buffers[0].nbytes
        if got != expected:
            reason = RejectReason.TRUNCATED if got < expected else RejectReason.MALFORMED
            raise ProtocolError(
                reason, f"volume {index} buffer has {got} bytes; shape and dtype need {expected}"
            )
        data = np.frombuffer(message.buffers[0], dtype=dtype).reshape(shape, order=order)
        return cls(
            index=index,
            data=data,
            affine=affine,
            series=series,
            tr_s=tr_s,
            source=source,
            acquisition_time=None if acquisition_time is None else str(acquisition_time),
            stamps=stamps,
        )


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
        # np.allclose(rtol=0) at a fifth of its cost (once per volume, on the latency path); NaN fails
        if not np.abs(volume.affine - self.affine).max() <= AFFINE_ATOL_MM:
            raise VolumeMismatchError(
                f"{where} has affine {_rows(volume.affine)}; {first} had {_rows(self.affine)}. "
                "Was the slice prescription changed mid-run? Start a new run."
            )


def _malformed(message: str) -> ProtocolError:
    return ProtocolError(RejectReason.MALFORMED, message)


def _rows(affine: npt.NDArray[np.float64]) -> str:
    return "[" + "; ".join(" ".join(f"{v:.4g}" for v in row) for row in affine[:3]) + "]"
