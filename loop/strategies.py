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

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Protocol

import numpy as np
import numpy.typing as npt

from loop.config import SynthesisSettings
from loop.plans import PlannedStimulus
from stimulus.images import load_images, resize_pixels

__all__ = ["STRATEGIES", "BestMeasured", "FromNoise", "MadeImage", "RoundContext", "Screened", "Strategy"]

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RoundContext:
    """What a strategy may use to make a round's images (and nothing of the subject)."""

    index: int  # the round, 1-based
    targets: list[str]
    model: Any  # the current EncodingModel
    shown: list[tuple[PlannedStimulus, Array]]  # every image shown so far, with its mean measured responses
    roi_names: list[str]  # the columns of the measured responses
    stimuli: Path  # where the shown images' files are
    origins: dict[str, str]  # each shown synthesized image's natural ancestor (paths in ``stimuli``)
    settings: SynthesisSettings
    images_per_target: int
    seed: int  # the round's: the same session and round give the same images


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
    trust: tuple[npt.NDArray[np.float32], float] | None = None,
    image_size: int | None = None,
) -> list[MadeImage]:
    """Gradient ascent on the model from ``starts`` (targets x images per target, or None for noise).

    With ``trust`` (origin images, radius), no image moves further than the
    radius from its origin (:func:`stimulus.synthesis.synthesize`'s ``max_move``).
    ``image_size`` is the side optimized (None: the model's own).
    """
    from stimulus.synthesis import Target, synthesize

    settings = context.settings.synthesis(
        images_per_target=context.images_per_target, seed=context.seed, image_size=image_size
    )
    made = synthesize(
        context.model, [Target(roi=t) for t in context.targets], settings, init_images=starts,
        origins=None if trust is None else trust[0], max_move=None if trust is None else trust[1],
    )  # fmt: skip
    parameters = {**settings.to_dict(), "strategy": context.settings.strategy}
    if trust is not None:
        parameters["trust_radius"] = trust[1]
    return [
        MadeImage(
            target=image.target.roi or image.target.label,
            name=image.name,
            pixels=image.pixels.astype(np.float32),
            start=None if starts is None else starts[k],
            start_source=sources[k] if starts is not None else "noise",
            predicted=image.predicted.get(image.target.roi or "", math.nan),
            parameters={**parameters, "start": sources[k] if starts is not None else "noise"},
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
        n = context.images_per_target
        shown = [stimulus.path for stimulus, _ in context.shown]
        ranked = _Ranking(context.model, context.targets, n)
        ranked.consider(load_images([context.stimuli / p for p in shown], size), shown, [
            context.origins.get(p, p) for p in shown
        ])  # fmt: skip
        first = not any(stimulus.condition == "synthesized" for stimulus, _ in context.shown)
        fresh = context.settings.candidates if first else context.settings.later_candidates
        for chunk, pool in _natural_pool(fresh, size, context.seed):
            ranked.consider(pool, [f"natural candidate {k} of pool {chunk}" for k in range(len(pool))])
        picks = ranked.best()
        starts = np.stack([image for image, _, _ in picks])
        origins = [origin for _, _, origin in picks]
        anchors = np.stack([
            image if origin is None else load_images([context.stimuli / origin], size)[0]
            for image, _, origin in picks
        ])  # fmt: skip
        trust = (anchors, context.settings.trust_radius)
        sources = [source for _, source, _ in picks]
        return _climb(context, starts, sources, origins=origins, trust=trust, image_size=size)


POOL_CHUNK = 250  # natural candidates made at once: 2000 at display size would hold 1.5 GB


def _natural_pool(n: int, size: int, seed: int) -> Iterator[tuple[int, npt.NDArray[np.float32]]]:
    """``n`` natural candidates at ``size`` in chunks, each chunk from a seed of its own (yielded with it)."""
    from stimulus.natural import natural_image_set

    for first in range(0, n, POOL_CHUNK):
        chunk_seed = 1_000_003 * (seed + 1) + first
        yield chunk_seed, natural_image_set(min(POOL_CHUNK, n - first), size=size, seed=chunk_seed).pixels


class _Ranking:
    """The best ``n`` candidates for each target by the model's prediction, kept as candidates stream in."""

    def __init__(self, model: Any, targets: list[str], n: int) -> None:
        self.model, self.targets, self.n = model, targets, n
        self.labels = np.asarray(model.roi_labels_)
        # target -> [(predicted, image, source, origin)], best first
        self.kept: dict[str, list[tuple[float, npt.NDArray[np.float32], str, str | None]]] = {
            t: [] for t in targets
        }

    def consider(
        self, images: npt.NDArray[np.float32], sources: Sequence[str], origins: Sequence[str | None] = ()
    ) -> None:
        if not len(images):
            return
        size = self.model.config.image_size
        seen = np.stack([resize_pixels(image, size) for image in images])  # as the model's training images
        predicted = self.model.predict(seen)
        for roi in self.targets:
            score = predicted[:, self.labels == roi].mean(1)
            best = np.argsort(-score)[: self.n]
            merged = self.kept[roi] + [
                (float(score[k]), images[k], sources[k], origins[k] if origins else None) for k in best
            ]
            self.kept[roi] = sorted(merged, key=lambda item: -item[0])[: self.n]

    def best(self) -> list[tuple[npt.NDArray[np.float32], str, str | None]]:
        """(image, source, origin) of each target's best, targets in order, best first."""
        return [
            (image, source, origin) for roi in self.targets for _, image, source, origin in self.kept[roi]
        ]


STRATEGIES: dict[str, Strategy] = {s.name: s for s in (BestMeasured(), FromNoise(), Screened())}
