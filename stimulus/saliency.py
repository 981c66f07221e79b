"""Per-ROI saliency: which parts of an image drive an ROI, through the encoding model (papers 003, 004).

An ROI's saliency map is the magnitude of the gradient of its predicted mean
response with respect to the pixels, averaged over noisy copies of the image
(SmoothGrad: single gradients are speckled), summed over colour channels,
blurred a little and normalized to sum to 1 over the image, so that maps of
different ROIs compare as distributions. Two ROIs' maps of one image are
compared by the symmetric Kullback-Leibler divergence: 0 when they attend to the
same places. Every ROI's map is made from the same noisy copies, and one forward
pass through the backbone serves all the ROIs.

:func:`roi_scorecam` asks the model instead of its gradient (Score-CAM, Wang et
al. 2020): each channel of a backbone layer, upsampled to the image and scaled to
0..1, masks the image; the ROI's predicted response to the masked image, above its
response to a black one and per unit of the image shown, weighs that channel's
mask, and the weighted sum of the masks is the map. It needs no gradient, so it
is not speckled, and it shows which parts of the image the ROI's prediction holds
on to when the rest is taken away; its maps are coarser, as the layer's are.
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

__all__ = ["SaliencyConfig", "ScoreCamConfig", "roi_saliency", "roi_scorecam", "symmetric_kl"]

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True, kw_only=True)
class SaliencyConfig:
    """SmoothGrad: ``samples`` noisy copies with noise of ``noise`` (pixel units); ``blur_sigma`` pixels."""

    samples: int = 16
    noise: float = 0.1
    blur_sigma: float = 1.5
    seed: int = 0


@dataclass(frozen=True, kw_only=True)
class ScoreCamConfig:
    """Score-CAM: masks from ``layer`` (default: the model's last layer with a spatial map), the ``channels``
    most active channels of each image (all when 0), scored ``batch_size`` masked images at a time."""

    layer: str | None = None
    channels: int = 64
    batch_size: int = 64


def _checked(
    model: EncodingModel, images: npt.ArrayLike, rois: Sequence[str]
) -> tuple[torch.Tensor, list[npt.NDArray[np.intp]]]:
    """Images at the model's size, and each ROI's voxels; a clear error for an ROI the model lacks."""
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
    return pixels, [np.flatnonzero(labels == roi) for roi in rois]


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
    size = model.config.image_size
    pixels, members = _checked(model, images, rois)
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


def roi_scorecam(
    model: EncodingModel,
    images: npt.ArrayLike,
    rois: Sequence[str],
    config: ScoreCamConfig | None = None,
) -> dict[str, npt.NDArray[np.float64]]:
    """Each ROI's Score-CAM maps of ``images`` (n, 3, H, W) on 0..1: (n, size, size), each summing to 1.

    A channel's gain is the ROI's predicted mean response to the image masked by
    it, minus the response to a black image, per unit of the mask's area; its
    weight is the softmax of the gains in units of their standard deviation (a
    response has no class probabilities' scale), zero where the gain is not
    positive. An image whose masks all lower the ROI's response gets a flat map.
    """
    config = config or ScoreCamConfig()
    pixels, members = _checked(model, images, rois)
    size = model.config.image_size
    extractor = model.extractor
    spatial = [name for name in extractor.layers if len(extractor.layer_shapes[name]) == 3]
    layer = config.layer or (spatial[-1] if spatial else None)
    if layer is None or layer not in spatial:
        raise EncodingInputError(
            f"Score-CAM needs a layer with a spatial map; the model's are {', '.join(spatial) or 'none'}"
        )
    module = model.module(voxels=np.concatenate(members))
    device = module.coef.device
    bounds = np.cumsum([0, *(len(m) for m in members)])
    maps = {roi: np.zeros((len(pixels), size, size)) for roi in rois}
    with torch.no_grad():
        baseline = module(torch.zeros(1, 3, size, size, device=device))
        floor = [baseline[0, a:b].mean() for a, b in itertools.pairwise(bounds)]
        for n, image in enumerate(pixels.to(device)):
            activation = extractor.activations(image[None])[layer][0]  # (channels, h, w)
            if config.channels and config.channels < len(activation):
                activation = activation[
                    activation.mean(dim=(1, 2)).argsort(descending=True)[: config.channels]
                ]
            masks = torch.nn.functional.interpolate(
                activation[:, None], size=(size, size), mode="bilinear", align_corners=False
            )[:, 0]
            low = masks.amin(dim=(1, 2), keepdim=True)
            span = masks.amax(dim=(1, 2), keepdim=True) - low
            masks = torch.where(span > 0, (masks - low) / span.clamp(min=1e-12), torch.zeros_like(masks))
            area = masks.mean(dim=(1, 2)).clamp(min=1e-6)
            scores = torch.cat(
                [module(image[None] * chunk[:, None]) for chunk in torch.split(masks, config.batch_size)]
            )
            for roi, (a, b), zero in zip(rois, itertools.pairwise(bounds), floor, strict=True):
                # The gain per unit of image shown: else the masks that show most of the image win for
                # every ROI alike. Then Score-CAM's softmax, in units of the gains' spread.
                gain = (scores[:, a:b].mean(dim=1) - zero) / area
                weights = torch.softmax((gain - gain.max()) / gain.std().clamp(min=1e-12), dim=0) * (gain > 0)
                weighted = (weights[:, None, None] * masks).sum(dim=0).clamp(min=0).double().cpu()
                total = float(weighted.sum())
                maps[roi][n] = (weighted / total).numpy() if total > 0 else 1.0 / (size * size)
    return maps


def symmetric_kl(p: npt.ArrayLike, q: npt.ArrayLike, *, floor: float = 1e-12) -> FloatArray:
    """``KL(p||q) + KL(q||p)`` of maps (n, H, W) that each sum to 1, per map (nats)."""
    a = np.clip(np.asarray(p, dtype=np.float64), floor, None)
    b = np.clip(np.asarray(q, dtype=np.float64), floor, None)
    result: FloatArray = ((a - b) * (np.log(a) - np.log(b))).sum(axis=(-2, -1))
    return result
