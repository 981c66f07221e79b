"""Activation maximization: images the model predicts will drive a target ROI or voxel.

All images of all targets are optimized together, in batches, with Adam on
their parametrization; each step warps them at random
(:mod:`~stimulus.synthesis.transforms`), reads the folded objective columns
(:mod:`~stimulus.synthesis.objectives`) and, when asked, pushes the images of
one target apart (a diversity term on their features). A batch stops early
when its smoothed objective (less the diversity penalty) has not improved
for ``patience`` steps. Each
finished image is handed to ``on_image`` as soon as its batch is done, so
that a caller writing files keeps everything finished before a failure.
"""

from __future__ import annotations

import io
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from PIL import Image, PngImagePlugin

from db.base import ConfigError, write_atomic
from stimulus.encoding import EncodingModel
from stimulus.errors import SynthesisError, TargetError
from stimulus.names import Parametrization
from stimulus.synthesis.objectives import (
    ObjectiveKind,
    Readout,
    Target,
    build_readout,
    feature_space,
    objective_values,
)
from stimulus.synthesis.parametrizations import Init, make_parametrization
from stimulus.synthesis.transforms import TransformConfig, random_affine

__all__ = ["SynthesisConfig", "SynthesizedImage", "check_models", "png_bytes", "synthesize", "write_png"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]


@dataclass(frozen=True, kw_only=True)
class SynthesisConfig:
    """How images are synthesized. The same config and seed give the same images."""

    objective: ObjectiveKind = "roi-mean"
    images_per_target: int = 4
    steps: int = 256
    lr: float = 0.05
    final_lr: float | None = None  # the rate falls from lr to this along a cosine; None: constant
    parametrization: Parametrization = "fourier"
    init: Init = "noise"
    transforms: TransformConfig = field(default_factory=TransformConfig)
    diversity: float = 0.0
    batch_size: int = 32
    image_size: int | None = None  # the side of the images optimized; None: the model's own
    patience: int = 64
    min_improvement: float = 1e-3
    seed: int = 0

    def __post_init__(self) -> None:
        if self.images_per_target < 1 or self.steps < 1 or self.batch_size < 1 or self.patience < 1:
            raise ConfigError("images_per_target, steps, batch_size and patience must be at least 1")
        if self.final_lr is not None and not 0 < self.final_lr <= self.lr:
            raise ConfigError(f"final_lr must be positive and at most lr ({self.lr}), not {self.final_lr}")
        if not self.lr > 0 or self.diversity < 0:
            raise ConfigError(
                f"lr must be positive and diversity non-negative, not {self.lr}, {self.diversity}"
            )
        if self.parametrization not in ("fourier", "pixel"):
            raise ConfigError(
                f"parametrization {self.parametrization!r} is unknown; use 'fourier' or 'pixel'"
            )
        if self.image_size is not None and self.image_size < 16:
            raise ConfigError(f"image_size {self.image_size} is too small; use 16 pixels or more")
        if self.init not in ("grey", "noise"):
            raise ConfigError(f"init {self.init!r} is unknown; use 'grey', 'noise' or give init images")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SynthesizedImage:
    """One finished image and what produced it.

    Attributes
    ----------
    pixels : ndarray of shape (3, size, size) on 0..1
    target : Target
    index : int
        Its number among the images of its target.
    objective : float
        The objective on the final image, untransformed.
    predicted : dict of ROI name to float
        Every ROI's mean predicted response to the final image.
    steps : int
        Steps run (fewer than asked when it stopped early).
    seed : int
    """

    pixels: npt.NDArray[np.float32]
    target: Target
    index: int
    objective: float
    predicted: dict[str, float]
    steps: int
    seed: int

    @property
    def name(self) -> str:
        return f"{self.target.label}_{self.index:02d}"


def _diversity_penalty(features: torch.Tensor, target_of_image: torch.Tensor) -> torch.Tensor:
    """Mean cosine similarity between the features of images made for the same target."""
    unit = features / features.norm(dim=1, keepdim=True).clamp(min=1e-8)
    similarity = unit @ unit.T
    same = (target_of_image[:, None] == target_of_image[None, :]) & ~torch.eye(
        len(features), dtype=torch.bool, device=features.device
    )
    if not bool(same.any()):
        return features.new_zeros(())
    penalty: torch.Tensor = (similarity * same).sum() / same.sum()
    return penalty


def synthesize(
    models: EncodingModel | Sequence[EncodingModel],
    targets: Sequence[Target],
    config: SynthesisConfig | None = None,
    *,
    init_images: npt.ArrayLike | torch.Tensor | None = None,
    origins: npt.ArrayLike | torch.Tensor | None = None,
    max_move: float | npt.ArrayLike | None = None,
    progress: Progress | None = None,
    on_image: Callable[[SynthesizedImage], None] | None = None,
) -> list[SynthesizedImage]:
    """Synthesize ``config.images_per_target`` images for each target.

    Parameters
    ----------
    models : EncodingModel or sequence of them
        Several are averaged: one per subject in one feature space (their
        readouts fold together), or an ensemble over backbones or layers (each
        space reads its own features; the predictions are averaged).
    targets : sequence of Target
    init_images : array of shape (n, 3, H, W) on 0..1, optional
        Start from these images instead of ``config.init``: one per image to
        make (targets x images per target, in that order) or one for all.
    origins : array of shape (n, 3, H, W) on 0..1, optional
        What ``max_move`` is measured from (default: the start images).
    max_move : float or array of shape (n,), optional
        A trust region: no image may move further than this from its origin
        (root-mean-square pixel difference on 0..1). A step that would take
        an image out is undone for that image; the others go on. So a start
        already outside its region (an image refined before, whose region
        has narrowed since) comes back as it was.
    progress : callable(done_steps, total_steps), optional
    on_image : callable(SynthesizedImage), optional
        Called for each image as soon as its batch is done.
    """
    config = config or SynthesisConfig()
    model_list = [models] if isinstance(models, EncodingModel) else list(models)
    if not targets:
        raise ConfigError("give at least one target")
    readers = _readers(model_list, targets, config.objective)
    readout = readers[0].readout  # the ROI names, baselines and column layout are the same in every reader
    device = readers[0].extractor.backbone.device
    size = config.image_size or readers[0].seen_size
    jobs = [(t, k) for t in range(len(targets)) for k in range(config.images_per_target)]
    starts = _initial_images(init_images, len(jobs), size)
    anchors = _initial_images(origins, len(jobs), size) if origins is not None else starts
    if max_move is not None and anchors is None:
        raise ConfigError("a trust region (max_move) needs start images or origins to measure from")
    radius = (
        None if max_move is None else torch.as_tensor(np.broadcast_to(max_move, len(jobs)).copy()).float()
    )
    roi_index = {name: j for j, name in enumerate(readout.roi_names)}
    total = len(jobs) * config.steps
    done = 0
    results: list[SynthesizedImage] = []
    for chunk, first in enumerate(range(0, len(jobs), config.batch_size)):
        batch = jobs[first : first + config.batch_size]
        seed = config.seed * 1_000_003 + chunk
        generator = torch.Generator(device=device).manual_seed(seed)
        init: Init | torch.Tensor = config.init if starts is None else starts[first : first + len(batch)]
        image = make_parametrization(
            config.parametrization, len(batch), size, init=init, generator=generator, device=device
        )
        optimizer = torch.optim.Adam(image.parameters(), lr=config.lr)
        region = None
        if radius is not None and anchors is not None:
            region = (
                anchors[first : first + len(batch)].to(device),
                radius[first : first + len(batch)].to(device),
            )
        target_of = torch.tensor([t for t, _ in batch], device=device)
        roi_of = torch.tensor([roi_index.get(targets[t].roi or "", -1) for t, _ in batch], device=device)
        best, smoothed, stale, steps_run = -float("inf"), None, 0, 0
        for step in range(config.steps):
            warped = random_affine(image(), config.transforms, generator)
            outputs, features = _read(readers, warped)
            objective = objective_values(outputs, target_of, roi_of, readout, config.objective)
            loss = -objective.sum()
            if config.diversity > 0:
                penalty = torch.stack([_diversity_penalty(f, target_of) for f in features]).mean()
                loss = loss + config.diversity * len(batch) * penalty
            # One read of the loss per step: it checks divergence and feeds early stopping.
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value):
                labels = sorted({targets[t].label for t, _ in batch})
                raise SynthesisError(
                    f"the objective became {-loss_value:.3g} at step {step + 1} "
                    f"for target(s) {', '.join(labels)}; "
                    "lower the learning rate (--lr) or use the fourier parametrization; "
                    f"{len(results)} image(s) finished before this batch are kept"
                )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()  # type: ignore[no-untyped-call]
            if config.final_lr is not None:
                for group in optimizer.param_groups:
                    group["lr"] = _annealed(config.lr, config.final_lr, step, config.steps)
            before = [p.detach().clone() for p in image.parameters()] if region is not None else []
            optimizer.step()
            if region is not None:
                _stay_within(image, before, *region)
            steps_run = step + 1
            done += len(batch)
            if progress is not None:
                progress(done, total)
            value = -loss_value / len(batch)  # the mean objective, less any diversity penalty
            smoothed = value if smoothed is None else 0.9 * smoothed + 0.1 * value
            if smoothed > best + config.min_improvement * max(abs(best), 1e-6):
                best, stale = smoothed, 0
            else:
                stale += 1
                if stale >= config.patience:
                    log.info(
                        "batch %d stopped early at step %d: no improvement in %d steps",
                        chunk,
                        step + 1,
                        stale,
                    )
                    break
        done += (config.steps - steps_run) * len(batch)
        if progress is not None:
            progress(done, total)
        results.extend(
            _finish(
                image,
                readers,
                config,
                targets,
                batch,
                target_of,
                roi_of,
                steps_run,
                seed,
                on_image,
            )
        )
    return results


@dataclass(frozen=True)
class _Reader:
    """One feature space's backbone and readout columns (models that share the space are averaged in it)."""

    extractor: Any
    readout: Readout
    seen_size: int


def _readers(
    models: Sequence[EncodingModel], targets: Sequence[Target], objective: ObjectiveKind
) -> list[_Reader]:
    """One reader per feature space among ``models``, on the first model's device.

    Models of one space (several subjects' on one backbone) fold into one
    readout; models on different backbones (an ensemble) each read their own
    features, and their columns are averaged after the readout. Every model
    must know the same ROIs, in the same order.
    """
    spaces: dict[tuple[object, ...], list[EncodingModel]] = {}
    for model in models:
        spaces.setdefault(feature_space(model), []).append(model)
    device = models[0].extractor.backbone.device
    readers = [
        _Reader(members[0].extractor, build_readout(members, targets, objective).to(device),
                members[0].config.image_size)
        for members in spaces.values()
    ]  # fmt: skip
    names = {tuple(r.readout.roi_names) for r in readers}
    if len(names) > 1:
        raise TargetError(
            "models on different backbones must know the same ROIs in the same order; "
            f"they know {' and '.join(', '.join(n) for n in sorted(names))}"
        )
    return readers


def check_models(
    models: Sequence[EncodingModel], targets: Sequence[Target], objective: ObjectiveKind
) -> None:
    """Refuse, before any work, targets or model combinations that :func:`synthesize` cannot serve.

    :class:`~stimulus.errors.TargetError` names the problem: an ROI or voxel a
    model lacks, an objective that needs ROIs, models that know different ROIs.
    """
    _readers(models, targets, objective)


def _read(readers: Sequence[_Reader], images: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The readout columns (n, n_columns) for ``images``, averaged over spaces, and each space's features."""
    outputs, features = [], []
    for reader in readers:
        raw = torch.cat(reader.extractor.raw(_as_seen(images, reader.seen_size)), dim=1)
        outputs.append(raw @ reader.readout.coef + reader.readout.intercept)
        features.append(raw)
    mean = outputs[0] if len(outputs) == 1 else torch.stack(outputs).mean(0)
    return mean, features


def _annealed(lr: float, final_lr: float, step: int, steps: int) -> float:
    """The rate at ``step`` (from 0): ``lr`` at the first, ``final_lr`` at the last, a cosine between."""
    fraction = step / max(steps - 1, 1)
    return final_lr + 0.5 * (lr - final_lr) * (1 + math.cos(math.pi * fraction))


def _as_seen(images: torch.Tensor, size: int) -> torch.Tensor:
    """Images as the model sees them: resized to its side as its training images were (bicubic, filtered)."""
    if images.shape[-1] == size:
        return images
    seen = torch.nn.functional.interpolate(images, size=(size, size), mode="bicubic", antialias=True)
    return seen.clamp(0, 1)


def _stay_within(
    image: torch.nn.Module, before: list[torch.Tensor], origin: torch.Tensor, radius: torch.Tensor
) -> None:
    """Undo the last step of every image it took further than ``radius`` from ``origin`` (RMS pixels)."""
    with torch.no_grad():
        moved = (image() - origin).pow(2).mean(dim=(1, 2, 3)).sqrt()
        out = moved > radius
        if out.any():
            for parameter, previous in zip(image.parameters(), before, strict=True):
                parameter[out] = previous[out]


def _initial_images(
    init_images: npt.ArrayLike | torch.Tensor | None, n: int, size: int
) -> torch.Tensor | None:
    if init_images is None:
        return None
    starts = torch.as_tensor(np.asarray(init_images, dtype=np.float32))
    if starts.dim() != 4 or starts.shape[1] != 3 or len(starts) not in (1, n):
        raise ConfigError(
            f"init images have shape {tuple(starts.shape)}; expected (1 or {n}, 3, height, width) on 0..1"
        )
    if starts.shape[-2:] != (size, size):
        starts = torch.nn.functional.interpolate(starts, size=(size, size), mode="bilinear", antialias=True)
    return starts.expand(n, -1, -1, -1).clamp(0, 1)


def _finish(
    image: torch.nn.Module,
    readers: Sequence[_Reader],
    config: SynthesisConfig,
    targets: Sequence[Target],
    batch: list[tuple[int, int]],
    target_of: torch.Tensor,
    roi_of: torch.Tensor,
    steps_run: int,
    seed: int,
    on_image: Callable[[SynthesizedImage], None] | None,
) -> list[SynthesizedImage]:
    readout = readers[0].readout
    with torch.no_grad():
        pixels = image()
        outputs, _ = _read(readers, pixels)
        objective = objective_values(outputs, target_of, roi_of, readout, config.objective)
    finished = []
    n_rois = len(readout.roi_names)
    for row, (t, k) in enumerate(batch):
        item = SynthesizedImage(
            pixels=pixels[row].cpu().numpy(),
            target=targets[t],
            index=k,
            objective=float(objective[row]),
            predicted={name: float(outputs[row, j]) for j, name in enumerate(readout.roi_names[:n_rois])},
            steps=steps_run,
            seed=seed,
        )
        finished.append(item)
        if on_image is not None:
            on_image(item)
    return finished


def write_png(
    item: SynthesizedImage,
    folder: Path,
    *,
    display_size: int | None = None,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write one image as PNG (resized to ``display_size`` with Lanczos), atomically, metadata inside.

    The metadata (target, index, objective, every ROI's predicted response,
    steps, seed, and ``extra`` such as the configuration and the model's
    hash) is stored as JSON in the PNG's ``cortexloop`` text chunk.
    """
    metadata = {
        "target": item.target.label,
        "target_roi": item.target.roi,
        "target_voxel": item.target.voxel,
        "index": item.index,
        "objective": item.objective,
        "predicted": item.predicted,
        "steps": item.steps,
        "seed": item.seed,
        **(extra or {}),
    }
    path = folder / f"{item.name}.png"
    write_atomic(path, png_bytes(item.pixels, display_size=display_size, metadata=metadata))
    return path


def png_bytes(
    pixels: npt.NDArray[np.floating],
    *,
    display_size: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> bytes:
    """An image (3, H, W) on 0..1 as PNG bytes, resized with Lanczos, metadata as JSON in a text chunk."""
    array = (pixels.transpose(1, 2, 0) * 255).round().clip(0, 255).astype(np.uint8)
    picture = Image.fromarray(array)
    if display_size is not None and display_size != picture.width:
        picture = picture.resize((display_size, display_size), Image.Resampling.LANCZOS)
    info = PngImagePlugin.PngInfo()
    if metadata is not None:
        info.add_text("cortexloop", json.dumps(metadata, sort_keys=True))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()
