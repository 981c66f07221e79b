"""A round's scores: is the model right, and do the images drive what they were made for?

Given the measured (and, in simulation, true) response of every ROI to
every image of a round, and what each image was:

- :func:`prediction_accuracy`: per ROI, Pearson r between predicted and
  measured responses across the round's images.
- :func:`target_vs_nontarget`: paper 000's Experiment 2. For each target
  ROI, its response to the images synthesized for it against its response
  to the images synthesized for the other targets: Welch's t, the
  two-sided p value, and Cohen's d (pooled standard deviation).
- :func:`drive`: each target ROI's mean response to its synthesized images
  relative to its response to the best and to the median natural image
  shown as controls in the same round: the ratio to the best (1.0 means as
  strong) and the place in the natural range (0 at the median, 1 at the best).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

__all__ = ["Drive", "TargetContrast", "drive", "prediction_accuracy", "target_vs_nontarget"]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class TargetContrast:
    roi: str
    target_mean: float
    nontarget_mean: float
    t: float
    p: float
    cohens_d: float
    n_target: int
    n_nontarget: int

    @property
    def drives_target(self) -> bool:
        """The target's images drive it more, at p < 0.05 (one image set against the other)."""
        return self.t > 0 and self.p < 0.05


@dataclass(frozen=True)
class Drive:
    roi: str
    synthesized: float
    best_natural: float
    median_natural: float

    @property
    def vs_best(self) -> float:
        return self.synthesized / self.best_natural if self.best_natural else float("nan")

    @property
    def natural_range(self) -> float:
        """Where the synthesized response lies among the natural controls: 0 at the median, 1 at the best.

        (A ratio to the median would blow up when the median response is near zero.)
        """
        span = self.best_natural - self.median_natural
        return (self.synthesized - self.median_natural) / span if span > 0 else float("nan")


def prediction_accuracy(
    predicted: Mapping[str, npt.ArrayLike], measured: Mapping[str, npt.ArrayLike]
) -> dict[str, float]:
    """Pearson r per ROI across images (NaN where either side does not vary)."""
    out = {}
    for roi, values in measured.items():
        m, p = np.asarray(values, dtype=np.float64), np.asarray(predicted[roi], dtype=np.float64)
        if m.shape != p.shape:
            raise ValueError(f"{roi}: {p.shape} predictions for {m.shape} measurements")
        out[roi] = float(np.corrcoef(m, p)[0, 1]) if m.std() > 0 and p.std() > 0 else float("nan")
    return out


def target_vs_nontarget(
    measured: Mapping[str, npt.ArrayLike], made_for: Sequence[str | None]
) -> list[TargetContrast]:
    """For every ROI that images were made for: its response to them against the others' images.

    ``made_for[k]`` is the target ROI image ``k`` was synthesized for (None
    for controls, which are left out).
    """
    targets = sorted({t for t in made_for if t is not None})
    labels = np.array([t if t is not None else "" for t in made_for])
    out = []
    for roi in targets:
        response = np.asarray(measured[roi], dtype=np.float64)
        own = response[labels == roi]
        other = response[(labels != roi) & (labels != "")]
        if len(own) < 2 or len(other) < 2:
            continue
        t, p = stats.ttest_ind(own, other, equal_var=False)
        pooled = np.sqrt(
            ((len(own) - 1) * own.var(ddof=1) + (len(other) - 1) * other.var(ddof=1))
            / (len(own) + len(other) - 2)
        )
        d = (own.mean() - other.mean()) / pooled if pooled > 0 else float("nan")
        out.append(
            TargetContrast(
                roi,
                float(own.mean()),
                float(other.mean()),
                float(t),
                float(p),
                float(d),
                len(own),
                len(other),
            )
        )
    return out


def drive(
    measured: Mapping[str, npt.ArrayLike], made_for: Sequence[str | None], control: Sequence[str | None]
) -> list[Drive]:
    """Each target's mean response to its images against the best and median natural controls made for it.

    ``control[k]`` is ``"best_natural"``/``"median_natural"`` for a natural
    control image chosen for target ``made_for[k]``, else None.
    """
    labels, kinds = np.array([t or "" for t in made_for]), np.array([c or "" for c in control])
    out = []
    for roi in sorted({t for t, c in zip(made_for, control, strict=True) if t is not None and c is None}):
        response = np.asarray(measured[roi], dtype=np.float64)
        synthesized = response[(labels == roi) & (kinds == "")]
        best = response[(labels == roi) & (kinds == "best_natural")]
        median = response[(labels == roi) & (kinds == "median_natural")]
        if len(best) and len(median):
            out.append(Drive(roi, float(synthesized.mean()), float(best.mean()), float(median.mean())))
    return out
