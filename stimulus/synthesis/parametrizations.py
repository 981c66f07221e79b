"""How an image is parametrized while it is optimized.

:class:`FourierImage` (the default) holds each image as a spectrum scaled by
1/f, in a decorrelated colour space, squashed to 0..1 by a sigmoid: gradient
steps then change low frequencies and natural colour directions first, which
keeps synthesized images smooth and interpretable (the parametrization of
lucid and lucent). :class:`PixelImage` holds plain pixels (in logit space).
Both start from grey, from noise, or from given images, and produce a batch
(n, 3, size, size) on 0..1 from their parameters, differentiably.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from stimulus.names import InitKind, Parametrization

__all__ = ["FourierImage", "Init", "PixelImage", "make_parametrization"]

Init = InitKind

# Square root of the colour covariance of ImageNet images (lucid's constant), scaled so that its
# largest column has unit norm: a step in the parameters is a step along natural colour directions.
_COLOR_SQRT = np.array([[0.26, 0.09, 0.02], [0.27, 0.00, -0.05], [0.27, -0.09, 0.03]])
_COLOR = _COLOR_SQRT / np.linalg.norm(_COLOR_SQRT, axis=0).max()
_MAGIC = 4.0  # lucid's spectrum scale: keeps initial noise of sd 0.01 near grey
_EDGE = 1e-3  # given images are kept off 0 and 1, where the sigmoid's inverse is infinite


def _logit(images: torch.Tensor) -> torch.Tensor:
    clipped = images.clamp(_EDGE, 1 - _EDGE)
    return torch.log(clipped / (1 - clipped))


class PixelImage(nn.Module):
    """Images as free pixels: ``sigmoid(parameters)``."""

    def __init__(
        self,
        n: int,
        size: int,
        *,
        init: Init | torch.Tensor = "grey",
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        if isinstance(init, torch.Tensor):
            values = _logit(init.to(device=device, dtype=torch.float32))
        elif init == "noise":
            values = torch.randn(n, 3, size, size, generator=generator, device=device) * 0.5
        else:
            values = torch.zeros(n, 3, size, size, device=device)
        self.logits = nn.Parameter(values)

    def forward(self) -> torch.Tensor:
        return torch.sigmoid(self.logits)


class FourierImage(nn.Module):
    """Images as 1/f-scaled spectra in decorrelated colour: ``sigmoid(C irfft(scale * spectrum))``.

    Parameters
    ----------
    n, size : int
        Batch size and square image side.
    decay : float
        Amplitude scale ``1 / f^decay``; 1 gives the spectrum of natural images.
    init : "grey", "noise" or tensor of shape (n, 3, size, size) on 0..1
    """

    scale: torch.Tensor
    color: torch.Tensor

    def __init__(
        self,
        n: int,
        size: int,
        *,
        decay: float = 1.0,
        init: Init | torch.Tensor = "grey",
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        self.size = size
        fy = np.fft.fftfreq(size)[:, None]
        fx = np.fft.rfftfreq(size)[None, :]
        frequencies = np.sqrt(fx * fx + fy * fy)
        scale = 1.0 / np.maximum(frequencies, 1.0 / size) ** decay
        self.register_buffer(
            "scale", torch.tensor(scale, dtype=torch.float32, device=device)[None, None, :, :, None]
        )
        self.register_buffer("color", torch.tensor(_COLOR, dtype=torch.float32, device=device))
        shape = (n, 3, size, size // 2 + 1, 2)
        if isinstance(init, torch.Tensor):
            spectrum = self._spectrum_of(init.to(device=device, dtype=torch.float32))
        elif init == "noise":
            spectrum = torch.randn(shape, generator=generator, device=device) * 0.01
        else:
            spectrum = torch.zeros(shape, device=device)
        self.spectrum = nn.Parameter(spectrum)

    def _spectrum_of(self, images: torch.Tensor) -> torch.Tensor:
        """The parameters that reproduce ``images`` exactly (up to the clipping off 0 and 1)."""
        decorrelated = torch.einsum("nchw,dc->ndhw", _logit(images), torch.linalg.inv(self.color))
        spectrum = torch.fft.rfftn(decorrelated * _MAGIC, s=(self.size, self.size), norm="ortho")
        return torch.view_as_real(spectrum) / self.scale

    def forward(self) -> torch.Tensor:
        spectrum = torch.view_as_complex(self.spectrum) * self.scale[..., 0]
        decorrelated = torch.fft.irfftn(spectrum, s=(self.size, self.size), norm="ortho")
        n = decorrelated.shape[0]
        # (3 x 3) @ (n, 3, H*W): the colour mix as one batched product.
        mixed = (self.color / _MAGIC) @ decorrelated.reshape(n, 3, -1)
        return torch.sigmoid(mixed.reshape(n, 3, self.size, self.size))


def make_parametrization(
    kind: Parametrization,
    n: int,
    size: int,
    *,
    init: Init | torch.Tensor,
    generator: torch.Generator | None,
    device: torch.device | str,
) -> nn.Module:
    """A :class:`FourierImage` or a :class:`PixelImage`."""
    if kind == "fourier":
        return FourierImage(n, size, init=init, generator=generator, device=device)
    return PixelImage(n, size, init=init, generator=generator, device=device)
