"""How well predicted responses match measured ones, voxel by voxel.

- :func:`pearson_r` and :func:`r2_score` per voxel (scikit-learn's
  conventions for a constant voxel);
- :func:`noise_ceiling`: the NSD-style noise-ceiling SNR from repeated
  presentations and the share of variance a perfect model could explain;
  :func:`normalized_accuracy` divides a model's R^2 by it (paper 003, eq. 4);
- :func:`permutation_p_values` against a null pooled over voxels and
  :func:`fdr_select` (Benjamini-Hochberg), the voxel selection of paper 001;
- :func:`roi_fingerprints` and :func:`fingerprint_summary`: which layer
  explains which region (paper 001).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from stimulus.errors import EncodingInputError

__all__ = [
    "NoiseCeiling",
    "Repeats",
    "average_repeats",
    "fdr_select",
    "fingerprint_summary",
    "fingerprint_voxels",
    "noise_ceiling",
    "normalized_accuracy",
    "pearson_r",
    "permutation_p_values",
    "r2_score",
    "roi_fingerprints",
]

FloatArray = npt.NDArray[np.float64]


def _pair(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    truth = np.asarray(y_true, dtype=np.float64)
    pred = np.asarray(y_pred, dtype=np.float64)
    if truth.ndim != 2 or truth.shape != pred.shape:
        raise EncodingInputError(
            f"measured responses {truth.shape} and predictions {pred.shape} must be 2-D arrays of the "
            "same shape (stimuli x voxels)"
        )
    if truth.shape[0] < 2:
        raise EncodingInputError(f"scoring needs at least 2 stimuli, not {truth.shape[0]}")
    return truth, pred


def pearson_r(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> FloatArray:
    """Correlation of each voxel's measured and predicted responses, shape (n_voxels,).

    A voxel whose measured or predicted responses are constant scores 0.
    """
    truth, pred = _pair(y_true, y_pred)
    tc = truth - truth.mean(axis=0)
    pc = pred - pred.mean(axis=0)
    denominator = np.sqrt((tc * tc).sum(axis=0) * (pc * pc).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (tc * pc).sum(axis=0) / denominator
    return np.where(denominator > 0, r, 0.0)


def r2_score(y_true: npt.ArrayLike, y_pred: npt.ArrayLike) -> FloatArray:
    """Coefficient of determination per voxel, shape (n_voxels,), as scikit-learn defines it."""
    truth, pred = _pair(y_true, y_pred)
    sse = ((truth - pred) ** 2).sum(axis=0)
    sst = ((truth - truth.mean(axis=0)) ** 2).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        r2 = 1.0 - sse / sst
    return np.where(sst > 0, r2, np.where(sse == 0, 1.0, 0.0))


@dataclass(frozen=True)
class Repeats:
    """Responses averaged per stimulus, stimuli in order of their first showing.

    Attributes
    ----------
    first : ndarray of shape (n_stimuli,)
        Row of each stimulus's first showing.
    averaged : ndarray of shape (n_stimuli, n_voxels)
    counts : ndarray of shape (n_stimuli,)
        Showings averaged.
    """

    first: npt.NDArray[np.intp]
    averaged: FloatArray
    counts: npt.NDArray[np.intp]

    @property
    def n_averaged(self) -> float:
        """The number of trials whose average has the noise of these averages: ``1 / mean(1 / counts)``."""
        return 1.0 / float(np.mean(1.0 / self.counts))


def average_repeats(responses: npt.ArrayLike, stimulus_ids: Sequence[object] | npt.ArrayLike) -> Repeats:
    """Average the rows of ``responses`` (n_rows, n_voxels) that show the same stimulus."""
    values = np.asarray(responses, dtype=np.float64)
    ids = np.asarray(stimulus_ids)
    if values.ndim != 2 or ids.shape != (values.shape[0],):
        raise EncodingInputError(
            f"{len(ids)} stimulus ids were given for {values.shape[0]} rows of responses"
        )
    _, first, inverse, counts = np.unique(ids, return_index=True, return_inverse=True, return_counts=True)
    order = np.argsort(first)  # unique() sorts by id; keep the order of showing
    sums = np.zeros((len(first), values.shape[1]))
    np.add.at(sums, inverse, values)
    return Repeats(first=first[order], averaged=(sums / counts[:, None])[order], counts=counts[order])


@dataclass(frozen=True)
class NoiseCeiling:
    """Noise ceiling per voxel from repeated presentations.

    Attributes
    ----------
    ncsnr : ndarray of shape (n_voxels,)
        Signal standard deviation over noise standard deviation.
    percent : ndarray of shape (n_voxels,)
        Share of the variance of responses averaged over ``n_averaged`` trials
        that is signal: ``100 ncsnr^2 / (ncsnr^2 + 1 / n_averaged)``.
    n_averaged : float
    n_repeated_stimuli : int
    """

    ncsnr: FloatArray
    percent: FloatArray
    n_averaged: float
    n_repeated_stimuli: int

    @classmethod
    def given(cls, percent: npt.ArrayLike) -> NoiseCeiling:
        """A noise ceiling that a dataset provides, in percent per voxel (0 to below 100)."""
        values = np.asarray(percent, dtype=np.float64)
        if values.ndim != 1 or not np.all((values >= 0) & (values < 100)):
            raise ValueError("a noise ceiling is one percentage per voxel, from 0 to below 100")
        return cls(
            ncsnr=np.sqrt(values / (100 - values)), percent=values, n_averaged=1.0, n_repeated_stimuli=0
        )


def noise_ceiling(
    trials: npt.ArrayLike, stimulus_ids: Sequence[object] | npt.ArrayLike, *, n_averaged: float = 1
) -> NoiseCeiling:
    """NSD's noise-ceiling SNR from single-trial responses.

    Each voxel's trial responses are z-scored; the noise variance is the mean
    over repeated stimuli of the variance across their repeats, the signal
    variance what remains of 1 (never below 0).

    Parameters
    ----------
    trials : array of shape (n_trials, n_voxels)
    stimulus_ids : sequence of shape (n_trials,)
        Which stimulus each trial showed; stimuli shown twice or more count.
    n_averaged : float
        How many trials the scored responses average (1 for single trials).
        For averages of unequal numbers of trials ``k_i``, the noise of an
        average is ``sigma^2 mean(1 / k_i)``, so give ``1 / mean(1 / k_i)``.
    """
    values = np.asarray(trials, dtype=np.float64)
    ids = np.asarray(stimulus_ids)
    if values.ndim != 2 or ids.shape != (values.shape[0],):
        raise EncodingInputError(f"trials {values.shape} need one stimulus id per row; got {ids.shape} ids")
    if not n_averaged >= 1:
        raise EncodingInputError(f"n_averaged must be at least 1, not {n_averaged}")
    _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    repeated = np.flatnonzero(counts >= 2)
    if len(repeated) == 0:
        raise EncodingInputError(
            "no stimulus was shown twice, so the noise ceiling cannot be estimated; "
            "repeat some stimuli (NSD repeats each three times)"
        )
    std = values.std(axis=0, ddof=1)
    z = (values - values.mean(axis=0)) / np.where(std > 0, std, 1.0)
    noise_var = np.mean([z[inverse == k].var(axis=0, ddof=1) for k in repeated], axis=0)
    signal_var = np.clip(1.0 - noise_var, 0.0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        ncsnr = np.where(noise_var > 0, np.sqrt(signal_var) / np.sqrt(noise_var), np.inf)
    squared = ncsnr**2
    with np.errstate(invalid="ignore"):
        percent = np.where(np.isinf(squared), 100.0, 100.0 * squared / (squared + 1.0 / n_averaged))
    return NoiseCeiling(ncsnr=ncsnr, percent=percent, n_averaged=n_averaged, n_repeated_stimuli=len(repeated))


def normalized_accuracy(r: npt.ArrayLike, ceiling: NoiseCeiling) -> FloatArray:
    """``100 r^2 / NC`` per voxel (paper 003, eq. 4 before the median); NaN where NC is 0."""
    r_values = np.asarray(r, dtype=np.float64)
    nc = ceiling.percent / 100.0
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(nc > 0, 100.0 * r_values**2 / nc, np.nan)


def permutation_p_values(
    y_true: npt.ArrayLike,
    y_pred: npt.ArrayLike,
    *,
    n_permutations: int = 1000,
    null_voxels: int = 200,
    seed: int = 0,
) -> FloatArray:
    """One-sided p-value of each voxel's correlation against a pooled permutation null.

    The null shuffles the stimuli of the measured responses of up to
    ``null_voxels`` voxels ``n_permutations`` times and pools all the
    correlations (paper 001 found the null the same across voxels). A voxel's
    p-value is ``(1 + #null >= r) / (1 + #null)``.
    """
    truth, pred = _pair(y_true, y_pred)
    if n_permutations < 1:
        raise EncodingInputError(f"n_permutations must be at least 1, not {n_permutations}")
    rng = np.random.default_rng(seed)
    observed = pearson_r(truth, pred)
    chosen = rng.choice(truth.shape[1], size=min(null_voxels, truth.shape[1]), replace=False)
    t, p = truth[:, chosen], pred[:, chosen]
    null = np.concatenate([pearson_r(t[rng.permutation(len(t))], p) for _ in range(n_permutations)])
    null.sort()
    exceed = len(null) - np.searchsorted(null, observed, side="left")
    return np.asarray((1.0 + exceed) / (1.0 + len(null)), dtype=np.float64)


def fdr_select(p_values: npt.ArrayLike, q: float = 0.05) -> npt.NDArray[np.bool_]:
    """Benjamini-Hochberg: which tests are discoveries at false discovery rate ``q``."""
    p = np.asarray(p_values, dtype=np.float64)
    if not 0 < q < 1:
        raise EncodingInputError(f"the false discovery rate q must be between 0 and 1, not {q}")
    m = len(p)
    order = np.argsort(p, kind="stable")
    passed = p[order] <= q * np.arange(1, m + 1) / m
    selected = np.zeros(m, dtype=bool)
    if passed.any():
        selected[order[: np.flatnonzero(passed)[-1] + 1]] = True
    return selected


def fingerprint_voxels(
    roi_labels: Sequence[str],
    selected: npt.ArrayLike | None = None,
    *,
    accuracy: npt.ArrayLike | None = None,
    top: float | None = None,
) -> dict[str, npt.NDArray[np.int64]]:
    """The voxels (indices) each ROI's fingerprint averages, ROIs in order of first label.

    ``selected``: only these voxels count (for example, the FDR selection).
    ``accuracy`` and ``top``: only the ``top`` fraction of each ROI's voxels (of
    those selected) best predicted by ``accuracy`` count, at least one: paper
    001 used the best 25 %. An ROI with no voxel left is left out.
    """
    labels = np.asarray(roi_labels)
    mask = np.ones(len(labels), dtype=bool) if selected is None else np.asarray(selected, dtype=bool)
    if (top is None) != (accuracy is None) or (top is not None and not 0 < top <= 1):
        raise ValueError("give top (a fraction in (0, 1]) and accuracy (one per voxel) together")
    result: dict[str, npt.NDArray[np.int64]] = {}
    for roi in dict.fromkeys(labels.tolist()):
        indices = np.flatnonzero((labels == roi) & mask)
        if top is not None and len(indices):
            ranked = indices[np.argsort(-np.asarray(accuracy, dtype=np.float64)[indices], kind="stable")]
            indices = np.sort(ranked[: max(1, int(np.ceil(top * len(indices))))])
        if len(indices):
            result[str(roi)] = indices
    return result


def roi_fingerprints(
    layer_scores: npt.ArrayLike,
    roi_labels: Sequence[str],
    selected: npt.ArrayLike | None = None,
    *,
    accuracy: npt.ArrayLike | None = None,
    top: float | None = None,
) -> dict[str, FloatArray]:
    """Mean score per layer over each ROI's voxels, divided by its maximum (paper 001, Fig. 2).

    Parameters
    ----------
    layer_scores : array of shape (n_layers, n_voxels)
    roi_labels : sequence of str, shape (n_voxels,)
    selected, accuracy, top :
        Which of each ROI's voxels count (:func:`fingerprint_voxels`).
    """
    scores = np.asarray(layer_scores, dtype=np.float64)
    result: dict[str, FloatArray] = {}
    for roi, members in fingerprint_voxels(roi_labels, selected, accuracy=accuracy, top=top).items():
        mean = scores[:, members].mean(axis=1)
        peak = np.abs(mean).max()
        result[roi] = mean / peak if peak > 0 else mean
    return result


def fingerprint_summary(layer_scores: npt.ArrayLike) -> FloatArray:
    """Each voxel's layer preference in [-1, 1]: low layers negative, high layers positive.

    Scores below zero count as zero; each voxel's scores are normalized to sum
    to 1 and projected onto a linear trend from -1 (first layer) to 1 (last),
    the summary of paper 001 (Fig. 4). Voxels with no positive score get 0.
    """
    scores = np.clip(np.asarray(layer_scores, dtype=np.float64), 0.0, None)
    total = scores.sum(axis=0)
    trend = np.linspace(-1.0, 1.0, scores.shape[0])
    with np.errstate(invalid="ignore", divide="ignore"):
        summary = trend @ scores / total
    return np.where(total > 0, summary, 0.0)
