"""Separable Gaussian filtering per channel, shared by feature smoothing, decoding and SSIM."""

from __future__ import annotations

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own idiom)


def gaussian_kernel(
    sigma: float, dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
) -> torch.Tensor:
    """Normalized 1-D Gaussian taps with scipy.ndimage.gaussian_filter's support (truncate=3)."""
    radius = max(1, int(3 * sigma + 0.5))
    taps = torch.arange(-radius, radius + 1, dtype=dtype, device=device)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    return kernel / kernel.sum()


def separable_filter(images: torch.Tensor, kernel: torch.Tensor, *, pad: bool) -> torch.Tensor:
    """Each channel of (n, c, H, W) filtered by ``kernel`` along both axes.

    ``pad=True`` replicates the borders (same size out, scipy's ``mode="nearest"``);
    ``pad=False`` keeps only the positions the whole kernel covers.
    """
    kernel = kernel.to(images.dtype)
    channels = images.shape[1]
    if pad:
        radius = (len(kernel) - 1) // 2
        images = F.pad(images, (radius, radius, radius, radius), mode="replicate")
    x = F.conv2d(images, kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1), groups=channels)
    return F.conv2d(x, kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1), groups=channels)
