"""A run's quality: its image quality from its volume files, and how well its design separates its trials.

What MRIQC and fMRIPrep show of a functional run, computed from the files the
bridge received, one volume at a time (a run of hundreds of volumes holds in
memory its sums and its ROI voxels only):

- the mean image and the temporal signal-to-noise ratio, each voxel's mean over
  the standard deviation of what a straight line through its time course
  leaves (so that scanner drift does not count as noise), and its median in
  each ROI;
- a carpet plot: every ROI voxel's time course, less its line, in units of its
  own standard deviation, one row a voxel, grouped by ROI;
- six rigid motion parameters of each volume against the run's first
  (:class:`loop.analysis.motion.RigidRegistration`, the estimate the controller makes
  as volumes arrive), translations in millimetres and rotations in degrees.

Volumes recorded missing, or whose file is gone, are left out; their times
are not, so the line each voxel is measured against is the run's.

The design (:func:`design_diagnostics`) is the one the session's single-trial
estimates are fitted with: each trial's HRF regressor, from its measured
onset, and the cosine drifts. Trials whose regressors overlap much cannot be
told apart: the correlations between them and each trial's variance inflation
say how much.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from db.base import ConfigError
from loop.analysis.design import Trial, cosine_drifts, frame_times, trial_regressors
from loop.analysis.motion import RigidRegistration
from loop.analysis.roi import RoiSignals
from loop.errors import SessionError

if TYPE_CHECKING:
    from scanner_bridge.readers import VolumeFiles

__all__ = ["DesignDiagnostics", "QualityUnavailableError", "RunQuality", "design_diagnostics", "run_quality"]

Array = npt.NDArray[np.float64]


class QualityUnavailableError(SessionError):
    """The run's volume files cannot give its image quality (none at hand, or not whole volumes)."""


@dataclass(frozen=True)
class RunQuality:
    """One run's image quality, on its volumes' own grid."""

    times_s: Array  # (n,) each volume read, from the first trigger
    mean: Array  # (x, y, z)
    tsnr: Array  # (x, y, z); 0 where a voxel does not vary or its mean is not positive
    affine: Array  # the volumes' (4, 4)
    roi_tsnr: dict[str, float]  # median tSNR over each ROI's voxels
    carpet: npt.NDArray[np.float32]  # (ROI voxels, n): detrended, in units of each voxel's sd
    carpet_rois: list[tuple[str, int]]  # each ROI's name and its first row in the carpet
    motion: Array  # (n, 6): translations (mm) and rotations (degrees) against the first volume
    left_out: int  # volumes recorded without a file at hand


def run_quality(
    files: Sequence[tuple[int, Path | None]],
    tr_s: float,
    signals: RoiSignals,
    reader: VolumeFiles | None = None,
) -> RunQuality:
    """The image quality of a run from ``files``, (volume index, its file or None), in index order.

    ``signals`` knows the session's atlas; the volumes may lie on its grid with their axes another way.
    ``reader`` reads each volume by its file (single-slice DICOM gathers its slices; share one reader
    across a session's runs so that each folder's headers are read once). Raises
    :class:`QualityUnavailableError` when fewer than three volumes can be read, or they are not the
    atlas's grid.
    """
    from scanner_bridge.errors import VolumeReadError
    from scanner_bridge.readers import VolumeFiles

    read = reader or VolumeFiles()
    at_hand = [(index, path) for index, path in files if path is not None and path.is_file()]
    if len(at_hand) < 3:
        raise QualityUnavailableError(f"{len(at_hand)} of the run's {len(files)} volume files are at hand")
    times, rows, motion = [], [], []
    sums: list[Array] = []
    registration: RigidRegistration | None = None
    for index, path in at_hand:
        try:
            part = read(path)
        except VolumeReadError as exc:
            raise QualityUnavailableError(f"{path.name} cannot be read as a whole volume ({exc})") from None
        data = np.asarray(part.data, dtype=np.float64)
        if registration is None:
            try:
                signals.check(data.shape, part.affine)
            except ConfigError as exc:
                raise QualityUnavailableError(str(exc)) from None
            affine = np.asarray(part.affine, dtype=np.float64)
            registration = RigidRegistration(data, np.sqrt((affine[:3, :3] ** 2).sum(0)))
            sums = [np.zeros(data.shape) for _ in range(3)]
            roi_voxels = np.concatenate(signals.rois_in_volume)
        if data.shape != sums[0].shape:
            raise QualityUnavailableError(
                f"{path.name} has shape {data.shape}; the run's first, {sums[0].shape}"
            )
        t = index * tr_s
        sums[0] += data
        sums[1] += t * data
        sums[2] += data * data
        times.append(t)
        flat = np.ascontiguousarray(data).ravel()  # the ROIs' flat indices count in C order
        rows.append(flat[roi_voxels].astype(np.float32))
        motion.append(registration.register(data))
    n, t_s = len(times), np.asarray(times)
    mean, tsnr = _trend_tsnr(n, t_s, *sums)
    carpet = _standardized(np.stack(rows, 1), t_s)
    starts = np.cumsum([0, *(len(idx) for idx in signals.rois_in_volume)])[:-1]
    flat_tsnr = tsnr.ravel()
    params = np.asarray(motion)
    params[:, 3:] = np.degrees(params[:, 3:])
    return RunQuality(
        times_s=t_s,
        mean=mean,
        tsnr=tsnr,
        affine=affine,
        roi_tsnr={
            name: float(np.median(flat_tsnr[idx]))
            for name, idx in zip(signals.roi_names, signals.rois_in_volume, strict=True)
        },
        carpet=carpet,
        carpet_rois=[(name, int(s)) for name, s in zip(signals.roi_names, starts, strict=True)],
        motion=params,
        left_out=len(files) - n,
    )


def _trend_tsnr(n: int, t: Array, sy: Array, sty: Array, syy: Array) -> tuple[Array, Array]:
    """Each voxel's mean, and its mean over the sd of its residual from a least-squares line in time."""
    st, stt = t.sum(), (t * t).sum()
    denominator = n * stt - st * st
    slope = (n * sty - st * sy) / denominator if denominator > 0 else np.zeros_like(sy)
    intercept = (sy - slope * st) / n
    residual = np.maximum(syy - intercept * sy - slope * sty, 0.0)  # the residual sum of squares
    sd = np.sqrt(residual / max(n - 2, 1))
    mean = sy / n
    tsnr = np.divide(mean, sd, out=np.zeros_like(mean), where=(sd > 1e-9 * np.abs(mean)) & (mean > 0))
    return mean, tsnr


def _standardized(rows: npt.NDArray[np.float32], t: Array) -> npt.NDArray[np.float32]:
    """Each row less its least-squares line in ``t``, divided by what is left's sd (0 where it is 0)."""
    design = np.stack([np.ones_like(t), t - t.mean()], 1)
    coef, *_ = np.linalg.lstsq(design, rows.T.astype(np.float64), rcond=None)
    residual = rows - (design @ coef).T
    sd = residual.std(1, keepdims=True)
    standardized: npt.NDArray[np.float32] = np.divide(
        residual, sd, out=np.zeros_like(residual), where=sd > 0
    ).astype(np.float32)
    return standardized


@dataclass(frozen=True)
class DesignDiagnostics:
    """How well a run's design separates its trials: what a single-trial estimate can tell apart."""

    matrix: Array  # (volumes, trials + drifts): each trial's HRF regressor, then the cosine drifts
    n_trials: int
    correlation: Array  # (trials, trials) between the trials' regressors
    vif: Array  # (trials,) each trial's variance inflation in the all-trials model (LSA)

    @property
    def largest_neighbour_r(self) -> float:
        """The largest correlation between two trials' regressors."""
        off = self.correlation - np.eye(self.n_trials)
        return float(off.max()) if self.n_trials > 1 else 0.0


def design_diagnostics(trials: Sequence[Trial], tr_s: float, n_volumes: int) -> DesignDiagnostics:
    """A run's design, its trials' correlations and variance inflation, as the analysis models it."""
    times = frame_times(n_volumes, tr_s)
    regressors = trial_regressors(times, trials)
    matrix = np.concatenate([regressors, cosine_drifts(times)], 1)
    centred = regressors - regressors.mean(0)
    norms = np.linalg.norm(centred, axis=0)
    unit = centred / np.where(norms > 0, norms, 1.0)
    # Variance inflation of each trial's estimate with every other column in the model: the diagonal
    # of (X'X)^-1 times each column's own sum of squares, X the whole design (drifts included).
    gram_inverse = np.linalg.pinv(matrix.T @ matrix)
    own = (matrix * matrix).sum(0) - matrix.sum(0) ** 2 / n_volumes
    vif = np.diag(gram_inverse)[: len(trials)] * own[: len(trials)]
    return DesignDiagnostics(matrix=matrix, n_trials=len(trials), correlation=unit.T @ unit, vif=vif)
