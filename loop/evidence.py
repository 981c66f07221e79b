"""What the measurements say about the images shown so far: pure functions, no model, no files.

A strategy that uses the measured responses, not only the refitted model,
asks two things of them:

- how strongly did each image drive the target, all evidence weighed?
  :func:`posterior_means` combines the model's prediction (a prior whose
  error is estimated from how far the measurements fall from it) with the
  image's measured showings (whose noise is estimated from the images shown
  more than once): empirical Bayes, per ROI. An image measured often moves
  to its measurement; an image the model predicts well stays near its
  prediction; an image never shown keeps its prediction.
- did the model's refinements hold up when measured? :func:`refinement_outcomes`
  compares, run by run, each target's synthesized images with that target's
  best natural control, measured in the same run, and :func:`trust_radius`
  turns the record into the next round's trust region: wider after every
  round the images beat the control, narrower after every round they lost
  (the success and failure rule of trust-region Bayesian optimization).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from loop.plans import PlannedStimulus

__all__ = [
    "Posterior",
    "RoundOutcome",
    "Showing",
    "noise_variance",
    "posterior_means",
    "refinement_outcomes",
    "trust_radius",
]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Showing:
    """One presentation of an image and the ROI responses measured for it."""

    stimulus: PlannedStimulus
    run: int  # the run's number in the session (1: the training run; k + 1: round k)
    responses: Array  # (n_rois,) percent signal change


@dataclass(frozen=True)
class Posterior:
    """Each image's weighed response in one ROI, and the variances the weights came from."""

    means: Array  # (n_images,)
    noise_var: float  # of one showing's measured response
    model_var: float  # of the model's prediction about the true response


@dataclass(frozen=True)
class RoundOutcome:
    """A target's synthesized images against its best natural control, both measured in one run."""

    run: int
    target: str
    synthesized: float  # mean over the target's images (each averaged over its showings)
    best_natural: float  # mean over the control's showings

    @property
    def success(self) -> bool:
        return self.synthesized > self.best_natural


def noise_variance(showings: Sequence[Array]) -> float:
    """Pooled within-image variance of single showings (each array: one image's showings).

    Images shown once carry no information about the noise and are skipped;
    NaN when no image was shown twice.
    """
    squares, dof = 0.0, 0
    for values in showings:
        values = np.asarray(values, dtype=np.float64)
        if len(values) > 1:
            squares += float(((values - values.mean()) ** 2).sum())
            dof += len(values) - 1
    return squares / dof if dof else float("nan")


def posterior_means(
    predicted: npt.ArrayLike,
    showings: Sequence[npt.ArrayLike],
    *,
    min_model_share: float = 0.05,
) -> Posterior:
    """The posterior mean response of each image from the model's prediction and its showings.

    Parameters
    ----------
    predicted : array of shape (n_images,)
        The model's prediction for each image (the prior mean).
    showings : sequence of n_images arrays
        Each image's measured single-showing responses (an empty array: never shown).
    min_model_share : float
        The model's error variance is at least this share of the variance of
        the measured means, so that a model fitted on the very images it is
        judged on never silences the measurements.

    The noise variance of one showing is pooled over images shown more than
    once (:func:`noise_variance`); the model's error variance is what is left
    of the spread of measured means about their predictions once the
    measurement noise is taken out. Each image's posterior mean weighs its
    prediction by ``1 / model_var`` and its measured mean by ``n / noise_var``.
    """
    prior = np.asarray(predicted, dtype=np.float64)
    values = [np.asarray(s, dtype=np.float64).ravel() for s in showings]
    if len(values) != len(prior):
        raise ValueError(f"{len(prior)} predictions for {len(values)} images' showings")
    counts = np.array([len(v) for v in values], dtype=np.float64)
    measured = counts > 0
    if not measured.any():
        return Posterior(prior.copy(), float("nan"), float("nan"))
    means = np.array([v.mean() if len(v) else np.nan for v in values])
    noise = noise_variance(values)
    spread = float(np.var(means[measured])) if measured.sum() > 1 else 0.0
    if not np.isfinite(noise) or noise <= 0:
        noise = max(spread, 1e-12)  # no repeats: as uncertain as the images differ
    residual = float(np.mean((means[measured] - prior[measured]) ** 2))
    model_var = max(residual - float(np.mean(noise / counts[measured])), min_model_share * spread, 1e-12)
    weight = np.where(measured, counts / noise, 0.0)
    posterior = (prior / model_var + weight * np.nan_to_num(means)) / (1 / model_var + weight)
    return Posterior(posterior, float(noise), float(model_var))


def refinement_outcomes(showings: Sequence[Showing], roi_names: Sequence[str]) -> list[RoundOutcome]:
    """For every run and target: its synthesized images' measured mean against its best natural control's.

    Runs without synthesized images for a target, or without its best
    natural control, give no outcome for it.
    """
    by_run: dict[tuple[int, str], dict[str, dict[str, list[float]]]] = {}
    for showing in showings:
        s = showing.stimulus
        if s.target_roi is None or s.target_roi not in roi_names:
            continue
        if s.condition not in ("synthesized", "best_natural"):
            continue
        value = float(showing.responses[list(roi_names).index(s.target_roi)])
        group = by_run.setdefault((showing.run, s.target_roi), {"synthesized": {}, "best_natural": {}})
        group[s.condition].setdefault(s.path, []).append(value)
    outcomes = []
    for (run, target), group in sorted(by_run.items()):
        made, control = group["synthesized"], group["best_natural"]
        if made and control:
            outcomes.append(
                RoundOutcome(
                    run=run,
                    target=target,
                    synthesized=float(np.mean([np.mean(v) for v in made.values()])),
                    best_natural=float(np.mean([x for v in control.values() for x in v])),
                )
            )
    return outcomes


def trust_radius(
    outcomes: Sequence[RoundOutcome],
    target: str,
    base: float,
    *,
    grow: float = 1.5,
    shrink: float = 0.5,
    bounds: tuple[float, float] = (0.25, 2.0),
) -> float:
    """The next round's trust radius for ``target``: ``base``, grown or shrunk by each round's outcome.

    Each success multiplies it by ``grow``, each failure by ``shrink``; it
    stays within ``bounds`` (multiples of ``base``) after every round.
    """
    low, high = bounds[0] * base, bounds[1] * base
    radius = base
    for outcome in outcomes:
        if outcome.target == target:
            radius = float(np.clip(radius * (grow if outcome.success else shrink), low, high))
    return radius
