"""Natural images made from the photographs that ship with scikit-image and scikit-learn.

No dataset is downloaded: the photographs are files inside the installed
packages, and :func:`natural_crops` cuts as many different stimuli from them
as a training run needs (random square crops of random size and position,
mirrored at random), reproducibly from a seed.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from PIL import Image

from stimulus.errors import ImageReadError

__all__ = ["CATEGORIES", "NaturalImageSet", "natural_crops", "natural_image_set", "photograph_paths"]

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


# --- a categorized natural-image set ---------------------------------------------------------------

CATEGORIES = ("face", "animal", "scene", "object", "texture")
# Which photographs (and which procedural makers, below) stand for each category.
_CATEGORY_PHOTOS = {
    "animal": ("chelsea.png",),
    "scene": ("china.jpg", "rocket.jpg"),
    "object": ("coffee.png", "coins.png", "flower.jpg", "motorcycle_left.png"),
    "texture": ("brick.png", "grass.png", "gravel.png"),
}


@dataclass(frozen=True)
class NaturalImageSet:
    """Images with the category each was made to show (for selectivity checks and balanced runs).

    ``pixels`` has shape (n, 3, size, size) on 0..1; ``categories[k]`` is one
    of :data:`CATEGORIES`; ``sources[k]`` says what image ``k`` was cut or drawn from.
    """

    pixels: npt.NDArray[np.float32]
    categories: tuple[str, ...]
    sources: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.categories)

    def of(self, category: str) -> npt.NDArray[np.intp]:
        """Indices of the images of one category."""
        return np.flatnonzero(np.asarray(self.categories) == category)


def natural_image_set(n: int, *, size: int = 128, seed: int = 0) -> NaturalImageSet:
    """``n`` distinct images, as many of each category as ``n`` allows, reproducibly from ``seed``.

    Faces are the LFW faces that ship with scikit-image; animals, scenes,
    objects and textures are crops of the bundled photographs (a crop keeps
    most of the photograph, so it still shows what the photograph shows),
    mixed with procedural ones: landscapes and building facades for scenes,
    single shapes on plain grounds for objects, 1/f noise, gratings and
    checkerboards for textures, silhouettes for animals. Every image is
    different: positions, sizes, colours and phases are drawn per image.
    """
    if n < 1 or size < 16:
        raise ValueError(f"n ({n}) must be positive and size ({size}) at least 16")
    rng = np.random.default_rng(seed)
    photos: dict[str, Image.Image] = {}
    for path in photograph_paths():
        with Image.open(path) as image:
            photos[path.name] = image.convert("RGB")
    faces = _lfw_faces()
    pixels = np.empty((n, 3, size, size), dtype=np.float32)
    categories, sources = [], []
    for k in range(n):
        category = CATEGORIES[k % len(CATEGORIES)]
        image, source = _make(category, k // len(CATEGORIES), photos, faces, size, rng)
        pixels[k] = np.clip(image, 0.0, 1.0).transpose(2, 0, 1)
        categories.append(category)
        sources.append(source)
    order = rng.permutation(n)  # interleave categories unpredictably, as a run would
    return NaturalImageSet(
        pixels[order], tuple(categories[i] for i in order), tuple(sources[i] for i in order)
    )


def _lfw_faces() -> npt.NDArray[np.float32]:
    path = _package_dir("skimage") / "data" / "lfw_subset.npy"
    try:
        data = np.load(path)
    except OSError as exc:
        raise ImageReadError(
            f"the bundled LFW faces {path} cannot be read ({exc}); reinstall scikit-image"
        ) from exc
    return np.asarray(data[:100], dtype=np.float32)  # the first 100 are faces, the rest are not


def _crop(
    photo: Image.Image, size: int, rng: np.random.Generator, smallest: float
) -> npt.NDArray[np.float32]:
    width, height = photo.size
    side = int(min(width, height) * rng.uniform(smallest, 1.0))
    left = int(rng.integers(0, width - side + 1))
    top = int(rng.integers(0, height - side + 1))
    crop = photo.crop((left, top, left + side, top + side)).resize((size, size), Image.Resampling.BICUBIC)
    if rng.random() < 0.5:
        crop = crop.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return np.asarray(crop, dtype=np.float32) / 255.0


def _make(
    category: str,
    k: int,
    photos: dict[str, Image.Image],
    faces: npt.NDArray[np.float32],
    size: int,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.float32], str]:
    """Image number ``k`` of a category, (size, size, 3) on 0..1, and where it came from."""
    if category == "face":
        face = faces[k % len(faces)]
        tile = Image.fromarray((face * 255).astype(np.uint8)).resize((size, size), Image.Resampling.BICUBIC)
        grey = np.asarray(tile, dtype=np.float32)[..., None] / 255.0
        tint = rng.uniform(0.85, 1.0, size=3).astype(np.float32) * np.array([1.0, 0.9, 0.8], np.float32)
        image = grey * tint
        if rng.random() < 0.5:
            image = image[:, ::-1]
        return image, f"lfw face {k % len(faces)}"
    photo_share = {"animal": 0.7, "scene": 0.5, "object": 0.6, "texture": 0.5}[category]
    if rng.random() < photo_share:
        name = _CATEGORY_PHOTOS[category][int(rng.integers(len(_CATEGORY_PHOTOS[category])))]
        return _crop(
            photos[name], size, rng, smallest=0.6 if category != "texture" else 0.3
        ), f"crop of {name}"
    maker = {"animal": _silhouette, "scene": _scene, "object": _shape, "texture": _texture}[category]
    return maker(size, rng)


def _ramp(
    size: int, top: npt.NDArray[np.float32], bottom: npt.NDArray[np.float32]
) -> npt.NDArray[np.float32]:
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    return np.broadcast_to(top * (1 - t) + bottom * t, (size, size, 3)).copy()


def _ridge(size: int, rng: np.random.Generator, roughness: float) -> npt.NDArray[np.float32]:
    """A fractal skyline (midpoint displacement), one height per column, 0..1 from the top."""
    n = 1 << int(np.ceil(np.log2(size)))
    line = np.zeros(n + 1, dtype=np.float32)
    line[[0, n]] = rng.uniform(0.3, 0.6, 2)
    step, scale = n, 0.3
    while step > 1:
        half = step // 2
        line[half::step] = (line[:-1:step] + line[step::step]) / 2 + rng.normal(
            0, scale, len(line[half::step])
        )
        step, scale = half, scale * roughness
    return np.interp(np.linspace(0, n, size), np.arange(n + 1), line).astype(np.float32)


def _scene(size: int, rng: np.random.Generator) -> tuple[npt.NDArray[np.float32], str]:
    rows = np.arange(size, dtype=np.float32)[:, None] / size
    sky = _ramp(size, np.array([0.35, 0.55, 0.9], np.float32) * rng.uniform(0.8, 1.1),
                np.array([0.85, 0.9, 0.95], np.float32))  # fmt: skip
    image = sky
    if rng.random() < 0.5:  # a landscape: mountain ranges fading with distance, then the ground
        for depth in range(3):
            ridge = _ridge(size, rng, 0.55) * 0.5 + 0.15 + 0.15 * depth
            colour = np.array([0.35, 0.4, 0.45], np.float32) * (1 + 0.3 * (2 - depth)) * rng.uniform(0.7, 1.0)
            if depth == 2:
                colour = np.array([0.25, 0.45, 0.2], np.float32) * rng.uniform(0.7, 1.2)
            mask = rows >= ridge[None, :]
            image = np.where(mask[..., None], colour * (0.8 + 0.4 * rng.random((size, size, 1))), image)
        return image.astype(np.float32), "procedural landscape"
    # A street: building facades with rows of windows above a road.
    horizon = int(size * rng.uniform(0.75, 0.85))
    x = 0
    while x < size:
        width = int(size * rng.uniform(0.2, 0.45))
        top = int(size * rng.uniform(0.1, 0.45))
        wall = rng.uniform(0.35, 0.85, 3).astype(np.float32)
        image[top:horizon, x : x + width] = wall
        pitch = max(4, size // int(rng.integers(8, 14)))
        glass = rng.uniform(0.1, 0.35, 3).astype(np.float32)
        for wy in range(top + pitch // 2, horizon - pitch, pitch):
            for wx in range(x + pitch // 3, x + width - pitch // 2, pitch):
                image[wy : wy + pitch // 2, wx : wx + pitch // 2] = glass
        x += width
    image[horizon:] = np.float32(0.3) + np.float32(0.05) * rng.random((size - horizon, size, 1))
    return image.astype(np.float32), "procedural street"


def _shape(size: int, rng: np.random.Generator) -> tuple[npt.NDArray[np.float32], str]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    ground = rng.uniform(0.6, 0.95, 3).astype(np.float32)
    image = np.broadcast_to(ground, (size, size, 3)).copy()
    cx, cy = rng.uniform(0.35, 0.65, 2)
    rx, ry = rng.uniform(0.15, 0.3, 2)
    angle = rng.uniform(0, np.pi)
    u = (xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)
    v = -(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)
    kind = int(rng.integers(3))
    if kind == 0:
        inside = (u / rx) ** 2 + (v / ry) ** 2 <= 1
    elif kind == 1:
        inside = (np.abs(u) <= rx) & (np.abs(v) <= ry)
    else:
        inside = (np.abs(u) / rx + np.abs(v) / ry) <= 1
    colour = rng.uniform(0.05, 0.8, 3).astype(np.float32)
    shading = 1.0 - 0.4 * np.clip(u / rx, -1, 1)[..., None]  # lit from one side
    image = np.where(inside[..., None], colour * shading, image)
    return image.astype(np.float32), f"procedural {('ellipse', 'box', 'diamond')[kind]}"


def _silhouette(size: int, rng: np.random.Generator) -> tuple[npt.NDArray[np.float32], str]:
    """The bundled horse silhouette, placed, scaled and coloured at random."""
    from skimage import data as skdata

    horse = ~skdata.horse()  # type: ignore[no-untyped-call]  # True on the animal
    side = int(size * rng.uniform(0.6, 0.95))
    mask = (
        np.asarray(Image.fromarray(horse.astype(np.uint8) * 255).resize((side, side)), dtype=np.float32) / 255
    )
    image = np.broadcast_to(rng.uniform(0.5, 0.95, 3).astype(np.float32), (size, size, 3)).copy()
    top, left = (int(v) for v in rng.integers(0, size - side + 1, 2))
    colour = rng.uniform(0.05, 0.45, 3).astype(np.float32)
    region = image[top : top + side, left : left + side]
    image[top : top + side, left : left + side] = region * (1 - mask[..., None]) + colour * mask[..., None]
    if rng.random() < 0.5:
        image = image[:, ::-1]
    return image, "horse silhouette"


def _texture(size: int, rng: np.random.Generator) -> tuple[npt.NDArray[np.float32], str]:
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size
    kind = int(rng.integers(3))
    if kind == 0:  # 1/f noise, coloured
        spectrum = rng.normal(size=(3, size, size)) + 1j * rng.normal(size=(3, size, size))
        f = np.sqrt(np.fft.fftfreq(size)[:, None] ** 2 + np.fft.fftfreq(size)[None, :] ** 2)
        f[0, 0] = 1.0
        noise = np.real(np.fft.ifft2(spectrum / f**1.2)).transpose(1, 2, 0)
        noise = (noise - noise.mean()) / (noise.std() * 6) + 0.5
        return noise.astype(np.float32), "procedural 1/f noise"
    angle, cycles = rng.uniform(0, np.pi), rng.uniform(3, 16)
    phase = rng.uniform(0, 2 * np.pi)
    if kind == 1:
        wave = np.sin(2 * np.pi * cycles * (xx * np.cos(angle) + yy * np.sin(angle)) + phase)
        name = "procedural grating"
    else:
        wave = np.sign(np.sin(2 * np.pi * cycles * xx + phase) * np.sin(2 * np.pi * cycles * yy + phase))
        name = "procedural checkerboard"
    contrast = rng.uniform(0.2, 0.5)
    colour = rng.uniform(0.6, 1.0, 3).astype(np.float32)
    return ((0.5 + contrast * wave)[..., None] * colour).astype(np.float32), name
