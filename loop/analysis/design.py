"""Design matrices: one HRF-convolved regressor per trial, cosine drifts, confounds.

Volume ``k`` is taken at ``frame_times[k] = k * TR`` after the first trigger
(the start of its acquisition; nilearn's ``slice_time_ref=0``). A trial's
regressor is the canonical HRF integrated over the time its image was on
screen (:func:`loop.analysis.hrf.hrf_integral`), exactly rather than by
oversampled convolution. Drifts are nilearn's discrete cosine set for a
high-pass cut-off, so designs agree with nilearn's column for column.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from loop.analysis.hrf import hrf_integral

__all__ = ["Trial", "cosine_drifts", "frame_times", "trial_regressors"]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Trial:
    """One presentation, timed from the run's first trigger (the presenter's measured onset)."""

    onset_s: float
    duration_s: float
    label: str = ""


def frame_times(n_volumes: int, tr_s: float) -> Array:
    """When each volume was taken, in seconds from the first trigger."""
    return np.arange(n_volumes, dtype=np.float64) * tr_s


def trial_regressors(times: Array, trials: Sequence[Trial], delay_s: float = 0.0) -> Array:
    """(n_volumes, n_trials): each trial's unit response, sampled at ``times``."""
    if not trials:
        return np.zeros((len(times), 0))
    onsets = np.array([t.onset_s for t in trials])[None, :]
    durations = np.array([t.duration_s for t in trials])[None, :]
    since = times[:, None] - onsets
    return hrf_integral(since, delay_s) - hrf_integral(since - durations, delay_s)


def cosine_drifts(times: Array, high_pass_hz: float = 0.01) -> Array:
    """nilearn's cosine drift basis for ``high_pass_hz``, with the constant as its last column."""
    n = len(times)
    dt = (times[-1] - times[0]) / (n - 1) if n > 1 else 1.0
    order = min(n - 1, int(np.floor(2 * n * high_pass_hz * dt)))
    k = np.arange(n)
    basis = np.ones((n, order + 1))
    for j in range(1, order + 1):
        basis[:, j - 1] = np.sqrt(2.0 / n) * np.cos(np.pi / n * (k + 0.5) * j)
    return basis
