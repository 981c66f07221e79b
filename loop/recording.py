"""One run as it comes in: each volume analysed, recorded and shown; each onset recorded.

:class:`RunRecording` is the controller's :class:`~loop.acquisition.RunSink`.
A volume is analysed at once (motion, ROI means, model voxels, the
incremental fit) and recorded in its own transaction; a volume recorded
before a restart is analysed again but not recorded twice; one recorded as
missing that comes after all completes its record (``late``). What the
analysis kept is what the after-run fit takes (:meth:`RunRecording.received`).

Each run's first volume is registered to the session's reference (its first
run's first volume, kept in the session folder: :class:`SessionReference`), and
the ROIs and model voxels are looked up where the head now is, so that they
mean the same tissue in every run; the movement is recorded (event ``run.position``).
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import math
import time
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy.ndimage import affine_transform

from db import SessionRecorder
from db.base import ConfigError, VolumeStatus, write_atomic
from loop.analysis.design import Trial
from loop.analysis.motion import RigidRegistration, rotation_angle_deg
from loop.analysis.realtime import RunAnalyzer
from loop.analysis.roi import RoiSignals
from loop.errors import SessionError
from loop.folder import RunRef
from loop.observer import Observer
from scanner_bridge.volume import Volume
from stimulus.present import RunPlan

__all__ = ["EventLogger", "RunRecording", "SessionReference", "implausible_position", "read_reference"]

# A head that moved more than this between runs is worth a word to the operator.
MOVED_MM, MOVED_DEG = 2.0, 2.0
# Further than a head moves in a head coil, between runs or days: the registration failed, or the reference
# is not this head's.
TOO_FAR_MM, TOO_FAR_DEG = 25.0, 25.0
# Below this correlation of the placed volume with the reference (at its edges) the registration did not find
# the head: a turn too large for it, or not this head. A placed day-2 head turned 5 degrees matches 0.93.
POOR_MATCH = 0.75

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]
# The controller's event log: (level, code, message, *, run_id=None, **details).
EventLogger = Callable[..., None]


def read_reference(path: Path) -> tuple[tuple[int, int, int], Array]:
    """The grid (shape, affine) of a volume: a NIfTI (its first volume) or a session's ``reference.npz``."""
    import nibabel as nib

    try:
        if path.suffix == ".npz":
            with path.open("rb") as handle, np.load(handle) as saved:
                volume, affine = saved["volume"], saved["affine"]
                shape = volume.shape[:3]
        else:
            image = nib.load(path)
            shape, affine = image.shape[:3], image.affine  # type: ignore[attr-defined]
    except (
        OSError,
        ValueError,
        KeyError,
        EOFError,
        zipfile.BadZipFile,
        nib.filebasedimages.ImageFileError,
    ) as exc:
        raise ConfigError(
            f"{path} is not a volume to take a grid from ({exc}); give a NIfTI or a reference.npz"
        ) from None
    return (int(shape[0]), int(shape[1]), int(shape[2])), np.asarray(affine, dtype=np.float64)


class SessionReference:
    """The head's position at the session's first volume, which every run is placed against.

    The first volume offered becomes the reference and is saved to ``path`` (so a resumed session
    places its runs against the same one); each later run's first volume is registered to it.

    Parameters
    ----------
    path : Path
        Where the reference volume is kept (``.npz``: the volume and its affine).
    voxel_mm : array-like of shape (3,)
    source : Path, optional
        An earlier session's reference (a later day of one subject): copied to ``path`` and used
        instead of this session's first volume, so every run of every day is placed in one space.
    """

    def __init__(self, path: Path, voxel_mm: npt.ArrayLike, *, source: Path | None = None) -> None:
        self.path, self.voxel_mm, self.source = path, np.asarray(voxel_mm, dtype=np.float64), source
        self._registration: RigidRegistration | None = None
        self.match: float | None = None  # how well the last run placed matches the reference (Pearson r)
        self.across: Array | None = None  # reference-grid voxel -> the last run's (when its grid differs)
        self._geometry: tuple[tuple[int, ...], Array] | None = None

    @property
    def grid(self) -> tuple[tuple[int, ...], Array] | None:
        """The reference's (shape, affine), once it is known."""
        return self._geometry

    def _load(self) -> tuple[Array, Array]:
        try:
            with self.path.open("rb") as handle, np.load(handle) as saved:  # closed even when not a zip
                volume, affine = (
                    np.asarray(saved["volume"], np.float64),
                    np.asarray(saved["affine"], np.float64),
                )
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise ConfigError(
                f"the session's reference volume {self.path} cannot be read ({exc}); restore it, or move it "
                "away so that the next run's first volume becomes the reference (the runs recorded so far "
                "were placed against the old one)"
            ) from None
        if volume.ndim != 3 or affine.shape != (4, 4):
            raise ConfigError(f"{self.path} holds no reference volume and affine; restore it or move it away")
        return volume, affine

    def position(self, volume: npt.ArrayLike, affine: npt.ArrayLike) -> Array | None:
        """The six parameters that bring ``volume`` onto the reference; None when it becomes the reference.

        A volume on another grid than the reference's (another day's slice prescription, another
        orientation) is first resampled onto the reference's grid through the two affines; then
        :attr:`across` maps reference-grid voxel coordinates to the volume's, and the parameters are
        the head's movement in the reference's grid.
        """
        data = np.asarray(volume, dtype=np.float64)
        self.across = None
        if self._registration is None:
            if not self.path.is_file() and self.source is not None:
                write_atomic(self.path, self.source.read_bytes())
            if self.path.is_file():
                reference, reference_affine = self._load()
            else:
                buffer = io.BytesIO()
                np.savez_compressed(buffer, volume=data.astype(np.float32), affine=np.asarray(affine))
                write_atomic(self.path, buffer.getvalue())
                reference, reference_affine = data, np.asarray(affine, dtype=np.float64)
            # Between runs or days the head may have moved millimetres and turned degrees: iterate to
            # convergence, once per run (a 20 degree turn takes about 60 iterations, 25 ms).
            self._registration = RigidRegistration(reference, self.voxel_mm, iterations=100)
            self._geometry = (reference.shape, reference_affine)
            if reference is data:
                return None
        assert self._geometry is not None
        shape, reference_affine = self._geometry
        if data.shape != shape or not np.allclose(affine, reference_affine, atol=1e-3):
            across = np.linalg.solve(np.asarray(affine, dtype=np.float64), reference_affine).astype(
                np.float64
            )
            data = affine_transform(
                data, across[:3, :3], offset=across[:3, 3], output_shape=shape, order=1, mode="nearest"
            )
            self.across = across
        params = self._registration.register(data)
        self.match = self._registration.match(data, params)
        return params


def implausible_position(params: npt.ArrayLike, *, label: str, reference: SessionReference) -> str | None:
    """What to check when a run's head was not found, or found further than a head moves; else None."""
    p = np.asarray(params, dtype=np.float64)
    shift_mm, turn_deg = float(np.linalg.norm(p[:3])), rotation_angle_deg(p[3:])
    match = reference.match
    if shift_mm <= TOO_FAR_MM and turn_deg <= TOO_FAR_DEG and (match is None or match >= POOR_MATCH):
        return None
    found = f"{label}: registering its first volume to the reference {reference.path} "
    if match is not None and match < POOR_MATCH:
        found += (
            f"did not find the head: placed {shift_mm:.0f} mm and {turn_deg:.0f} degrees away, it matches "
            f"the reference with r {match:.2f} (below {POOR_MATCH:g}): the head turned further than the "
            "registration follows (about 25 degrees), or the reference is not this head's. "
        )
    else:
        found += (
            f"put the head {shift_mm:.0f} mm and {turn_deg:.0f} degrees away, further than a head moves in "
            f"a head coil ({TOO_FAR_MM:g} mm, {TOO_FAR_DEG:g} degrees): the registration failed, or the "
            "reference is not this head's. "
        )
    if reference.source is not None:
        return found + (
            f"Check that [atlas] reference ({reference.source}) is this subject's first session, that the "
            "slices are prescribed as they were then, and that the first volume shows the whole head; "
            "without [atlas] reference the session places its runs against its own first volume"
        )
    return found + (
        "Check that this is the same subject, with the slices prescribed as in the session's first run, and "
        "that the first volume shows the whole head"
    )


class RunRecording:
    """Takes one run's volumes and onsets from an acquisition: analyses, records, tells the observer.

    Parameters
    ----------
    run : RunRef
    run_id : int
        The run's key in the session database.
    plan : RunPlan
    recorder : SessionRecorder
    signals : RoiSignals
        The session's atlas: ROI means and model voxels.
    voxel_mm : array-like of shape (3,)
        Voxel sizes, for registration and framewise displacement.
    recorded : mapping of int to VolumeStatus
        The run's volumes recorded before (a resumed run), and their status.
    observer : Observer
    log_event : callable
        The controller's event log (``level, code, message, run_id=..., **details``).
    reference : SessionReference, optional
        The session's head position; without one, the ROIs stay where the atlas puts them.
    """

    def __init__(
        self,
        run: RunRef,
        run_id: int,
        plan: RunPlan,
        *,
        recorder: SessionRecorder,
        signals: RoiSignals,
        voxel_mm: npt.ArrayLike,
        recorded: Mapping[int, VolumeStatus],
        observer: Observer,
        log_event: EventLogger,
        reference: SessionReference | None = None,
    ) -> None:
        self.run, self.run_id, self.plan = run, run_id, plan
        self.reference = reference
        self.recorder, self.signals, self.observer, self.log_event = recorder, signals, observer, log_event
        self.recorded = set(recorded)
        self.recorded_missing = {i for i, status in recorded.items() if status is VolumeStatus.MISSING}
        self.voxel_mm = voxel_mm
        self._begin()

    def _begin(self) -> None:
        self.analyzer = RunAnalyzer(
            self.signals, self.plan.tr_s, self.plan.n_volumes, max_trials=len(self.plan.trials),
            voxel_mm=self.voxel_mm,
        )  # fmt: skip
        self.indices: list[int] = []
        self.values: list[Array] = []
        self.motion: list[Array] = []
        self.missing: list[int] = []
        self.late: list[int] = []
        self.onsets: dict[int, float] = {}
        self._checked = False

    def restart(self, reason: str) -> None:
        """The run is acquired again from its first volume: what the interrupted attempt recorded goes."""
        n = self.recorder.discard_acquisition(self.run_id)
        self.recorded.clear()
        self.recorded_missing.clear()
        self._begin()
        if n:
            self.log_event(
                "warning",
                "run.restarted",
                f"{self.label}: acquired again from its first volume ({reason}); the {n} volume(s) of the "
                "interrupted attempt are no longer in the record (their files are kept)",
                run_id=self.run_id,
            )

    @property
    def label(self) -> str:
        return self.run.description

    def volume(self, index: int, status: VolumeStatus, volume: Volume | None) -> None:
        if volume is None:
            self._missing(index)
            return
        if not self._checked:
            self._place(volume)
            self._checked = True
        result = self.analyzer.process(index, volume.data)
        self.indices.append(index)
        self.values.append(result.values)
        self.motion.append(result.motion)
        if status is VolumeStatus.LATE:
            self.late.append(index)
        names = self.signals.roi_names
        signals = dict(zip(names, result.values[: len(names)], strict=True))
        arrived, now = _utc(volume.stamps.get("received")), dt.datetime.now(dt.UTC)
        if index not in self.recorded:
            self.recorder.record_volume(
                self.run_id,
                index,
                roi_signals=signals,
                status=status,
                arrived_at=arrived,
                processed_at=now,
                file_path=volume.source or None,
                framewise_displacement_mm=result.fd_mm if math.isfinite(result.fd_mm) else None,
            )
            self.recorded.add(index)
            if status is VolumeStatus.LATE:
                self.log_event(
                    "warning",
                    "volume.late",
                    f"{self.label}: volume {index} came more than its deadline after the one before "
                    "(the bridge or the scanner's export stalled); recorded late",
                    run_id=self.run_id,
                )
        elif index in self.recorded_missing:
            self.recorder.fill_missing_volume(
                self.run_id, index, roi_signals=signals, arrived_at=arrived, processed_at=now,
                file_path=volume.source,
            )  # fmt: skip
            self.recorded_missing.discard(index)
            self.log_event(
                "warning",
                "volume.late",
                f"{self.label}: volume {index} came late; recorded",
                run_id=self.run_id,
            )
        written = volume.stamps.get("written")
        latency = 1e3 * (time.time() - written) if written is not None else None
        self.observer.volume(self.label, index, self.plan.n_volumes, status.value, result, latency)

    def _place(self, volume: Volume) -> None:
        """Find the head against the session's reference at the run's first volume; follow it there."""
        params = self.reference.position(volume.data, volume.affine) if self.reference else None
        if params is None:  # no reference, or this volume became it: the atlas's own grid
            self.signals.check(volume.data.shape, volume.affine)
            return
        assert self.reference is not None
        problem = implausible_position(params, label=self.label, reference=self.reference)
        if problem:
            raise SessionError(problem)
        if self.reference.across is None:  # the reference's grid: it must be the atlas's
            self.signals.check(volume.data.shape, volume.affine)
        grid = self.reference.grid  # on another grid (another day's prescription) the voxels go across
        assert grid is not None
        gone = self.signals.place_across(params, self.voxel_mm, grid, (volume.data.shape, volume.affine))
        shift_mm, turn_deg = float(np.linalg.norm(params[:3])), rotation_angle_deg(params[3:])
        moved = shift_mm > MOVED_MM or turn_deg > MOVED_DEG or gone
        earlier_day = self.reference.source is not None
        where = (
            "the first session's position ([atlas] reference)" if earlier_day else "where the session began"
        )
        message = (
            f"{self.label}: the head is {shift_mm:.1f} mm and {turn_deg:.1f} degrees from {where}; "
            "the ROIs follow it"
            + (f" ({gone} ROI voxel(s) moved out of the volume and are left out)" if gone else "")
            + ("; ask the participant to keep still" if moved and not earlier_day else "")
        )
        self.log_event(
            "warning" if moved else "info", "run.position", message, run_id=self.run_id,
            translation_mm=[round(float(v), 3) for v in params[:3]],
            rotation_deg=[round(float(np.degrees(v)), 3) for v in params[3:]], voxels_out=gone,
        )  # fmt: skip

    def _missing(self, index: int) -> None:
        self.missing.append(index)
        if index not in self.recorded:
            self.recorder.record_volume(self.run_id, index, roi_signals={}, status=VolumeStatus.MISSING)
            self.recorded.add(index)
            self.recorded_missing.add(index)
            self.log_event(
                "warning",
                "volume.missing",
                f"{self.label}: volume {index} never came; left out of the fit",
                run_id=self.run_id,
            )
        self.observer.volume(self.label, index, self.plan.n_volumes, "missing", None)

    def onset(self, trial: int, onset_s: float, duration_s: float | None) -> None:
        if trial in self.onsets:
            return
        self.onsets[trial] = onset_s
        planned = self.plan.trials[trial]
        try:
            self.analyzer.add_trial(Trial(onset_s, planned.duration_s, planned.stimulus))
        except ValueError:  # its volumes came before its onset did: left to the analysis after the run
            log.debug("onset of trial %d came after its volumes; not in the provisional fit", trial)
        self.recorder.record_onset(self.run_id, trial, actual_onset_s=onset_s, actual_duration_s=duration_s)

    def event(self, level: str, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        self.log_event(level, code, message, run_id=self.run_id, **(details or {}))

    def received(self) -> tuple[Array, list[int], Array]:
        """(values, indices, motion) of the volumes analysed, in index order (a late one came last)."""
        order = np.argsort(self.indices)
        return np.stack(self.values)[order], [self.indices[k] for k in order], np.stack(self.motion)[order]

    def summary(self) -> dict[str, Any]:
        seconds = [r.seconds for r in self.analyzer.results]
        fd = [r.fd_mm for r in self.analyzer.results]
        return {
            "volumes": len(self.indices),
            "missing": len(self.missing),
            "late": len(self.late),
            "median_ms": 1e3 * float(np.median(seconds)) if seconds else float("nan"),
            "max_fd_mm": float(np.nanmax(fd)) if fd else float("nan"),  # a late volume has no FD
        }


def _utc(timestamp: float | None) -> dt.datetime | None:
    return None if timestamp is None else dt.datetime.fromtimestamp(timestamp, dt.UTC)
