"""A session's stimulus-response pairs: each run's single-trial responses, gathered for the next fit.

After a run, :func:`single_trial_responses` turns its volumes (the model's
voxels and the ROI means, in the order they were taken) into one response
per presentation: percent signal change against each voxel's run mean,
least-squares-separate (or -all) with the run's motion as confounds and
missing volumes left out. :class:`TrainingData` keeps every presentation of
every run, and gives the encoding model what it fits on: one row per
distinct stimulus, averaged over its repeats, grouped by the run it was
first shown in (so cross-validation never splits a run), and the noise
ceiling where stimuli were repeated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

from loop.analysis.design import Trial
from loop.analysis.glm import least_squares_all, least_squares_separate
from stimulus.scores import NoiseCeiling, noise_ceiling

__all__ = ["TrainingData", "single_trial_responses"]

Array = npt.NDArray[np.float64]


def single_trial_responses(
    values: npt.ArrayLike,
    indices: Sequence[int],
    trials: Sequence[Trial],
    tr_s: float,
    n_volumes: int,
    *,
    motion: npt.ArrayLike | None = None,
    method: str = "lss",
) -> Array:
    """(n_trials, n_columns) responses in percent signal change from a run's received volumes.

    ``values`` holds one row per received volume, ``indices`` their volume
    numbers (gaps are missing volumes); ``motion`` one row of confounds per
    received volume.
    """
    rows = np.asarray(values, dtype=np.float64)
    index = np.asarray(indices, dtype=np.intp)
    if len(rows) != len(index) or len(rows) == 0:
        raise ValueError(f"{len(rows)} volumes for {len(index)} indices")
    mean = rows.mean(0)
    percent = 100.0 * (rows / np.where(mean != 0, mean, 1.0) - 1.0)
    # Fit on the full time grid with the missing rows weighted out: equivalent to dropping them.
    full = np.zeros((n_volumes, rows.shape[1]))
    full[index] = percent
    confounds = np.zeros((n_volumes, 0))
    if motion is not None:
        confounds = np.zeros((n_volumes, np.asarray(motion).shape[1]))
        confounds[index] = np.asarray(motion, dtype=np.float64)
    missing = np.setdiff1d(np.arange(n_volumes), index)
    if len(missing):  # one indicator per missing volume removes it from the fit exactly
        indicators = np.zeros((n_volumes, len(missing)))
        indicators[missing, np.arange(len(missing))] = 1.0
        confounds = np.concatenate([confounds, indicators], 1)
    fit = {"lss": least_squares_separate, "lsa": least_squares_all}.get(method)
    if fit is None:
        raise ValueError(f"method {method!r}; use lss or lsa")
    return fit(full, trials, tr_s, confounds=confounds if confounds.shape[1] else None)


@dataclass
class TrainingData:
    """Every presentation of a session so far: which stimulus, in which run, and the response."""

    stimuli: list[str] = field(default_factory=list)
    runs: list[int] = field(default_factory=list)
    rows: list[Array] = field(default_factory=list)

    def add_run(self, run: int, stimuli: Sequence[str], responses: npt.ArrayLike) -> None:
        values = np.asarray(responses, dtype=np.float64)
        if len(values) != len(stimuli):
            raise ValueError(f"{len(values)} responses for {len(stimuli)} stimuli")
        if self.rows and values.shape[1] != self.rows[0].shape[0]:
            raise ValueError(
                f"responses have {values.shape[1]} columns; earlier runs had {self.rows[0].shape[0]}"
            )
        self.stimuli.extend(stimuli)
        self.runs.extend([run] * len(stimuli))
        self.rows.extend(values)

    def __len__(self) -> int:
        return len(self.stimuli)

    def averaged(self) -> tuple[list[str], Array, npt.NDArray[np.intp], npt.NDArray[np.intp]]:
        """(distinct stimuli in first-shown order, mean responses, run first shown in, times shown)."""
        order: dict[str, list[int]] = {}
        for k, name in enumerate(self.stimuli):
            order.setdefault(name, []).append(k)
        matrix = np.stack(self.rows)
        names = list(order)
        means = np.stack([matrix[order[n]].mean(0) for n in names])
        groups = np.array([self.runs[order[n][0]] for n in names], dtype=np.intp)
        counts = np.array([len(order[n]) for n in names], dtype=np.intp)
        return names, means, groups, counts

    def noise_ceiling(self) -> NoiseCeiling:
        """NSD's noise ceiling of single presentations, from the stimuli shown more than once."""
        return noise_ceiling(np.stack(self.rows), self.stimuli)
