"""Natural images made from the photographs that ship with scikit-image and scikit-learn.

No dataset is downloaded: the photographs are files inside the installed
packages, and :func:`natural_crops` cuts as many different stimuli from them
as a training run needs (random square crops of random size and position,
mirrored at random), reproducibly from a seed.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from stimulus.errors import ImageReadError

__all__ = ["natural_crops", "photograph_paths"]

# Photographs of scenes, objects, animals and textures; drawings and text are left out.
_SKIMAGE = (
    "astronaut.png", "brick.png", "camera.png", "chelsea.png", "coffee.png", "coins.png", "grass.png",
    "gravel.png", "hubble_deep_field.jpg", "ihc.png", "moon.png", "motorcycle_left.png", "retina.jpg",
    "rocket.jpg",
)  # fmt: skip
_SKLEARN = ("china.jpg", "flower.jpg")


def _package_dir(package: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImageReadError(
            f"the photographs come from the package {package}, which is not installed; install it in "
            "cortexloop's environment"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def photograph_paths() -> list[Path]:
    """The bundled photographs, in a fixed order."""
    paths = [_package_dir("skimage") / "data" / name for name in _SKIMAGE]
    paths += [_package_dir("sklearn") / "datasets" / "images" / name for name in _SKLEARN]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise ImageReadError(f"bundled photograph(s) missing: {', '.join(missing)}; reinstall the package")
    return paths


def natural_crops(n: int, *, size: int = 128, seed: int = 0) -> npt.NDArray[np.float32]:
    """``n`` natural images, shape (n, 3, size, size) on 0..1.

    Each is a square crop covering 35-100 % of the shorter side of a
    photograph chosen in turn, at a random position, mirrored with
    probability one half; grey photographs stay grey in RGB.
    """
    if n < 1 or size < 8:
        raise ValueError(f"n ({n}) must be positive and size ({size}) at least 8")
    rng = np.random.default_rng(seed)
    photos = []
    for path in photograph_paths():
        with Image.open(path) as image:
            photos.append(image.convert("RGB"))
    out = np.empty((n, 3, size, size), dtype=np.float32)
    order = rng.permutation(n) % len(photos)
    for k in range(n):
        photo = photos[order[k]]
        width, height = photo.size
        side = int(min(width, height) * rng.uniform(0.35, 1.0))
        left = int(rng.integers(0, width - side + 1))
        top = int(rng.integers(0, height - side + 1))
        crop = photo.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
        if rng.random() < 0.5:
            crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        out[k] = np.asarray(crop, dtype=np.float32).transpose(2, 0, 1) / 255.0
    return out
