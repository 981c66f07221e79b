"""Features for block and movie designs: averaged per TR, then lagged.

For a movie, every frame has features; the BOLD signal of a TR reflects what
was on screen a few seconds before. :func:`features_per_tr` averages the
frames shown during each TR (paper 001 averaged 30 frames per 2 s TR) and
:func:`lag_features` stacks copies delayed by, for example, 4, 6 and 8 s, so
that a ridge model learns the haemodynamic delay itself. Lags never cross a
run boundary: the first TRs of a run see zeros, not the end of the previous run.
:func:`repeated_run_ceiling` gives the noise ceiling of runs that show the same
movie again (paper 001's test set: blocks repeated ten times), TR by TR.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

from stimulus.errors import EncodingInputError
from stimulus.scores import NoiseCeiling, noise_ceiling

__all__ = ["DEFAULT_LAGS_S", "features_per_tr", "lag_features", "repeated_run_ceiling"]

DEFAULT_LAGS_S: tuple[float, ...] = (4.0, 6.0, 8.0)


def features_per_tr(
    frame_features: npt.ArrayLike, frame_times_s: npt.ArrayLike, *, n_trs: int, tr_s: float
) -> npt.NDArray[np.float64]:
    """Mean features of the frames shown during each TR.

    Parameters
    ----------
    frame_features : array of shape (n_frames, n_features)
    frame_times_s : array of shape (n_frames,)
        Onset of each frame in seconds from the run's first trigger.
    n_trs : int
    tr_s : float

    Returns
    -------
    ndarray of shape (n_trs, n_features)
        TR ``k`` averages the frames with onset in ``[k tr, (k + 1) tr)``;
        a TR with no frame (fixation) is zero.
    """
    features = np.asarray(frame_features, dtype=np.float64)
    times = np.asarray(frame_times_s, dtype=np.float64)
    if features.ndim != 2 or times.shape != (features.shape[0],):
        raise EncodingInputError(
            f"frame features {features.shape} need one onset per frame; got {times.shape} onsets"
        )
    if tr_s <= 0 or n_trs < 1:
        raise EncodingInputError(f"tr_s ({tr_s}) and n_trs ({n_trs}) must be positive")
    index = np.floor(times / tr_s + 1e-9).astype(np.int64)
    inside = (index >= 0) & (index < n_trs)
    sums = np.zeros((n_trs, features.shape[1]))
    np.add.at(sums, index[inside], features[inside])
    counts = np.bincount(index[inside], minlength=n_trs)
    result: npt.NDArray[np.float64] = sums / np.maximum(counts, 1)[:, None]
    return result


def lag_features(
    features: npt.ArrayLike,
    *,
    tr_s: float,
    lags_s: Sequence[float] = DEFAULT_LAGS_S,
    runs: npt.ArrayLike | None = None,
) -> npt.NDArray[np.float64]:
    """Delayed copies of per-TR features, side by side.

    Parameters
    ----------
    features : array of shape (n_trs, n_features)
    tr_s : float
    lags_s : sequence of float
        Each a whole number of TRs.
    runs : array of shape (n_trs,), optional
        Run of each TR; a lag never reaches into another run.

    Returns
    -------
    ndarray of shape (n_trs, n_features * len(lags_s))
        Columns ``[j p, (j + 1) p)`` hold the features ``lags_s[j]`` earlier.
    """
    values = np.asarray(features, dtype=np.float64)
    if values.ndim != 2:
        raise EncodingInputError(f"features have shape {values.shape}; expected (n_trs, n_features)")
    if not lags_s:
        raise EncodingInputError("give at least one lag")
    shifts = []
    for lag in lags_s:
        steps = lag / tr_s
        if lag < 0 or abs(steps - round(steps)) > 1e-6:
            examples = ", ".join(str(round(tr_s * k, 3)) for k in (2, 3, 4))
            raise EncodingInputError(
                f"lag {lag} s is not a non-negative whole number of TRs of {tr_s} s; "
                f"use multiples of the TR, for example {examples}"
            )
        shifts.append(round(steps))
    run_labels = np.zeros(len(values)) if runs is None else np.asarray(runs)
    if run_labels.shape != (len(values),):
        raise EncodingInputError(
            f"runs has shape {run_labels.shape}; expected one run per TR, ({len(values)},)"
        )
    # Position of each TR within its run: a lag of k TRs needs k earlier TRs of the same run.
    position = np.zeros(len(values), dtype=np.int64)
    for k in range(1, len(values)):
        position[k] = position[k - 1] + 1 if run_labels[k] == run_labels[k - 1] else 0
    out = np.zeros((len(values), values.shape[1] * len(shifts)))
    for j, shift in enumerate(shifts):
        block = out[:, j * values.shape[1] : (j + 1) * values.shape[1]]
        valid = np.flatnonzero(position >= shift)
        block[valid] = values[valid - shift]
    return out


def repeated_run_ceiling(responses: Sequence[npt.ArrayLike], stimuli: Sequence[str]) -> NoiseCeiling:
    """The noise ceiling of runs averaged by stimulus, from the runs that repeat one.

    Each TR of a run is a trial of the stimulus ``(stimulus, TR)``: runs that
    show the same movie give repeated trials of each of its TRs, whose spread
    is the noise (:func:`stimulus.scores.noise_ceiling`). The ceiling is that
    of the runs averaged by stimulus, as they are scored.

    Parameters
    ----------
    responses : sequence of arrays of shape (n_trs, n_voxels)
        One per run; runs of one stimulus have the same number of TRs.
    stimuli : sequence of str
        What each run showed.
    """
    if len(responses) != len(stimuli):
        raise EncodingInputError(f"{len(stimuli)} stimuli were given for {len(responses)} runs")
    rows: list[npt.NDArray[np.float64]] = []
    ids: list[str] = []
    lengths: dict[str, int] = {}
    for values, stimulus in zip(responses, stimuli, strict=True):
        run = np.asarray(values, dtype=np.float64)
        if lengths.setdefault(stimulus, len(run)) != len(run):
            raise EncodingInputError(
                f"runs of stimulus {stimulus!r} have {lengths[stimulus]} and {len(run)} TRs; "
                "runs that repeat a stimulus must be equally long"
            )
        rows.append(run)
        ids.extend(f"{stimulus}\0{k}" for k in range(len(run)))
    counts = np.array([stimuli.count(s) for s in lengths for _ in range(lengths[s])])
    if len(counts) == 0 or counts.max() < 2:
        raise EncodingInputError(
            "no stimulus was shown in two runs, so the noise ceiling cannot be estimated; "
            "repeat a movie or block sequence in a few runs (paper 001 repeated its test blocks ten times)"
        )
    return noise_ceiling(np.concatenate(rows), ids, n_averaged=1.0 / float(np.mean(1.0 / counts)))
