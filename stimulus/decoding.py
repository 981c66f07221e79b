"""Decoding by inverting the encoding model: from voxel responses back to an image.

The inverted encoder of paper 002: start from a grey image and descend the
gradient of the squared error between the model's predicted responses and
the given ones, blurring the gradient with a Gaussian at every step so that
the image gains structure instead of high-frequency noise. Voxels are
weighted by the size of their readout (a voxel's predicted response varies
with the norm of its coefficients over standardized features), so that no
voxel dominates by its units. When the image that was shown is known,
:func:`ssim` and the mean squared error say how close the decoding came.
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

__all__ = ["DecodingConfig", "DecodingResult", "decode", "gaussian_blur", "ssim"]

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
class DecodingResult:
    """Decoded images (n, 3, size, size) on 0..1, the loss per step, and scores against the shown images."""

    images: npt.NDArray[np.float32]
    loss: npt.NDArray[np.float64]
    ssim: npt.NDArray[np.float64] | None
    mse: npt.NDArray[np.float64] | None


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
        The images that were shown, to score the decoding (SSIM and MSE).
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
    module = model.module(voxels=voxels)
    device = module.coef.device
    size = model.config.image_size
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
    scores_ssim, scores_mse = None, None
    if shown is not None:
        reference = np.asarray(shown, dtype=np.float32)
        if reference.shape != images.shape:
            reference_t = F.interpolate(
                torch.from_numpy(reference), size=(size, size), mode="bilinear", antialias=True
            )
            reference = reference_t.numpy()
        scores_ssim = ssim(images, reference)
        scores_mse = ((images - reference) ** 2).mean(axis=(1, 2, 3)).astype(np.float64)
    return DecodingResult(images=images, loss=np.array(losses), ssim=scores_ssim, mse=scores_mse)
