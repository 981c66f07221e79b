"""Per-ROI saliency: which parts of an image drive an ROI, through the encoding model (papers 003, 004).

An ROI's saliency map is the magnitude of the gradient of its predicted mean
response with respect to the pixels, averaged over noisy copies of the image
(SmoothGrad: single gradients are speckled), summed over colour channels,
blurred a little and normalized to sum to 1 over the image, so that maps of
different ROIs compare as distributions. Two ROIs' maps of one image are
compared by the symmetric Kullback-Leibler divergence: 0 when they attend to the
same places. Every ROI's map is made from the same noisy copies, and one forward
pass through the backbone serves all the ROIs.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from stimulus.decoding import gaussian_blur
from stimulus.encoding import EncodingModel
from stimulus.errors import EncodingInputError

__all__ = ["SaliencyConfig", "roi_saliency", "symmetric_kl"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class SaliencyConfig:
    """SmoothGrad: ``samples`` noisy copies with noise of ``noise`` (pixel units); ``blur_sigma`` pixels."""

    samples: int = 16
    noise: float = 0.1
    blur_sigma: float = 1.5
    seed: int = 0


def roi_saliency(
    model: EncodingModel,
    images: npt.ArrayLike,
    rois: Sequence[str],
    config: SaliencyConfig | None = None,
) -> dict[str, npt.NDArray[np.float64]]:
    """Each ROI's saliency maps of ``images`` (n, 3, H, W) on 0..1.

    Maps have the model's input size (n, size, size), and each sums to 1.
    """
    config = config or SaliencyConfig()
    labels = np.asarray(model.roi_labels_)
    unknown = [roi for roi in rois if not (labels == roi).any()]
    if unknown or not rois:
        raise EncodingInputError(
            f"the model has no voxels of {', '.join(unknown) or 'any ROI named'}; its ROIs are "
            f"{', '.join(dict.fromkeys(labels.tolist()))}"
        )
    size = model.config.image_size
    pixels = torch.as_tensor(np.asarray(images, dtype=np.float32))
    if pixels.dim() != 4 or pixels.shape[1] != 3:
        raise EncodingInputError(f"images have shape {tuple(pixels.shape)}; expected (n, 3, height, width)")
    if pixels.shape[-2:] != (size, size):
        pixels = torch.nn.functional.interpolate(pixels, size=(size, size), mode="bilinear", antialias=True)
    members = [np.flatnonzero(labels == roi) for roi in rois]
    module = model.module(voxels=np.concatenate(members))
    device = module.coef.device
    # Each ROI's columns in the module's output, so that one forward pass serves every ROI.
    bounds = np.cumsum([0, *(len(m) for m in members)])
    columns = [slice(int(a), int(b)) for a, b in itertools.pairwise(bounds)]
    generator = torch.Generator().manual_seed(config.seed)
    totals = [torch.zeros(len(pixels), size, size) for _ in rois]
    for _ in range(config.samples):  # the same noisy copies for every ROI
        noisy = (pixels + config.noise * torch.randn(pixels.shape, generator=generator)).to(device)
        noisy.requires_grad_()
        outputs = module(noisy)
        for k, column in enumerate(columns):
            (gradient,) = torch.autograd.grad(
                outputs[:, column].mean(dim=1).sum(), noisy, retain_graph=k < len(columns) - 1
            )
            totals[k] += gradient.abs().sum(dim=1).cpu()
    maps: dict[str, npt.NDArray[np.float64]] = {}
    for roi, total in zip(rois, totals, strict=True):
        blurred = gaussian_blur(total[:, None], config.blur_sigma)[:, 0].double()
        maps[roi] = (blurred / blurred.sum(dim=(1, 2), keepdim=True).clamp(min=1e-30)).numpy()
    return maps


def symmetric_kl(p: npt.ArrayLike, q: npt.ArrayLike, *, floor: float = 1e-12) -> FloatArray:
    """``KL(p||q) + KL(q||p)`` of maps (n, H, W) that each sum to 1, per map (nats)."""
    a = np.clip(np.asarray(p, dtype=np.float64), floor, None)
    b = np.clip(np.asarray(q, dtype=np.float64), floor, None)
    result: FloatArray = ((a - b) * (np.log(a) - np.log(b))).sum(axis=(-2, -1))
    return result
