"""Image files in, pixel arrays out: (n, 3, size, size) floats on 0..1."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image, UnidentifiedImageError

from stimulus.errors import ImageReadError

__all__ = ["file_sha256", "load_image", "load_images", "resize_pixels", "square_crop"]


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def square_crop(image: Image.Image, size: int) -> Image.Image:
    """The largest centred square of ``image``, resized to ``size`` x ``size`` in RGB."""
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = image.convert("RGB").crop((left, top, left + side, top + side))
    return square.resize((size, size), Image.Resampling.BICUBIC) if side != size else square


def load_image(path: str | Path, size: int) -> npt.NDArray[np.float32]:
    """One image file as an array of shape (3, size, size) on 0..1.

    The largest centred square is kept and resized; grey and palette images
    become RGB.
    """
    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            pixels = np.asarray(square_crop(image, size), dtype=np.float32) / 255.0
    except FileNotFoundError:
        raise ImageReadError(f"image {path} does not exist") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise ImageReadError(f"image {path} cannot be decoded ({exc}); replace or remove it") from None
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))


def load_images(paths: Sequence[str | Path], size: int) -> npt.NDArray[np.float32]:
    """Image files as an array of shape (n, 3, size, size) on 0..1, in the order given."""
    if not paths:
        raise ImageReadError("no image files were given")
    return np.stack([load_image(p, size) for p in paths])


def resize_pixels(
    pixels: npt.NDArray[np.floating[Any]],
    size: int,
    *,
    resample: Image.Resampling = Image.Resampling.BICUBIC,
) -> npt.NDArray[np.float32]:
    """(3, H, W) pixels on 0..1 resized to (3, size, size) through 8-bit RGB, as a PNG would hold them."""
    if pixels.shape[1:] == (size, size):
        return pixels.astype(np.float32)
    image = Image.fromarray((np.clip(pixels, 0, 1).transpose(1, 2, 0) * 255).round().astype(np.uint8))
    resized = image.resize((size, size), resample)
    return np.asarray(resized, dtype=np.float32).transpose(2, 0, 1) / 255.0
