"""Replaying a recorded run: into an export directory at its TR, or straight to a consumer.

:class:`RecordedRun` loads a run from a 4D NIfTI, a folder of 3D NIfTI files
or a folder of DICOM files. :func:`replay_to_directory` writes it as a
scanner's real-time export would, one volume per TR times a speed factor, and
can rehearse the faults of real exports (:class:`ReplayFaults`).
:class:`ReplaySource` is a :class:`VolumeSource` that hands the volumes over
directly, for rehearsals that do not need files.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt
from pydicom.uid import generate_uid

from db.base import Clock, WallClock, write_atomic
from scanner_bridge.errors import BridgeError, VolumeReadError
from scanner_bridge.readers import (
    NIFTI_SUFFIXES,
    SliceAssembler,
    is_volume_file,
    nifti_series_and_number,
    read_part,
)
from scanner_bridge.volume import Volume
from scanner_bridge.writers import dicom_slice_files, nifti_bytes

__all__ = ["RecordedRun", "ReplayFaults", "ReplayReport", "ReplaySource", "replay_to_directory"]

logger = logging.getLogger(__name__)

FORMATS = ("nifti", "dicom")


@dataclasses.dataclass(frozen=True)
class RecordedRun:
    """A run's volumes, in index order, as raw values plus the scaling that gives the real ones.

    Parameters
    ----------
    raw : ndarray of shape (nx, ny, nz, n_volumes)
    affine : ndarray of shape (4, 4)
    tr_s : float or None
    slope, inter : float or None
        NIfTI scaling of ``raw`` (None: ``raw`` are the values).
    """

    raw: npt.NDArray[Any]
    affine: npt.NDArray[np.float64]
    tr_s: float | None
    slope: float | None = None
    inter: float | None = None
    source: str = ""

    @property
    def n_volumes(self) -> int:
        return int(self.raw.shape[3])

    def values(self, index: int) -> npt.NDArray[Any]:
        """Volume ``index`` as the scanner means it (scaling applied)."""
        raw = self.raw[..., index]
        if self.slope is None:
            return raw
        return raw * self.slope + (self.inter or 0.0)

    @classmethod
    def load(cls, path: Path | str, *, series: str | None = None) -> RecordedRun:
        """From a 4D NIfTI file, a folder of 3D NIfTI files, or a folder of DICOM files.

        A folder of NIfTI files from several runs (``run01_vol_00000.nii``,
        ``run02_vol_00000.nii``...) needs ``series``: the file-name pattern of
        the run, e.g. ``run02_vol_#####.nii``, as the error lists them.
        """
        path = Path(path)
        if path.is_file():
            return cls._from_4d(path)
        if not path.is_dir():
            raise BridgeError(f"recorded run {path} does not exist")
        files = sorted(p for p in path.iterdir() if p.is_file() and is_volume_file(p.name))
        if not files:
            raise BridgeError(f"{path} holds no NIfTI or DICOM files to replay")
        if all(p.name.lower().endswith(NIFTI_SUFFIXES) for p in files):
            by_series: dict[str, list[Path]] = {}
            for p in files:
                by_series.setdefault(nifti_series_and_number(p.name)[0], []).append(p)
            if series is None and len(by_series) > 1:
                raise BridgeError(
                    f"{path} holds {len(by_series)} runs ({', '.join(sorted(by_series))}); "
                    "choose one with --series"
                )
            chosen = series or next(iter(by_series))
            if chosen not in by_series:
                raise BridgeError(
                    f"{path} holds no series {chosen!r}; it holds {', '.join(sorted(by_series))}"
                )
            return cls._from_nifti_files(path, by_series[chosen])
        return cls._from_dicom_files(path, files)

    @classmethod
    def _from_4d(cls, path: Path) -> RecordedRun:
        try:
            image = nib.load(path)
        except Exception as exc:  # nibabel raises many types for a bad file
            raise BridgeError(f"cannot read {path} as NIfTI: {exc}") from exc
        if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image) or len(image.shape) != 4:
            raise BridgeError(f"{path} is not a 4D NIfTI image (shape {getattr(image, 'shape', '?')})")
        proxy: Any = image.dataobj
        raw = np.asarray(proxy.get_unscaled())
        slope, inter = float(proxy.slope), float(proxy.inter)
        scaled = not (slope == 1.0 and inter == 0.0)
        zooms = image.header.get_zooms()
        tr = float(zooms[3]) if len(zooms) > 3 and zooms[3] > 0 else None
        return cls(
            raw=raw,
            affine=np.asarray(image.affine, dtype=np.float64),
            tr_s=tr,
            slope=slope if scaled else None,
            inter=inter if scaled else None,
            source=str(path),
        )

    @classmethod
    def _from_nifti_files(cls, folder: Path, files: list[Path]) -> RecordedRun:
        files = sorted(files, key=lambda p: nifti_series_and_number(p.name)[1])
        parts = [read_part(p) for p in files]
        return cls(
            raw=np.stack([p.data for p in parts], axis=3),
            affine=parts[0].affine,
            tr_s=parts[0].tr_s,
            source=str(folder),
        )

    @classmethod
    def _from_dicom_files(cls, folder: Path, files: list[Path]) -> RecordedRun:
        assembler = SliceAssembler()
        volumes: dict[int, Any] = {}
        for p in files:
            try:
                part = read_part(p)
            except VolumeReadError as exc:
                raise BridgeError(f"cannot replay {folder}: {exc}") from exc
            whole = assembler.add(part) if part.is_slice else part
            if whole is not None:
                volumes[whole.number] = whole
        if not volumes:
            raise BridgeError(f"{folder} holds no complete DICOM volume")
        ordered = [volumes[n] for n in sorted(volumes)]
        return cls(
            raw=np.stack([v.data for v in ordered], axis=3),
            affine=ordered[0].affine,
            tr_s=ordered[0].tr_s,
            source=str(folder),
        )


@dataclasses.dataclass(frozen=True, kw_only=True)
class ReplayFaults:
    """The faults of real exports, to rehearse them.

    Parameters
    ----------
    drop : indices never written.
    duplicate : indices written a second time (in place, a TR later: a re-export).
    corrupt : indices written as a file cut in half that is never completed.
    shuffle_window : volumes are written in random order within consecutive blocks of this many.
    chunks : each file is written in this many pieces, reopened and appended each time,
        ``chunk_delay_s`` apart (a slow exporter; readers see partial files).
    """

    drop: frozenset[int] = frozenset()
    duplicate: frozenset[int] = frozenset()
    corrupt: frozenset[int] = frozenset()
    shuffle_window: int = 0
    chunks: int = 1
    chunk_delay_s: float = 0.0

    def __post_init__(self) -> None:
        if self.chunks < 1 or self.chunk_delay_s < 0 or self.shuffle_window < 0:
            raise ValueError("chunks must be >= 1, chunk_delay_s and shuffle_window >= 0")

    def order(self, n: int, rng: np.random.Generator) -> list[int]:
        order = list(range(n))
        if self.shuffle_window > 1:
            for start in range(0, n, self.shuffle_window):
                block = order[start : start + self.shuffle_window]
                rng.shuffle(block)
                order[start : start + self.shuffle_window] = block
        return order


@dataclasses.dataclass
class ReplayReport:
    """What a replay wrote: index -> file names, in the order written."""

    written: dict[int, list[str]] = dataclasses.field(default_factory=dict)
    dropped: list[int] = dataclasses.field(default_factory=list)
    corrupted: list[int] = dataclasses.field(default_factory=list)
    duplicated: list[int] = dataclasses.field(default_factory=list)


def _volume_files(
    run: RecordedRun, index: int, fmt: str, tr_s: float, series_uid: str
) -> list[tuple[str, bytes]]:
    if fmt == "nifti":
        data = nifti_bytes(run.raw[..., index], run.affine, tr_s=tr_s, slope=run.slope, inter=run.inter)
        return [(f"vol_{index:05d}.nii", data)]
    return dicom_slice_files(
        run.raw[..., index],
        run.affine,
        acquisition=index + 1,
        tr_s=tr_s,
        series_uid=series_uid,
        slope=run.slope,
        inter=run.inter,
    )


def _write(path: Path, data: bytes, *, chunks: int, chunk_delay_s: float, atomic: bool, clock: Clock) -> None:
    if atomic:
        write_atomic(path, data, sync=False)  # as a scanner's exporter does: whole, not durable
        return
    step = -(-len(data) // chunks)
    for i in range(chunks):
        with open(path, "wb" if i == 0 else "ab") as f:
            f.write(data[i * step : (i + 1) * step])
        if i < chunks - 1 and chunk_delay_s:
            clock.sleep_until(clock.now() + chunk_delay_s)


def replay_to_directory(
    run: RecordedRun,
    export_dir: Path | str,
    *,
    tr_s: float,
    clock: Clock | None = None,
    fmt: str = "nifti",
    faults: ReplayFaults | None = None,
    atomic: bool = False,
    count: int | None = None,
    seed: int = 0,
    stop: threading.Event | None = None,
) -> ReplayReport:
    """Write ``run`` into ``export_dir``, volume ``i`` at ``i * tr_s`` on ``clock``.

    Parameters
    ----------
    tr_s : float
        Seconds between volumes, in ``clock`` seconds (a :class:`ScaledClock` replays faster).
    fmt : {"nifti", "dicom"}
        One NIfTI file per volume (``vol_00000.nii``...), or single-slice DICOM files.
    atomic : bool
        Write each file under a hidden name and rename it into place.
    count : int, optional
        Replay only the first ``count`` volumes.
    stop : threading.Event, optional
        Set it to end the replay early.
    """
    if fmt not in FORMATS:
        raise BridgeError(f"replay format {fmt!r}; use one of {', '.join(FORMATS)}")
    if not tr_s > 0:
        raise BridgeError(f"replay TR must be positive, got {tr_s}")
    export_dir = Path(export_dir)
    export_dir.mkdir(parents=True, exist_ok=True)
    clock = clock or WallClock()
    faults = faults or ReplayFaults()
    n = run.n_volumes if count is None else min(count, run.n_volumes)
    rng = np.random.default_rng(seed)
    series_uid = generate_uid()
    report = ReplayReport()
    rewrite: list[int] = []  # duplicates, written again one TR later
    start = clock.now()
    for slot, index in enumerate(faults.order(n, rng)):
        if stop is not None and stop.is_set():
            break
        clock.sleep_until(start + slot * tr_s)
        for again in rewrite:
            _write_volume(run, again, export_dir, fmt, tr_s, series_uid, faults, atomic, clock, report)
        rewrite = []
        if index in faults.drop:
            report.dropped.append(index)
            logger.info("replay: dropped volume %d", index)
            continue
        if index in faults.corrupt:
            name, data = _volume_files(run, index, fmt, tr_s, series_uid)[0]
            (export_dir / name).write_bytes(data[: len(data) // 2])
            report.corrupted.append(index)
            report.written.setdefault(index, []).append(name)
            logger.info("replay: wrote volume %d cut in half (%s)", index, name)
            continue
        _write_volume(run, index, export_dir, fmt, tr_s, series_uid, faults, atomic, clock, report)
        if index in faults.duplicate:
            rewrite.append(index)
    for again in rewrite:
        _write_volume(run, again, export_dir, fmt, tr_s, series_uid, faults, atomic, clock, report)
    return report


def _write_volume(
    run: RecordedRun,
    index: int,
    export_dir: Path,
    fmt: str,
    tr_s: float,
    series_uid: str,
    faults: ReplayFaults,
    atomic: bool,
    clock: Clock,
    report: ReplayReport,
) -> None:
    names = []
    for name, data in _volume_files(run, index, fmt, tr_s, series_uid):
        _write(
            export_dir / name,
            data,
            chunks=faults.chunks,
            chunk_delay_s=faults.chunk_delay_s,
            atomic=atomic,
            clock=clock,
        )
        names.append(name)
    if index in report.written:
        report.duplicated.append(index)
    report.written.setdefault(index, []).extend(names)


class ReplaySource:
    """A :class:`VolumeSource` that plays a recorded run at its TR, without files.

    Parameters
    ----------
    run : RecordedRun
    tr_s : float, optional
        Seconds between volumes on ``clock`` (default: the run's TR).
    clock : Clock
        A :class:`ScaledClock` plays faster than real time.
    """

    def __init__(self, run: RecordedRun, *, tr_s: float | None = None, clock: Clock | None = None) -> None:
        tr = tr_s or run.tr_s
        if not tr or tr <= 0:
            raise BridgeError(f"{run.source or 'the run'} states no TR; pass tr_s")
        self.run, self.tr_s = run, float(tr)
        self.clock = clock or WallClock()
        self._closed = threading.Event()
        self._series = f"replay of {run.source or 'a recorded run'}"

    def __iter__(self) -> Iterator[Volume]:
        start = self.clock.now()
        for index in range(self.run.n_volumes):
            due = start + index * self.tr_s
            while not self._closed.is_set() and self.clock.now() < due:
                self._closed.wait(min(0.05, self.clock.seconds_to_wall(due - self.clock.now())))
            if self._closed.is_set():
                return
            seen = time.time()
            yield Volume(
                index=index,
                data=self.run.values(index),
                affine=self.run.affine,
                series=self._series,
                tr_s=self.tr_s,
                source=self.run.source,
                stamps={"seen": seen, "read": seen},
            )

    def close(self) -> None:
        self._closed.set()

    def __enter__(self) -> ReplaySource:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
