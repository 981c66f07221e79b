"""The series of a session: what the bridge announces of each, and how a receiver picks its run's.

One bridge serves a whole scanner session. Every series that begins in the
export folder (localizers, field maps, reference scans, the runs, a run
aborted and started again) is announced to every receiver as a
:class:`SeriesInfo`: its name, first file, geometry, TR and when the bridge
first saw it. A receiver takes the volumes of one series only, the one its
:class:`SeriesChoice` picks: a series named outright (a run resumed after a
restart, whose series the session recorded), or the first that began after
the run was armed and has the run's geometry, leaving out the session's
earlier runs.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from db.base import ProtocolError, RejectReason
from db.base.checked import from_wire
from scanner_bridge.volume import MAX_INDEX, Volume

__all__ = ["MAX_SERIES_ANNOUNCED", "SeriesChoice", "SeriesInfo", "series_matches"]

MAX_SERIES_ANNOUNCED = 64  # a status lists the last this many series (a session has a few dozen)
MAX_NAME = 1024  # characters of a series name a message may carry
TR_TOLERANCE_S = 1e-3  # headers round the TR (ms in DICOM, float32 in NIfTI)


def series_matches(wanted: str, series: str) -> bool:
    """Is ``series`` the one ``wanted`` names: the whole name, or one of its ``/`` parts (a number, a UID)?"""
    return series == wanted or wanted in series.split("/")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SeriesInfo:
    """One series as the bridge knows it.

    ``began`` is the bridge's wall-clock time when it read the series' first
    file; ``acquisition_time`` the scanner's own time of that volume, when
    the file says. ``highest_index`` grows as volumes come.
    """

    series: str
    first_file: str
    shape: tuple[int, int, int]
    dtype: str
    tr_s: float | None
    began: float
    acquisition_time: str | None = None
    highest_index: int | None = None

    def __post_init__(self) -> None:  # what a status may say of a series; ValueError if not
        if not 0 < len(self.series) <= MAX_NAME or len(self.first_file) > 4 * MAX_NAME:
            raise ValueError(f"series name or first file of {len(self.series)}/{len(self.first_file)} chars")
        if not all(0 < n <= 100_000 for n in self.shape) or len(self.dtype) > 8:
            raise ValueError(f"shape {self.shape} / dtype {self.dtype!r:.20}")
        if self.tr_s is not None and not 0 < self.tr_s < 3600:
            raise ValueError(f"TR {self.tr_s} s")
        if self.highest_index is not None and not 0 <= self.highest_index <= MAX_INDEX:
            raise ValueError(f"highest index {self.highest_index}")
        if self.acquisition_time is not None and len(self.acquisition_time) > 64:
            raise ValueError("acquisition time of more than 64 characters")

    @classmethod
    def of(cls, volume: Volume) -> SeriesInfo:
        """The series ``volume`` begins (its first volume the bridge read)."""
        return cls(
            series=volume.series,
            first_file=volume.source,
            shape=volume.shape,
            dtype=volume.dtype.str,
            tr_s=volume.tr_s,
            began=volume.stamps.get("seen", volume.stamps.get("read", 0.0)),
            acquisition_time=volume.acquisition_time,
            highest_index=volume.index,
        )

    def describe(self) -> str:
        """One line for an operator: ``5/1.2.3: 64x64x36 int16, TR 2 s, 130 volumes so far, first file X``."""
        tr = "TR unknown" if self.tr_s is None else f"TR {self.tr_s:g} s"
        count = "" if self.highest_index is None else f", up to volume {self.highest_index}"
        shape = "x".join(map(str, self.shape))
        return (
            f"{self.series}: {shape} {np.dtype(self.dtype).name}, {tr}{count}, first file {self.first_file}"
        )

    def to_wire(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "shape": list(self.shape)}

    @classmethod
    def from_wire(cls, content: object) -> SeriesInfo:
        """The entry of a status's ``catalog``; :class:`ProtocolError` (``malformed``) if it is not one."""
        return from_wire(cls, content, what="a series in the bridge's status")

    @classmethod
    def catalog_from_wire(cls, content: object) -> list[SeriesInfo]:
        """A status's ``catalog`` (absent: empty); :class:`ProtocolError` if it is not a list of series."""
        if content is None:
            return []
        if not isinstance(content, list) or len(content) > MAX_SERIES_ANNOUNCED:
            raise ProtocolError(RejectReason.MALFORMED, "the bridge's catalog of series is not a short list")
        return [cls.from_wire(entry) for entry in content]


@dataclasses.dataclass(frozen=True, kw_only=True)
class SeriesChoice:
    """Which of the bridge's series is the run's.

    Parameters
    ----------
    name : str, optional
        Exactly this series (its whole name, its number or its UID).
    shape : (int, int, int), optional
        Only series of volumes of this shape (the session's grid): a
        localizer or a field map is not a run.
    tr_s : float, optional
        Only series of this TR, where the series says.
    exclude : set of str
        Series that are not the run's: the session's earlier runs, and every
        series the bridge knew before the run was armed.
    newest : bool
        Of several that qualify, the one that began last (a run picked up
        after a restart); otherwise the first.
    """

    name: str | None = None
    shape: tuple[int, int, int] | None = None
    tr_s: float | None = None
    exclude: frozenset[str] = frozenset()
    newest: bool = False

    def but_not(self, series: Iterable[str]) -> SeriesChoice:
        """The same choice, leaving out ``series`` too."""
        return dataclasses.replace(self, exclude=self.exclude | frozenset(series))

    def fits(self, info: SeriesInfo) -> bool:
        if info.series in self.exclude:
            return False
        if self.name is not None and not series_matches(self.name, info.series):
            return False
        if self.shape is not None and tuple(info.shape) != tuple(self.shape):
            return False
        return not (
            self.tr_s is not None and info.tr_s is not None and abs(info.tr_s - self.tr_s) > TR_TOLERANCE_S
        )

    def pick(self, catalog: Sequence[SeriesInfo]) -> SeriesInfo | None:
        """The series of ``catalog`` (in the order they began) this choice takes, or None yet."""
        fitting = [info for info in catalog if self.fits(info)]
        if not fitting:
            return None
        return max(fitting, key=lambda s: s.began) if self.newest else min(fitting, key=lambda s: s.began)

    def describe(self) -> str:
        """What is looked for, for an error that says why nothing was taken."""
        if self.name:
            parts = [f"series {self.name}"]
        elif self.newest:
            parts = ["the newest series of no earlier run"]
        else:
            parts = ["a series that began after the run was armed"]
        if self.shape is not None:
            parts.append("of shape " + "x".join(map(str, self.shape)))
        if self.tr_s is not None:
            parts.append(f"TR {self.tr_s:g} s")
        return ", ".join(parts)
