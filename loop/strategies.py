"""How a round's images are made: one interface, and a registry of strategies, each after its source.

A strategy gets a :class:`RoundContext` (the current encoding model, the
round's targets, every image shown so far with its measured responses, the
synthesis settings) and returns, for each target, the images to show
(:class:`MadeImage`), each with the image it started from, so that the
report can show how far synthesis moved it.

:data:`STRATEGIES` (the ``[synthesis] strategy`` of a session file):

- ``best-measured``: start from the images that drove each target most so
  far, by measured response, and climb the model's gradient (activation
  maximization as in paper 000, from the best measured images instead of
  noise: the first closed loop). The baseline.
- ``from-noise``: paper 000 as published: from noise (the Fourier
  parametrization's 1/f noise), every round.
- ``screened``: many candidates, screened by the model, then refined: a
  fresh natural pool of ``[synthesis] candidates`` images in the first round
  that synthesizes (``later_candidates`` in each later one) and every image
  shown so far are ranked by the current (refitted) model's predicted
  response of the target; the best ranked start the
  images, which climb the gradient at display resolution (the model sees
  a resized copy, so refining again loses no detail) inside a trust region
  of ``[synthesis] trust_radius`` around the natural image each descends
  from (a reference image moved along the model's gradient while it stays
  near natural images, as BrainACTIV and EGG do; candidates screened by the
  model as in Gu et al. 2023). The refitted model carries what was
  measured: an image shown and measured weak is ranked down the next round.

The controller never passes a strategy anything of the virtual subject.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from loop.config import SynthesisSettings
from loop.evidence import Showing, posterior_means, refinement_outcomes, trust_radius
from loop.plans import PlannedStimulus
from stimulus.images import load_images, resize_pixels

__all__ = [
    "STRATEGIES",
    "Adaptive",
    "BestMeasured",
    "FromNoise",
    "MadeImage",
    "RoundContext",
    "Screened",
    "Strategy",
]

log = logging.getLogger(__name__)

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RoundContext:
    """What a strategy may use to make a round's images (and nothing of the subject)."""

    index: int  # the round, 1-based
    targets: list[str]
    model: Any  # the current EncodingModel
    showings: list[Showing]  # every presentation so far, with its measured ROI responses
    roi_names: list[str]  # the columns of the measured responses
    stimuli: Path  # where the shown images' files are
    origins: dict[str, str]  # each shown synthesized image's natural ancestor (paths in ``stimuli``)
    settings: SynthesisSettings
    images_per_target: int
    seed: int  # the round's: the same session and round give the same images
    pool: tuple[Path, ...] = ()  # a lab's natural candidates (its image set less the training images)

    @property
    def shown(self) -> list[tuple[PlannedStimulus, Array]]:
        """Every image shown so far (in the order first shown) with its measured responses, averaged."""
        return [(showings[0].stimulus, np.mean([s.responses for s in showings], axis=0))
                for showings in self.by_image().values()]  # fmt: skip

    @property
    def later(self) -> bool:
        """Whether an earlier round synthesized already (this one refines what was refined)."""
        return any(showing.stimulus.condition == "synthesized" for showing in self.showings)

    def by_image(self) -> dict[str, list[Showing]]:
        """Each shown image's presentations, by path, in the order first shown."""
        images: dict[str, list[Showing]] = {}
        for showing in self.showings:
            images.setdefault(showing.stimulus.path, []).append(showing)
        return images


@dataclass(frozen=True)
class MadeImage:
    """One image to show, what it was made for, and where it started."""

    target: str
    name: str  # unique in the round (the file name, without extension)
    pixels: npt.NDArray[np.float32]  # (3, H, W) on 0..1
    start: npt.NDArray[np.float32] | None  # (3, H, W): the image synthesis began from (None: noise)
    start_source: str  # what the start was: a shown image's path, a screened candidate, or noise
    predicted: float  # the model's predicted response of the target
    parameters: dict[str, Any]  # how it was made, recorded with the stimulus
    origin: str | None = None  # the shown natural image it descends from; None: its start is its origin

    @property
    def moved(self) -> float | None:
        """Root-mean-square pixel change from the start (0..1 scale); None when it started from noise."""
        if self.start is None:
            return None
        start = self.start
        if start.shape != self.pixels.shape:
            start = resize_pixels(start, self.pixels.shape[-1])
        return float(np.sqrt(np.mean((self.pixels - start) ** 2)))


class Strategy(Protocol):
    """Makes one round's images for its targets."""

    name: ClassVar[str]
    follows: ClassVar[str]  # the paper or practice it follows

    def make(self, context: RoundContext) -> list[MadeImage]: ...


def _climb(
    context: RoundContext,
    starts: npt.NDArray[np.float32] | None,
    sources: Sequence[str],
    *,
    origins: Sequence[str | None] = (),
    trust: tuple[npt.NDArray[np.float32], float | npt.NDArray[np.float64]] | None = None,
    image_size: int | None = None,
    scores: Sequence[float] = (),
) -> list[MadeImage]:
    """Gradient ascent on the model from ``starts`` (targets x images per target, or None for noise).

    With ``trust`` (origin images, a radius or one per image), no image moves
    further than its radius from its origin (:func:`stimulus.synthesis.synthesize`'s
    ``max_move``). ``image_size`` is the side optimized (None: the model's own).
    ``scores``: what the strategy expected of each start (recorded with the image).
    """
    from stimulus.synthesis import Target, synthesize

    settings = context.settings.synthesis(
        images_per_target=context.images_per_target,
        seed=context.seed,
        image_size=image_size,
        later=context.later,
    )
    made = synthesize(
        context.model, [Target(roi=t) for t in context.targets], settings, init_images=starts,
        origins=None if trust is None else trust[0], max_move=None if trust is None else trust[1],
    )  # fmt: skip
    parameters = {**settings.to_dict(), "strategy": context.settings.strategy}
    radii = None if trust is None else np.broadcast_to(np.asarray(trust[1], dtype=np.float64), len(made))
    return [
        MadeImage(
            target=image.target.roi or image.target.label,
            name=image.name,
            pixels=image.pixels.astype(np.float32),
            start=None if starts is None else starts[k],
            start_source=sources[k] if starts is not None else "noise",
            predicted=image.predicted.get(image.target.roi or "", math.nan),
            parameters={
                **parameters,
                "start": sources[k] if starts is not None else "noise",
                **({} if radii is None else {"trust_radius": float(radii[k])}),
                **({"start_score": float(scores[k])} if scores else {}),
            },
            origin=origins[k] if origins else None,
        )
        for k, image in enumerate(made)
    ]


class BestMeasured:
    """From the images that drove each target most so far (measured), up the model's gradient."""

    name: ClassVar[str] = "best-measured"
    follows: ClassVar[str] = "paper 000's activation maximization, started from the best measured images"

    def make(self, context: RoundContext) -> list[MadeImage]:
        n = context.images_per_target
        paths: list[str] = []
        for roi in context.targets:
            column = context.roi_names.index(roi)
            ranked = sorted(context.shown, key=lambda item: -item[1][column])
            paths += [ranked[k % len(ranked)][0].path for k in range(n)]
        starts = load_images([context.stimuli / p for p in paths], context.model.config.image_size)
        return _climb(context, starts, paths)


class FromNoise:
    """Paper 000 as published: every image from noise."""

    name: ClassVar[str] = "from-noise"
    follows: ClassVar[str] = "paper 000 (voxel-weighted activation maximization in Fourier space, from noise)"

    def make(self, context: RoundContext) -> list[MadeImage]:
        return _climb(context, None, ())


class Screened:
    """A fresh natural pool and every image shown so far, ranked by the model; the best ranked refined.

    Refinement keeps to a trust region: no image ends further than
    ``[synthesis] trust_radius`` (RMS pixels) from the natural image it
    descends from, however many rounds refine it again.
    """

    name: ClassVar[str] = "screened"
    follows: ClassVar[str] = (
        "many candidates screened by the model (Gu et al. 2023), the best moved along its gradient while "
        "they stay near natural images (BrainACTIV, EGG)"
    )

    def make(self, context: RoundContext) -> list[MadeImage]:
        size = context.settings.display_size
        ranked = _Ranking(context.model, context.targets, context.images_per_target)
        shown = [stimulus.path for stimulus, _ in context.shown]
        ranked.consider(load_images([context.stimuli / p for p in shown], size), shown, [
            context.origins.get(p, p) for p in shown
        ])  # fmt: skip
        _screen_fresh(ranked, context)
        picks = ranked.best()
        return _climb(
            context, np.stack([pick.image for pick in picks]), [pick.source for pick in picks],
            origins=[pick.origin for pick in picks],
            trust=(_anchors(picks, context), context.settings.trust_radius), image_size=size,
        )  # fmt: skip


class Adaptive:
    """The measurements in the loop: shown images weighed by what was measured, a trust region that learns.

    Every image shown so far is ranked by its posterior response
    (:func:`loop.evidence.posterior_means`: the refitted model's prediction
    and the image's measured showings, each weighed by its estimated error),
    a fresh natural pool (in the first round that synthesizes, and
    ``[synthesis] later_candidates`` in each later one) by the model's
    prediction. The best ranked climb the gradient at display resolution
    inside a trust region around the natural image each descends from; each
    target's radius starts at ``[synthesis] trust_radius`` and, after every
    round, grows by half where the target's images beat its best natural
    control (measured in the same run) and halves where they lost
    (:func:`loop.evidence.trust_radius`). So an image measured strong is
    refined again, one measured weak is dropped, and a target whose model
    misled it is kept close to the natural images that were measured to work.
    """

    name: ClassVar[str] = "adaptive"
    follows: ClassVar[str] = (
        "the measured responses select and bound the next images: empirical-Bayes weighing of model and "
        "measurements, a trust region that widens on success and narrows on failure (TuRBO, Eriksson et al. "
        "2019; Bayesian optimization on real-time fMRI, Lorenz et al. 2016), candidates screened by the "
        "model (Gu et al. 2023)"
    )

    def make(self, context: RoundContext) -> list[MadeImage]:
        size = context.settings.display_size
        ranked = _Ranking(context.model, context.targets, context.images_per_target)
        images = context.by_image()
        paths = list(images)
        # Nothing shown yet (a session started from a model, with no training run): the fresh pool alone.
        pixels = (
            load_images([context.stimuli / p for p in paths], size)
            if paths
            else np.zeros((0, 3, size, size), np.float32)
        )
        predicted = ranked.predict(pixels) if paths else {}
        for roi in context.targets if paths else ():
            column = context.roi_names.index(roi)
            showings = [[s.responses[column] for s in images[p]] for p in paths]
            posterior = posterior_means(predicted[roi], showings)
            log.info(
                "round %d, %s: measured noise sd %.2f, model error sd %.2f",
                context.index, roi, math.sqrt(posterior.noise_var), math.sqrt(posterior.model_var),
            )  # fmt: skip
            ranked.offer(roi, posterior.means, pixels, paths, [context.origins.get(p, p) for p in paths])
        _screen_fresh(ranked, context)
        outcomes = refinement_outcomes(context.showings, context.roi_names)
        radius = {t: trust_radius(outcomes, t, context.settings.trust_radius) for t in context.targets}
        picks = ranked.best()
        return _climb(
            context, np.stack([pick.image for pick in picks]), [pick.source for pick in picks],
            origins=[pick.origin for pick in picks],
            trust=(_anchors(picks, context), np.array([radius[pick.target] for pick in picks])),
            image_size=size, scores=[pick.score for pick in picks],
        )  # fmt: skip


POOL_CHUNK = 250  # natural candidates made at once: 2000 at display size would hold 1.5 GB


def _natural_pool(n: int, size: int, seed: int) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
    """``n`` natural candidates at ``size`` in chunks, each chunk from a seed of its own (yielded with it)."""
    from stimulus.natural import natural_image_set

    for first in range(0, n, POOL_CHUNK):
        chunk_seed = 1_000_003 * (seed + 1) + first
        yield chunk_seed, natural_image_set(min(POOL_CHUNK, n - first), size=size, seed=chunk_seed).pixels


def _screen_fresh(ranked: _Ranking, context: RoundContext) -> None:
    """Offer the round's fresh natural candidates: ``candidates`` in the first round that synthesizes.

    A lab's own images (``context.pool``) when it brought them, as many as there are at most; else the
    built-in natural set.
    """
    fresh = context.settings.later_candidates if context.later else context.settings.candidates
    if context.pool:
        rng = np.random.default_rng(context.seed)
        chosen = sorted(rng.choice(len(context.pool), min(fresh, len(context.pool)), replace=False))
        for first in range(0, len(chosen), POOL_CHUNK):
            paths = [context.pool[k] for k in chosen[first : first + POOL_CHUNK]]
            pixels = load_images(paths, context.settings.display_size)
            ranked.consider(pixels, [f"lab image {path}" for path in paths])
        return
    for chunk, pool in _natural_pool(fresh, context.settings.display_size, context.seed):
        ranked.consider(pool, [f"natural candidate {k} of pool {chunk}" for k in range(len(pool))])


def _anchors(picks: Sequence[_Pick], context: RoundContext) -> npt.NDArray[np.float32]:
    """The natural image each pick descends from (itself when it is one), at display size."""
    size = context.settings.display_size
    return np.stack([
        pick.image if pick.origin is None else load_images([context.stimuli / pick.origin], size)[0]
        for pick in picks
    ])  # fmt: skip


@dataclass(frozen=True)
class _Pick:
    """A start chosen for a target: its score, pixels, where it came from and its natural origin."""

    target: str
    score: float
    image: npt.NDArray[np.float32]
    source: str
    origin: str | None


class _Ranking:
    """The best ``n`` candidates for each target by a score, kept as candidates stream in."""

    def __init__(self, model: Any, targets: list[str], n: int) -> None:
        self.model, self.targets, self.n = model, targets, n
        self.labels = np.asarray(model.roi_labels_)
        self.kept: dict[str, list[_Pick]] = {t: [] for t in targets}  # best first

    def predict(self, images: npt.NDArray[np.float32]) -> dict[str, npt.NDArray[np.float64]]:
        """Each target's predicted (ROI-mean) response to ``images``, seen as the model's training images."""
        size = self.model.config.image_size
        seen = np.stack([resize_pixels(image, size) for image in images])
        predicted = self.model.predict(seen)
        return {roi: predicted[:, self.labels == roi].mean(1).astype(np.float64) for roi in self.targets}

    def consider(
        self, images: npt.NDArray[np.float32], sources: Sequence[str], origins: Sequence[str | None] = ()
    ) -> None:
        """Offer ``images`` to every target, scored by the model's prediction."""
        if not len(images):
            return
        for roi, score in self.predict(images).items():
            self.offer(roi, score, images, sources, origins)

    def offer(
        self,
        roi: str,
        scores: npt.NDArray[np.float64],
        images: npt.NDArray[np.float32],
        sources: Sequence[str],
        origins: Sequence[str | None] = (),
    ) -> None:
        """Keep the best ``n`` of what ``roi`` has kept and ``images`` with their ``scores``."""
        best = np.argsort(-scores, kind="stable")[: self.n]
        merged = self.kept[roi] + [
            _Pick(roi, float(scores[k]), images[k], sources[k], origins[k] if origins else None) for k in best
        ]
        self.kept[roi] = sorted(merged, key=lambda pick: -pick.score)[: self.n]

    def best(self) -> list[_Pick]:
        """Each target's best, targets in order, best first."""
        return [pick for roi in self.targets for pick in self.kept[roi]]


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (BestMeasured(), FromNoise(), Screened(), Adaptive())}
