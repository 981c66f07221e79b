"""One run as it comes in: each volume analysed, recorded and shown; each onset recorded.

:class:`RunRecording` is the controller's :class:`~loop.acquisition.RunSink`.
A volume is analysed at once (motion, ROI means, model voxels, the
incremental fit) and recorded in its own transaction; a volume recorded
before a restart is analysed again but not recorded twice; one recorded as
missing that comes after all completes its record (``late``). What the
analysis kept is what the after-run fit takes (:meth:`RunRecording.received`).
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from db import SessionRecorder
from db.base import VolumeStatus
from loop.analysis.design import Trial
from loop.analysis.realtime import RunAnalyzer
from loop.analysis.roi import RoiSignals
from loop.folder import RunRef
from loop.observer import Observer
from scanner_bridge.volume import Volume
from stimulus.present import RunPlan

__all__ = ["EventLogger", "RunRecording"]

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]
# The controller's event log: (level, code, message, *, run_id=None, **details).
EventLogger = Callable[..., None]


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
    ) -> None:
        self.run, self.run_id, self.plan = run, run_id, plan
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
            self.signals.check(volume.data.shape, volume.affine)
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
