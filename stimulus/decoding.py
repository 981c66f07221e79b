"""Decoding by inverting the encoding model: from voxel responses back to an image.

The inverted encoder of paper 002: start from a grey image and descend the
gradient of the squared error between the model's predicted responses and
the given ones, blurring the gradient with a Gaussian at every step so that
the image gains structure instead of high-frequency noise. Voxels are
weighted by the size of their readout (a voxel's predicted response varies
with the norm of its coefficients over standardized features), so that no
voxel dominates by its units. When the image that was shown is known,
:func:`ssim` and the mean squared error say how close the decoding came, and
:func:`identify` whether each decoded image picks its own shown image out of
the others (n-way identification, with a permutation test against chance).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812 (torch's own idiom)

from db.base import ConfigError
from stimulus._filters import gaussian_kernel, separable_filter
from stimulus.encoding import EncodingModel
from stimulus.errors import EncodingInputError, SynthesisError

__all__ = [
    "DecodingConfig",
    "DecodingResult",
    "Identification",
    "decode",
    "gaussian_blur",
    "identify",
    "ssim",
]

Progress = Callable[[int, int], None]


@dataclass(frozen=True, kw_only=True)
class DecodingConfig:
    """Gradient descent on pixels: ``steps`` steps of at most ``lr`` per pixel, decaying to a tenth.

    ``voxels``: ``"selected"`` (those the model predicts above chance, the
    default) or ``"all"``.
    """

    steps: int = 300
    lr: float = 0.05
    blur_sigma: float = 1.5
    voxels: str = "selected"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or not self.lr > 0 or self.blur_sigma < 0:
            raise ConfigError("steps must be at least 1, lr positive and blur_sigma non-negative")
        if self.voxels not in ("selected", "all"):
            raise ConfigError(f"voxels {self.voxels!r} is unknown; use 'selected' or 'all'")


@dataclass(frozen=True)
class Identification:
    """How often decoded images pick out their own image among ``ways`` candidates.

    ``accuracy``: the fraction of decoded images most similar to their own
    candidate (chance ``1 / ways``); ``pairwise``: the fraction of (own, other)
    candidate pairs in which the own one is the more similar (chance 0.5);
    ``null``: ``accuracy`` with the correspondence permuted at random, and
    ``p_value`` the one-sided permutation p-value of ``accuracy`` against it.
    """

    accuracy: float
    pairwise: float
    ways: int
    null: npt.NDArray[np.float64]
    p_value: float

    @property
    def chance(self) -> float:
        return 1.0 / self.ways


@dataclass(frozen=True)
class DecodingResult:
    """Decoded images (n, 3, size, size) on 0..1, the loss per step, and scores against the shown images."""

    images: npt.NDArray[np.float32]
    loss: npt.NDArray[np.float64]
    ssim: npt.NDArray[np.float64] | None
    mse: npt.NDArray[np.float64] | None
    identification: Identification | None = None  # among the shown images, when two or more were


def _as_size(images: npt.ArrayLike, size: int) -> npt.NDArray[np.float32]:
    """Images (n, 3, H, W) resized (bilinear, antialiased) to ``size`` pixels a side, if they are not."""
    pixels = np.asarray(images, dtype=np.float32)
    if pixels.ndim != 4 or pixels.shape[1] != 3:
        raise EncodingInputError(f"images have shape {pixels.shape}; give (n, 3, height, width)")
    if pixels.shape[2:] == (size, size):
        return pixels
    resized = F.interpolate(torch.from_numpy(pixels), size=(size, size), mode="bilinear", antialias=True)
    return resized.numpy()


def identify(
    decoded: npt.ArrayLike,
    candidates: npt.ArrayLike,
    *,
    truth: npt.ArrayLike | None = None,
    permutations: int = 1000,
    seed: int = 0,
) -> Identification:
    """n-way identification of ``decoded`` images (n, 3, H, W) among ``candidates`` (m, 3, H', W').

    ``truth[i]`` is the candidate decoded image ``i`` came from (default: ``i``;
    candidates beyond those are distractors). Similarity is the correlation of
    pixel values, candidates seen at the decoded images' size, as in
    identification by early-visual decoders (Kay et al. 2008).
    """
    images = np.asarray(decoded, dtype=np.float32)
    if images.ndim != 4:
        raise EncodingInputError(f"decoded images have shape {images.shape}; give (n, 3, height, width)")
    pool = _as_size(candidates, images.shape[-1])
    own = np.arange(len(images)) if truth is None else np.asarray(truth, dtype=np.int64)
    if (
        len(pool) < 2
        or own.shape != (len(images),)
        or own.min(initial=0) < 0
        or own.max(initial=0) >= len(pool)
    ):
        raise EncodingInputError(
            f"identification needs at least 2 candidates and, for each of the {len(images)} decoded "
            f"images, the index of its own among the {len(pool)}"
        )

    def standardized(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
        flat = x.reshape(len(x), -1).astype(np.float64)
        flat -= flat.mean(axis=1, keepdims=True)
        unit: npt.NDArray[np.float64] = flat / np.maximum(np.linalg.norm(flat, axis=1, keepdims=True), 1e-12)
        return unit

    similarity = standardized(images) @ standardized(pool).T  # (n, m) pixel correlations

    def scores(labels: npt.NDArray[np.int64]) -> tuple[float, float]:
        mine = similarity[np.arange(len(labels)), labels]
        beaten = (similarity < mine[:, None]).sum(axis=1)  # candidates less similar than the own one
        top = float(np.mean(similarity.argmax(axis=1) == labels))
        return top, float(np.mean(beaten / (len(pool) - 1)))

    accuracy, pairwise = scores(own)
    rng = np.random.default_rng(seed)
    null = np.array([scores(rng.permutation(len(pool))[: len(own)])[0] for _ in range(permutations)])
    p_value = float((1 + np.sum(null >= accuracy)) / (1 + permutations))
    return Identification(accuracy=accuracy, pairwise=pairwise, ways=len(pool), null=null, p_value=p_value)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each channel of (n, c, H, W) blurred by a Gaussian of ``sigma`` pixels (replicated borders)."""
    if sigma <= 0:
        return images
    return separable_filter(images, gaussian_kernel(sigma, images.dtype, images.device), pad=True)


def ssim(a: torch.Tensor | npt.ArrayLike, b: torch.Tensor | npt.ArrayLike) -> npt.NDArray[np.float64]:
    """Structural similarity of image pairs (n, 3, H, W) on 0..1, averaged over channels, shape (n,).

    Wang et al.'s SSIM with an 11-tap Gaussian window of sigma 1.5, K1 0.01,
    K2 0.03 and data range 1, on the valid region (as scikit-image computes
    it with ``gaussian_weights=True, use_sample_covariance=False``).
    """
    x = torch.as_tensor(np.asarray(a, dtype=np.float64))
    y = torch.as_tensor(np.asarray(b, dtype=np.float64))
    if x.shape != y.shape or x.dim() != 4:
        raise EncodingInputError(f"images to compare have shapes {tuple(x.shape)} and {tuple(y.shape)}")
    kernel = gaussian_kernel(1.5, x.dtype, x.device)  # 11 taps, scikit-image's window for sigma 1.5

    def window(z: torch.Tensor) -> torch.Tensor:
        return separable_filter(z, kernel, pad=False)

    c1, c2 = 0.01**2, 0.03**2
    mx, my = window(x), window(y)
    vx, vy, cxy = window(x * x) - mx**2, window(y * y) - my**2, window(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    # The valid positions are the region scikit-image averages (it crops (win_size - 1) / 2 each side).
    return s.mean(dim=(1, 2, 3)).numpy()


def decode(
    model: EncodingModel,
    responses: npt.ArrayLike,
    config: DecodingConfig | None = None,
    *,
    shown: npt.ArrayLike | None = None,
    progress: Progress | None = None,
) -> DecodingResult:
    """Images whose predicted responses match ``responses`` (n, n_voxels).

    Parameters
    ----------
    shown : array of shape (n, 3, H, W) on 0..1, optional
        The images that were shown, to score the decoding: SSIM and MSE, and
        n-way identification among them (:func:`identify`) when there are two or more.
    """
    config = config or DecodingConfig()
    target = np.asarray(responses, dtype=np.float32)
    if target.ndim != 2 or target.shape[1] != model.n_voxels:
        raise EncodingInputError(
            f"responses have shape {target.shape}; the model predicts {model.n_voxels} voxels: "
            f"give (n, {model.n_voxels})"
        )
    if not np.isfinite(target).all():
        raise EncodingInputError("responses to decode contain NaN or infinite values")
    voxels = np.flatnonzero(model.selected_) if config.voxels == "selected" else np.arange(model.n_voxels)
    if len(voxels) == 0:
        raise EncodingInputError(
            "the model selected no voxel above chance, so there is nothing to decode from; use voxels='all'"
        )
    size = model.config.image_size
    reference = None if shown is None else _as_size(shown, size)
    if reference is not None and len(reference) != len(target):
        raise EncodingInputError(f"{len(reference)} shown images for {len(target)} responses; give one each")
    module = model.module(voxels=voxels)
    device = module.coef.device
    goal = torch.from_numpy(target[:, voxels]).to(device)
    weight = 1.0 / module.coef.norm(dim=0).clamp(min=1e-8)
    generator = torch.Generator(device=device).manual_seed(config.seed)
    pixels = (
        0.5 + 0.01 * torch.randn(len(target), 3, size, size, generator=generator, device=device)
    ).requires_grad_()
    losses = []
    for step in range(config.steps):
        loss = (((module(pixels) - goal) * weight).square()).mean()
        if not math.isfinite(float(loss.detach())):
            raise SynthesisError(
                f"decoding diverged at step {step + 1} (loss {float(loss.detach())}); lower lr"
            )
        (gradient,) = torch.autograd.grad(loss, pixels)
        gradient = gaussian_blur(gradient, config.blur_sigma)
        rate = config.lr * (1 - 0.9 * step / max(config.steps - 1, 1))
        with torch.no_grad():
            scale = gradient.abs().amax(dim=(1, 2, 3), keepdim=True).clamp(min=1e-12)
            pixels -= rate * gradient / scale
            pixels.clamp_(0, 1)
        losses.append(float(loss.detach()))
        if progress is not None:
            progress(step + 1, config.steps)
    images = pixels.detach().cpu().numpy()
    scores_ssim, scores_mse, identification = None, None, None
    if reference is not None:
        scores_ssim = ssim(images, reference)
        scores_mse = ((images - reference) ** 2).mean(axis=(1, 2, 3)).astype(np.float64)
        if len(images) >= 2:
            identification = identify(images, reference, seed=config.seed)
    return DecodingResult(
        images=images, loss=np.array(losses), ssim=scores_ssim, mse=scores_mse, identification=identification
    )
