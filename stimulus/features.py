"""Layer activations reduced to a feature budget, as a differentiable torch module.

:class:`FeatureExtractor` runs a backbone on images, captures the chosen
layers with forward hooks (stopping the network after the last of them), and
reduces each layer to at most ``budget`` features:

- ``"pool"``: adaptive average pooling to ``s x s`` per channel with
  ``s = round(sqrt(budget / channels))``, at least 1 (the adaptive pooling of
  voxel-weighted activation maximization, paper 000), so about ``budget``;
- ``"smooth"``: a Gaussian of sigma ``0.35 d`` per channel, then one sample
  every ``d`` pixels, with ``d`` the smallest integer that fits the budget
  (paper 001);

then optionally ``log(1 + x)`` (applied as ``sign(x) log(1 + |x|)``, which is
the same for the non-negative activations of the paper and keeps negative
ones finite), and standardization with statistics stored from the training
images. Every step is a torch operation, so gradients flow from features back
to pixels.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812 (torch's own idiom)
from torch import nn

from db.base import ConfigError
from stimulus._filters import gaussian_kernel, separable_filter
from stimulus.backbones import Backbone
from stimulus.errors import BackboneError, EncodingInputError
from stimulus.names import ReductionMethod

__all__ = ["FeatureExtractor", "LayerReduction", "ReductionConfig", "extract_features"]

Progress = Callable[[int, int], None]


@dataclass(frozen=True, kw_only=True)
class ReductionConfig:
    """How each layer is brought down to its feature budget."""

    method: ReductionMethod = "pool"
    budget: int = 1000
    log: bool = False
    standardize: bool = True

    def __post_init__(self) -> None:
        if self.method not in ("pool", "smooth"):
            raise ConfigError(f"reduction method {self.method!r} is unknown; use 'pool' or 'smooth'")
        if self.budget < 1:
            raise ConfigError(f"the feature budget per layer must be at least 1, not {self.budget}")


class LayerReduction(nn.Module):
    """One layer's activations (n, C, H, W), (n, T, D) or (n, C) to features (n, p).

    A convolutional map is pooled (or smoothed and subsampled) to the budget; a
    transformer's tokens (n, T, D) are averaged over tokens to D features.

    Parameters
    ----------
    shape : tuple of int
        The layer's output shape for one image: (C, H, W), (T, D) or (C,).
    config : ReductionConfig
    """

    mean: torch.Tensor
    scale: torch.Tensor
    kernel: torch.Tensor

    def __init__(self, shape: tuple[int, ...], config: ReductionConfig) -> None:
        super().__init__()
        self.shape = shape
        self.config = config
        self.grid: tuple[int, int] = (1, 1)
        self.step = 1
        if len(shape) == 3:
            channels, height, width = shape
            if config.method == "pool":
                side = max(1, round(math.sqrt(config.budget / channels)))
                self.grid = (min(side, height), min(side, width))
            else:
                self.step = next(
                    (
                        d
                        for d in range(1, max(height, width) + 1)
                        if channels * math.ceil(height / d) * math.ceil(width / d) <= config.budget
                    ),
                    max(height, width),
                )
                self.grid = (math.ceil(height / self.step), math.ceil(width / self.step))
            self.out_features = channels * self.grid[0] * self.grid[1]
        elif len(shape) == 2:  # (tokens, width), a transformer's: averaged over tokens
            self.out_features = shape[1]
        elif len(shape) == 1:
            self.out_features = shape[0]
        else:
            raise BackboneError(
                f"a layer with output shape {shape} per image cannot be reduced; choose a layer whose "
                "output is (channels,), (tokens, width) or (channels, height, width)"
            )
        sigma = 0.35 * self.step
        self.register_buffer("kernel", gaussian_kernel(sigma))
        self.register_buffer("mean", torch.zeros(self.out_features))
        self.register_buffer("scale", torch.ones(self.out_features))

    def reduce(self, activations: torch.Tensor) -> torch.Tensor:
        """Pooled or smoothed and subsampled, optionally log-compressed; not standardized."""
        x = activations
        if x.dim() == 3:  # (n, tokens, width): pooled over tokens, as a vision transformer's readout pools
            x = x.mean(dim=1)
        if x.dim() == 4:
            if self.config.method == "pool":
                x = F.adaptive_avg_pool2d(x, self.grid)
            elif self.step > 1:
                x = separable_filter(x, self.kernel, pad=True)
                x = self._subsample(x)
        x = x.flatten(start_dim=1)
        if self.config.log:
            x = torch.sign(x) * torch.log1p(x.abs())
        return x

    def _subsample(self, x: torch.Tensor) -> torch.Tensor:
        # Centre the sampling grid: the same number of samples, the margins split evenly.
        height, width = x.shape[-2:]
        top = (height - 1 - (self.grid[0] - 1) * self.step) // 2
        left = (width - 1 - (self.grid[1] - 1) * self.step) // 2
        return x[..., top :: self.step, left :: self.step][..., : self.grid[0], : self.grid[1]]

    def forward(self, activations: torch.Tensor) -> torch.Tensor:
        x = self.reduce(activations)
        if self.config.standardize:
            x = (x - self.mean.to(x.dtype)) / self.scale.to(x.dtype)
        return x

    def set_statistics(self, mean: npt.ArrayLike, std: npt.ArrayLike) -> None:
        """Store the training images' feature means and standard deviations."""
        mean_t = torch.as_tensor(np.asarray(mean), dtype=torch.float32)
        std_t = torch.as_tensor(np.asarray(std), dtype=torch.float32)
        # A feature constant over the training images carries nothing: map it to 0, not to inf.
        floor = float(std_t.max()) * 1e-6 if len(std_t) else 0.0
        std_t = torch.where(std_t > floor, std_t, torch.ones_like(std_t))
        self.mean.copy_(mean_t)
        self.scale.copy_(std_t)


class _Stop(Exception):  # noqa: N818 (a signal, not an error)
    """Raised from the last hook: the layers after it are not needed."""


class FeatureExtractor(nn.Module):
    """Images (n, 3, H, W) on 0..1 in, one feature matrix (n, p_layer) per layer out.

    Parameters
    ----------
    backbone : Backbone
    layers : sequence of str
        Module names, as ``backbone.module.named_modules()`` gives them.
    image_size : int
        Images are resized to this square size (bilinear) when they differ.
    reduction : ReductionConfig
    """

    def __init__(
        self, backbone: Backbone, layers: Sequence[str], image_size: int, reduction: ReductionConfig
    ) -> None:
        super().__init__()
        if not layers:
            raise BackboneError(f"no layers were chosen for {backbone.name}; name at least one")
        if len(set(layers)) != len(layers):
            raise BackboneError(f"layers {list(layers)} name a layer more than once")
        modules = dict(backbone.module.named_modules())
        for name in layers:
            if name not in modules or not name:
                close = difflib.get_close_matches(name, backbone.layer_names, n=3)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise BackboneError(
                    f"{backbone.name} has no layer named {name!r}{hint} "
                    "(`cortexloop model layers` lists them)"
                )
        self.backbone_module = backbone.module
        self.backbone = backbone
        self.layers = tuple(layers)
        self.image_size = image_size
        self.reduction = reduction
        self._captured: dict[str, torch.Tensor] = {}
        self._calls: dict[str, int] = {}
        self._last: str | None = None
        self._modules_by_name = {name: modules[name] for name in self.layers}
        shapes, order = self._probe()
        self.layer_shapes = shapes
        self._last = order[-1]
        self.reduction_modules = nn.ModuleList(
            [LayerReduction(shapes[name], reduction) for name in self.layers]
        )

    def _hook(self, name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: object, output: object) -> None:
            if not isinstance(output, torch.Tensor):
                raise BackboneError(
                    f"layer {name!r} of {self.backbone.name} returns {type(output).__name__}, not a tensor; "
                    "choose a module that outputs one tensor"
                )
            self._captured[name] = output
            self._calls[name] = self._calls.get(name, 0) + 1
            if name == self._last and all(n in self._captured for n in self.layers):
                raise _Stop

        return hook

    def _probe(self) -> tuple[dict[str, tuple[int, ...]], list[str]]:
        """Run one blank image through to learn each layer's shape and the order they run in."""
        probe = torch.zeros(1, 3, self.image_size, self.image_size, device=self.backbone.device)
        self._calls.clear()
        with torch.no_grad():
            captured = self._run(probe)
        repeated = [n for n, count in self._calls.items() if count != 1]
        if repeated:
            raise BackboneError(
                f"layer(s) {repeated} of {self.backbone.name} run more than once per image, so their "
                "output is ambiguous; choose modules that run once (a block, not a shared activation)"
            )
        order = list(captured)
        return {name: tuple(captured[name].shape[1:]) for name in self.layers}, order

    def _run(self, normalized: torch.Tensor) -> dict[str, torch.Tensor]:
        # Hooks live only for this call, so extractors sharing one backbone never see each other's.
        self._captured = {}
        handles = [m.register_forward_hook(self._hook(n)) for n, m in self._modules_by_name.items()]
        try:
            self.backbone_module(normalized)
        except _Stop:
            pass
        finally:
            for handle in handles:
                handle.remove()
        captured, self._captured = self._captured, {}
        missing = [n for n in self.layers if n not in captured]
        if missing:
            raise BackboneError(f"layer(s) {missing} of {self.backbone.name} did not run on the image")
        return captured

    @property
    def reductions(self) -> list[LayerReduction]:
        """One reduction per layer, in layer order."""
        return [cast(LayerReduction, module) for module in self.reduction_modules]

    @property
    def out_features(self) -> tuple[int, ...]:
        """Features per layer, in layer order."""
        return tuple(r.out_features for r in self.reductions)

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Check, resize and normalize images for the backbone."""
        if images.dim() != 4 or images.shape[1] != 3:
            raise EncodingInputError(
                f"images have shape {tuple(images.shape)}; expected (n, 3, height, width) on 0..1"
            )
        if images.shape[-2:] != (self.image_size, self.image_size):
            images = F.interpolate(
                images, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
            )
        return self.backbone.normalize(images)

    def activations(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        """Each layer's output, before any reduction (for maps over the image, such as ScoreCAM's)."""
        return self._run(self.prepare(images))

    def raw(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Reduced but not standardized features of each layer."""
        captured = self._run(self.prepare(images))
        return [red.reduce(captured[name]) for name, red in zip(self.layers, self.reductions, strict=True)]

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        captured = self._run(self.prepare(images))
        return [red(captured[name]) for name, red in zip(self.layers, self.reductions, strict=True)]


def extract_features(
    extractor: FeatureExtractor,
    images: npt.ArrayLike | torch.Tensor,
    *,
    batch_size: int = 32,
    standardized: bool = True,
    progress: Progress | None = None,
) -> list[npt.NDArray[np.float32]]:
    """Features of many images, in batches without gradients.

    Parameters
    ----------
    images : array of shape (n, 3, H, W) on 0..1
    standardized : bool
        False gives the reduced features before standardization (to compute
        the statistics from).

    Returns
    -------
    list of ndarray of shape (n, p_layer), one per layer
    """
    pixels = images if isinstance(images, torch.Tensor) else torch.as_tensor(np.asarray(images))
    if pixels.dim() != 4 or pixels.shape[1] != 3:
        raise EncodingInputError(f"images have shape {tuple(pixels.shape)}; expected (n, 3, height, width)")
    if not bool(torch.isfinite(pixels).all()):
        raise EncodingInputError("images contain NaN or infinite pixel values")
    device = extractor.backbone.device
    outputs: list[list[npt.NDArray[np.float32]]] = [[] for _ in extractor.layers]
    n = pixels.shape[0]
    with torch.no_grad():
        for start in range(0, n, batch_size):
            batch = pixels[start : start + batch_size].to(device=device, dtype=torch.float32)
            layers = extractor(batch) if standardized else extractor.raw(batch)
            for store, values in zip(outputs, layers, strict=True):
                store.append(values.cpu().numpy())
            if progress is not None:
                progress(min(start + batch_size, n), n)
    return [np.concatenate(store).astype(np.float32, copy=False) for store in outputs]
