"""The per-volume path of a run in progress: motion, ROI signals, model voxels, provisional responses.

:class:`RunAnalyzer` takes each volume as the bridge delivers it (in index
order) and, within a few milliseconds, registers it to the run's first
volume (six motion parameters and framewise displacement), takes every
ROI's mean and the values of the voxels the encoding model uses, converts
them to percent signal change against the first volume, and adds them to
the incremental least-squares-all fit, with the motion parameters as
confounds. Trials are added as the presenter reports their onsets; a
provisional response to every trial shown so far is one call away.
A missing volume is skipped (its row is simply absent from the fit), never
filled in.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from loop.analysis.design import Trial
from loop.analysis.glm import IncrementalGLM
from loop.analysis.motion import RigidRegistration, framewise_displacement
from loop.analysis.roi import RoiSignals

__all__ = ["RunAnalyzer", "VolumeResult"]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class VolumeResult:
    """What one volume gave, as the operator's console shows it."""

    index: int
    values: Array  # raw ROI means then model-voxel values, as the volume holds them
    roi_percent: Array  # each ROI's signal change against the first volume, in ROI order
    motion: Array  # tx, ty, tz (mm), rx, ry, rz (rad)
    fd_mm: float
    seconds: float  # processing time of this volume


class RunAnalyzer:
    """Real-time analysis of one run.

    Parameters
    ----------
    signals : RoiSignals
        The atlas and the model voxels.
    tr_s, n_volumes : the run's TR and planned length
    max_trials : int
        Room in the fit for this many trials.
    voxel_mm : (3,) voxel sizes
    """

    def __init__(
        self, signals: RoiSignals, tr_s: float, n_volumes: int, *, max_trials: int, voxel_mm: npt.ArrayLike
    ) -> None:
        self.signals = signals
        self.voxel_mm = np.asarray(voxel_mm, dtype=np.float64)
        self.n_rois = len(signals.roi_names)
        n_columns = self.n_rois + len(signals.voxel_index)
        self.glm = IncrementalGLM(tr_s, n_volumes, n_columns, max_trials=max_trials, n_confounds=6)
        self._registration: RigidRegistration | None = None
        self._baseline: Array | None = None
        self._last_motion: Array | None = None
        self.results: list[VolumeResult] = []

    def add_trial(self, trial: Trial) -> int:
        return self.glm.add_trial(trial)

    def process(self, index: int, volume: npt.ArrayLike) -> VolumeResult:
        """Analyse the volume at ``index``.

        Indices may skip missing volumes. A late volume (an index already passed) is
        measured (motion, ROI means, model voxels) but stays out of the provisional fit.
        """
        started = time.perf_counter()
        data = np.asarray(volume, dtype=np.float64)
        if self._registration is None:
            self._registration = RigidRegistration(data, self.voxel_mm)
        motion = self._registration.register(data)
        means, voxels = self.signals.extract(data)
        values = np.concatenate([means, voxels])
        if self._baseline is None:
            self._baseline = np.where(values != 0, values, 1.0)
        percent = 100.0 * (values / self._baseline - 1.0)
        if index >= self.glm.volumes_added:
            while self.glm.volumes_added < index:  # a missing volume: its row stays out of the fit
                self.glm.skip_volume()
            self.glm.add_volume(index, percent, motion)
            previous = self._last_motion if self._last_motion is not None else motion
            self._last_motion = motion
            fd = float(framewise_displacement(np.stack([previous, motion]))[1])
        else:  # a late volume, after later ones were fitted: measured, but out of the provisional fit
            fd = float("nan")
        result = VolumeResult(
            index, values, percent[: self.n_rois], motion, fd, time.perf_counter() - started
        )
        self.results.append(result)
        return result

    def roi_responses(self) -> Array:
        """(n_trials so far, n_rois) provisional responses, percent signal change."""
        return self.glm.responses()[:, : self.n_rois]

    def voxel_responses(self) -> Array:
        """(n_trials so far, n_model_voxels) provisional responses, percent signal change."""
        return self.glm.responses()[:, self.n_rois :]
