"""Single-trial responses: least-squares-all, least-squares-separate, and the GLM of a run in progress.

- :func:`least_squares_all` (LSA): one regressor per trial, drifts and
  confounds, one ordinary least-squares fit.
- :func:`least_squares_separate` (LSS; Mumford et al. 2012): for each trial,
  a fit with that trial's regressor, one regressor for all the others, and
  the same nuisance columns. Less variance when trials are close together.
- :class:`IncrementalGLM`: the LSA fit accumulated volume by volume
  (``X'X`` and ``X'Y`` grow by one row each), so a provisional response to
  every trial shown so far is one small solve away during the run. A trial's
  regressor is zero before its onset, so rows already added never change when
  a trial is added; the drifts are those of the planned run length. At the
  end of the run it equals :func:`least_squares_all` on the same volumes.

Responses are in the units of ``Y`` per unit regressor; with ``Y`` in
percent signal change, the response at the peak of a 1 s presentation.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy.linalg.blas import daxpy

from loop.analysis.design import Trial, cosine_drifts, frame_times, trial_regressors

__all__ = ["IncrementalGLM", "least_squares_all", "least_squares_separate", "nuisance"]

Array = npt.NDArray[np.float64]

HRF_SPAN_S = 60.0  # a trial's regressor is taken as zero this long after its onset (it is below 1e-6)


def nuisance(times: Array, confounds: Array | None = None, high_pass_hz: float = 0.01) -> Array:
    """Cosine drifts (with the constant) and any confounds (e.g. motion), as columns."""
    drifts = cosine_drifts(times, high_pass_hz)
    if confounds is None:
        return drifts
    return np.concatenate([np.asarray(confounds, dtype=np.float64).reshape(len(times), -1), drifts], axis=1)


def _columns(
    signals: npt.ArrayLike,
    trials: Sequence[Trial],
    tr_s: float,
    confounds: Array | None,
    high_pass_hz: float,
    delay_s: float,
) -> tuple[Array, Array, Array]:
    """The signals, the trials' regressors and the nuisance columns of one run."""
    y = np.asarray(signals, dtype=np.float64)
    times = frame_times(len(y), tr_s)
    return y, trial_regressors(times, trials, delay_s), nuisance(times, confounds, high_pass_hz)


def least_squares_all(
    signals: npt.ArrayLike,
    trials: Sequence[Trial],
    tr_s: float,
    *,
    confounds: Array | None = None,
    high_pass_hz: float = 0.01,
    delay_s: float = 0.0,
) -> Array:
    """(n_trials, n_voxels) responses from ``signals`` (n_volumes, n_voxels) by one OLS fit."""
    y, regressors, nuisance_columns = _columns(signals, trials, tr_s, confounds, high_pass_hz, delay_s)
    coef: Array = np.linalg.lstsq(np.concatenate([regressors, nuisance_columns], 1), y, rcond=None)[0]
    return coef[: len(trials)]


def least_squares_separate(
    signals: npt.ArrayLike,
    trials: Sequence[Trial],
    tr_s: float,
    *,
    confounds: Array | None = None,
    high_pass_hz: float = 0.01,
    delay_s: float = 0.0,
) -> Array:
    """(n_trials, n_voxels) responses, each trial fit against the sum of all the others."""
    y, regressors, nuisance_columns = _columns(signals, trials, tr_s, confounds, high_pass_hz, delay_s)
    others_all = regressors.sum(1)
    out = np.empty((len(trials), y.shape[1]))
    for k in range(len(trials)):
        design = np.column_stack([regressors[:, k], others_all - regressors[:, k], nuisance_columns])
        out[k] = np.linalg.lstsq(design, y, rcond=None)[0][0]
    return out


class IncrementalGLM:
    """The least-squares-all fit of a run, as its volumes arrive.

    Parameters
    ----------
    tr_s : float
    n_volumes : int
        The run's planned length (fixes the drift basis).
    n_voxels : int
    max_trials : int
        Room for this many trials.
    n_confounds : int
        Confound values given with every volume (e.g. 6 motion parameters).
    """

    def __init__(
        self,
        tr_s: float,
        n_volumes: int,
        n_voxels: int,
        *,
        max_trials: int,
        n_confounds: int = 0,
        high_pass_hz: float = 0.01,
        delay_s: float = 0.0,
    ) -> None:
        self.tr_s, self.n_volumes, self.delay_s = tr_s, n_volumes, delay_s
        self.trials: list[Trial] = []
        self._max_trials = max_trials
        self._drifts = cosine_drifts(frame_times(n_volumes, tr_s), high_pass_hz)
        self._n_confounds = n_confounds
        width = max_trials + n_confounds + self._drifts.shape[1]
        self._xtx = np.zeros((width, width))
        self._xty = np.zeros((width, n_voxels))
        self.volumes_added = 0

    def add_trial(self, trial: Trial) -> int:
        """Add a trial (its onset must not be before a volume already added); return its index."""
        if len(self.trials) == self._max_trials:
            raise ValueError(f"the GLM has room for {self._max_trials} trials")
        if self.volumes_added and trial.onset_s < (self.volumes_added - 1) * self.tr_s - 1e-9:
            raise ValueError(
                f"trial at {trial.onset_s} s is earlier than volume {self.volumes_added - 1}, already added"
            )
        self.trials.append(trial)
        return len(self.trials) - 1

    def add_volume(self, index: int, values: npt.ArrayLike, confounds: npt.ArrayLike = ()) -> None:
        """Add volume ``index`` (the next one): its voxel values and confound values."""
        if index != self.volumes_added:
            raise ValueError(f"volume {index} added out of order; the next is {self.volumes_added}")
        if index >= self.n_volumes:
            raise ValueError(f"the run has {self.n_volumes} volumes")
        row = self._row(index, np.asarray(confounds, dtype=np.float64))
        self._xtx += np.outer(row, row)
        # Only trials within an HRF of now are non-zero: update their rows of X'Y, not all of them.
        y = np.ascontiguousarray(values, dtype=np.float64)
        for r in np.flatnonzero(row):  # in place, row by row (BLAS axpy): no temporaries as wide as Y
            daxpy(y, self._xty[r], a=row[r])
        self.volumes_added += 1

    def skip_volume(self) -> None:
        """A volume that never came: the fit goes on without its row."""
        if self.volumes_added >= self.n_volumes:
            raise ValueError(f"the run has {self.n_volumes} volumes")
        self.volumes_added += 1

    def _row(self, index: int, confounds: Array) -> Array:
        t = index * self.tr_s
        row = np.zeros(self._xtx.shape[0])
        recent = [k for k in range(len(self.trials)) if t - HRF_SPAN_S < self.trials[k].onset_s < t]
        if recent:
            row[recent] = trial_regressors(np.array([t]), [self.trials[k] for k in recent], self.delay_s)[0]
        start = self._max_trials
        row[start : start + self._n_confounds] = confounds
        row[start + self._n_confounds :] = self._drifts[index]
        return row

    def responses(self) -> Array:
        """(n_trials so far, n_voxels): the responses estimated from the volumes so far.

        Trials and drift columns with no information yet are left out of the
        solve (minimum-norm least squares), so early estimates are provisional.
        """
        used = np.r_[np.arange(len(self.trials)), np.arange(self._max_trials, self._xtx.shape[0])]
        xtx = self._xtx[np.ix_(used, used)]
        # The pseudo-inverse of the small X'X (not lstsq on all voxels at once): one SVD, one product.
        inverse = np.linalg.pinv(xtx, rcond=1e-10)
        coef: Array = inverse[: len(self.trials)] @ self._xty[used]
        return coef
