"""Random, differentiable transforms applied at every step of synthesis.

An image that drives the model only at one exact position, scale and angle
exploits the network rather than showing what it prefers. Each step, every
image is jittered, scaled, rotated and cropped at random (one affine warp,
``grid_sample`` with reflected borders), on the model's device, so that only
what survives these changes is reinforced (the robustness transforms of
lucid and lucent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F  # noqa: N812 (torch's own idiom)

from db.base import ConfigError

__all__ = ["TransformConfig", "random_affine"]


@dataclass(frozen=True, kw_only=True)
class TransformConfig:
    """Ranges of the random transforms; all zero (and scale 1, 1) disables them.

    ``jitter`` is a fraction of the image side; ``scale`` the range of zoom
    (above 1 crops); ``rotate_deg`` the largest rotation either way.
    """

    jitter: float = 0.06
    scale: tuple[float, float] = (0.9, 1.1)
    rotate_deg: float = 10.0

    def __post_init__(self) -> None:
        if not 0 <= self.jitter < 0.5 or self.rotate_deg < 0:
            raise ConfigError(
                f"jitter must be in [0, 0.5) and rotate_deg >= 0, not {self.jitter}, {self.rotate_deg}"
            )
        if not 0 < self.scale[0] <= self.scale[1]:
            raise ConfigError(f"scale must be a range (low, high) with 0 < low <= high, not {self.scale}")

    @property
    def identity(self) -> bool:
        return self.jitter == 0 and self.scale == (1.0, 1.0) and self.rotate_deg == 0


def random_affine(
    images: torch.Tensor, config: TransformConfig, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Each image (n, 3, H, W) warped by its own random jitter, zoom and rotation."""
    if config.identity:
        return images
    n = images.shape[0]
    device = images.device

    def uniform(low: float, high: float) -> torch.Tensor:
        return low + (high - low) * torch.rand(n, generator=generator, device=device)

    zoom = uniform(*config.scale)
    angle = uniform(-config.rotate_deg, config.rotate_deg) * (math.pi / 180)
    shift = 2 * config.jitter
    tx, ty = uniform(-shift, shift), uniform(-shift, shift)
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    theta = torch.stack([torch.stack([cos, -sin, tx], dim=1), torch.stack([sin, cos, ty], dim=1)], dim=1)
    grid = F.affine_grid(theta.to(images.dtype), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
