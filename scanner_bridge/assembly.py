"""From parts read to whole, checked volumes, series by series: what every source of volumes does.

A source (the watched export folder, the DICOM node a scanner pushes to)
reads parts: a whole volume, or one slice of it. :class:`VolumeAssembly`
turns them into the volumes it passes on, under the same rules whatever
the source:

- each series is begun when its first part comes (announced as
  :attr:`EventCode.SERIES_STARTED`), or, when one series is to be followed,
  parts of the others are reported once per series and dropped;
- a volume's index is its number in the series less the first number
  (NIfTI names count from 0, DICOM acquisitions from 1);
- slices wait until their volume is whole, and are given up on (reported)
  when the rest does not come within ``incomplete_timeout_s``;
- a volume index that comes again is reported: the same data, other data,
  or the same file written again with other data; the first is kept;
- every volume must have the shape, type and affine of its series' first.
"""

from __future__ import annotations

import collections
import dataclasses
import time
import zlib
from typing import Protocol

from db.base import EventLevel
from scanner_bridge.config import WatchConfig
from scanner_bridge.errors import DuplicateSliceError, VolumeMismatchError, VolumeReadError
from scanner_bridge.readers import NIFTI_SUFFIXES, FilePart, SliceAssembler
from scanner_bridge.series import series_matches
from scanner_bridge.source import EventCode
from scanner_bridge.volume import RunGeometry, Volume

__all__ = ["Emit", "VolumeAssembly"]


class Emit(Protocol):
    """How an assembly reports (a source's ``_emit``: a :class:`BridgeEvent` to its sink)."""

    def __call__(
        self, level: EventLevel, code: EventCode, message: str, *, path: str = "", index: int | None = None
    ) -> None: ...


@dataclasses.dataclass
class _Series:
    """A series being passed on: its geometry and the volumes passed on so far."""

    geometry: RunGeometry | None = None
    published: dict[int, tuple[str, int]] = dataclasses.field(default_factory=dict)  # index -> (file, CRC-32)


class VolumeAssembly:
    """The series begun so far, the slices waiting for their volume, the volumes passed on.

    Parameters
    ----------
    config : WatchConfig
        The series to follow (None: every one), first numbers, the slice deadline.
    emit : callable
        Receives every report.
    where : str
        Where parts come from, for the messages (a folder, a DICOM node).
    """

    def __init__(self, config: WatchConfig, emit: Emit, *, where: str) -> None:
        self.config = config
        self.where = where
        self._emit = emit
        self._series: dict[str, _Series] = {}
        self._slices = SliceAssembler()
        self._slices_since: dict[tuple[str, int], float] = {}  # first slice of an unfinished volume
        self._other_series: collections.Counter[str] = collections.Counter()

    def has(self, series: str) -> bool:
        """Whether ``series`` (a whole name, or its number or UID) has begun."""
        return series in self._series or any(series_matches(series, s) for s in self._series)

    def begin(self, part: FilePart) -> bool:
        """Begin ``part``'s series if it is to be passed on (announced); False if it is not followed."""
        if part.series in self._series:
            return True
        follow = self.config.series
        if follow is not None and not series_matches(follow, part.series):
            self._other_series[part.series] += 1
            if self._other_series[part.series] == 1:
                self._emit(
                    EventLevel.WARNING,
                    EventCode.OTHER_SERIES,
                    f"ignoring {part.path}: it belongs to series {part.series}, this bridge follows "
                    f"{follow}. Other files of that series are ignored too; to serve every series "
                    "of the session, run the bridge without --series.",
                    path=part.path,
                )
            return False
        self._series[part.series] = _Series()
        self._emit(
            EventLevel.INFO,
            EventCode.SERIES_STARTED,
            f"series {part.series} began in {self.where} (first file read: {part.path})",
            path=part.path,
        )
        return True

    def add(self, part: FilePart, *, seen: float, written: float) -> Volume | None:
        """The volume ``part`` completes (its series begun), or None: a slice short of others, or refused."""
        state = self._series[part.series]
        nifti = part.path.lower().endswith(NIFTI_SUFFIXES)
        first = self.config.nifti_first_number if nifti else self.config.dicom_first_number
        index = part.number - first
        if part.is_slice:
            if index in state.published:
                self._emit(
                    EventLevel.WARNING,
                    EventCode.DUPLICATE,
                    f"{part.path} is a slice of volume {index}, which was complete already; ignored",
                    path=part.path,
                    index=index,
                )
                return None
            try:
                whole = self._slices.add(part)
            except DuplicateSliceError as exc:
                self._emit(EventLevel.WARNING, EventCode.DUPLICATE, str(exc), path=part.path)
                return None
            except VolumeReadError as exc:  # slices that are no volume (a localizer's): routine, a warning
                self._slices_since.pop((part.series, part.number), None)
                self._emit(EventLevel.WARNING, EventCode.UNREADABLE, str(exc), path=part.path, index=index)
                return None
            if whole is None:
                self._slices_since.setdefault((part.series, part.number), time.monotonic())
                return None
            self._slices_since.pop((part.series, part.number), None)
            part = whole
        if index < 0:
            self._emit(
                EventLevel.ERROR,
                EventCode.UNREADABLE,
                f"{part.path} is volume number {part.number}, before the first ({first}); "
                "check the first-number setting",
                path=part.path,
            )
            return None
        volume = part.as_volume(index, {"written": written, "seen": seen, "read": time.time()})
        # CRC-32 tells a rewrite from a copy at a tenth of a millisecond per megabyte, off the latency path
        # of SHA-256 (an export folder someone can write to is not defended against here).
        digest = zlib.crc32(volume.data.reshape(-1, order="A").data)  # no copy: in the file's voxel order
        if index in state.published:
            self._duplicate(volume, *state.published[index], digest)
            return None
        if state.geometry is None:
            state.geometry = RunGeometry.of(volume)
        try:
            state.geometry.check(volume)
        except VolumeMismatchError as exc:
            self._emit(
                EventLevel.ERROR, EventCode.MISMATCH, f"{exc}; not passed on", path=part.path, index=index
            )
            return None
        state.published[index] = (part.path, digest)
        return volume

    def _duplicate(self, volume: Volume, first_path: str, first_digest: int, digest: int) -> None:
        index, source = volume.index, volume.source
        if digest == first_digest:
            level, code = EventLevel.WARNING, EventCode.DUPLICATE
            message = f"volume {index} arrived again in {source} (same data as {first_path}); ignored"
        elif source == first_path:
            level, code = EventLevel.ERROR, EventCode.REWRITTEN
            message = (
                f"volume {index}: {first_path} was written again with other data after it was passed on; "
                "the first data were kept (is another run writing into this folder?)"
            )
        else:
            level, code = EventLevel.ERROR, EventCode.DUPLICATE
            message = (
                f"volume {index} arrived again in {source} with different data from {first_path}; "
                "kept the first"
            )
        self._emit(level, code, message, path=source, index=index)

    def give_up_on_slices(self, now: float) -> None:
        """Report, and forget, volumes whose slices stopped coming ``incomplete_timeout_s`` ago."""
        for series, number, held, needed in self._slices.waiting():
            since = self._slices_since.get((series, number), now)
            if now - since >= self.config.incomplete_timeout_s:
                paths = self._slices.discard(series, number)
                self._slices_since.pop((series, number), None)
                self._emit(
                    EventLevel.ERROR,
                    EventCode.UNREADABLE,
                    f"gave up on acquisition {number} of series {series}: {held} of its {needed} slices "
                    f"arrived in {self.config.incomplete_timeout_s:g} s (first: {min(paths)})",
                    path=min(paths),
                )
