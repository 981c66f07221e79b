"""A lab's own images: a folder or a TSV, checked file by file before a session uses them.

``[training] image_set`` in a session file names one of:

- a folder: every image file in it and in its subfolders (``.png``, ``.jpg``,
  ``.jpeg``, ``.bmp``, ``.tif``, ``.tiff``, ``.webp``), in path order; a file
  in a subfolder takes the subfolder's name as its category;
- a TSV with a ``path`` column (relative to the TSV's folder) and, optionally,
  ``category`` and ``split`` (``train`` or ``test``; rows marked ``test`` are
  kept out of a session's training run).

:func:`read_image_set` opens every file and reports every problem at once,
naming each file: unreadable or not an image, a duplicate of another by
content (SHA-256), smaller than ``min_side`` pixels. Grey, palette and RGBA
images are used as RGB (transparency over black) and listed as converted.
Images are shown as their largest centred square (:func:`stimulus.images.load_image`).
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from stimulus.errors import ImageReadError

__all__ = ["IMAGE_SUFFIXES", "ImageSet", "ImageSetError", "read_image_set"]

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
MIN_SIDE = 64  # pixels: below this an image shown at 256 px is mostly interpolation


class ImageSetError(ImageReadError):
    """An image set that cannot be used as it is; ``problems`` names each bad file."""

    def __init__(self, source: Path, problems: Sequence[str]) -> None:
        head = f"image set {source}: {len(problems)} problem(s): "
        super().__init__(head + "; ".join(problems[:20]) + ("; ..." if len(problems) > 20 else ""))
        self.problems = list(problems)


@dataclass(frozen=True)
class ImageSet:
    """The usable images of a set, in order, each with its category (None: none given) and SHA-256."""

    source: Path
    paths: tuple[Path, ...]
    categories: tuple[str | None, ...]
    sha256: tuple[str, ...]
    converted: tuple[str, ...]  # what was converted to RGB, "path (mode)"

    def __len__(self) -> int:
        return len(self.paths)

    def names(self) -> list[str]:
        """Each image's name: its path inside the set's folder, or as the TSV gives it."""
        if self.source.is_dir():
            return [str(path.relative_to(self.source)) for path in self.paths]
        return [str(path) for path in self.paths]


def read_image_set(source: str | Path, *, min_side: int = MIN_SIDE, split: str | None = "train") -> ImageSet:
    """Every image of ``source`` (a folder or a TSV), checked; :class:`ImageSetError` lists what is wrong.

    ``split``: keep only the TSV rows of this split (rows without one are kept); None keeps all.
    """
    source = Path(source)
    if source.is_dir():
        listed = _folder(source)
    elif source.is_file():
        listed = _table(source, split)
    else:
        raise ImageSetError(
            source, ["it does not exist; give a folder of images or a TSV with a path column"]
        )
    if not listed:
        raise ImageSetError(source, [f"it holds no image files ({', '.join(IMAGE_SUFFIXES)})"])
    problems: list[str] = []
    seen: dict[str, Path] = {}
    kept: list[tuple[Path, str | None, str]] = []
    converted: list[str] = []
    for path, category in listed:
        try:
            data = path.read_bytes()
            with Image.open(path) as image:
                image.load()
                mode, size = image.mode, image.size
        except FileNotFoundError:
            problems.append(f"{path} does not exist")
            continue
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            problems.append(f"{path} cannot be read as an image ({exc})")
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            problems.append(f"{path} is the same image as {seen[digest]}")
            continue
        seen[digest] = path
        if min(size) < min_side:
            problems.append(f"{path} is {size[0]}x{size[1]} pixels, under {min_side} on a side")
            continue
        if mode != "RGB":
            converted.append(f"{path} ({mode})")
        kept.append((path, category, digest))
    if problems:
        raise ImageSetError(source, problems)
    return ImageSet(
        source=source,
        paths=tuple(p for p, _, _ in kept),
        categories=tuple(c for _, c, _ in kept),
        sha256=tuple(d for _, _, d in kept),
        converted=tuple(converted),
    )


def _folder(root: Path) -> list[tuple[Path, str | None]]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    return [(p, p.parent.name if p.parent != root else None) for p in files]


def _table(path: Path, split: str | None) -> list[tuple[Path, str | None]]:
    try:
        rows = list(csv.DictReader(path.read_text().splitlines(), delimiter="\t"))
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageSetError(path, [f"it cannot be read as a TSV ({exc})"]) from None
    if not rows or "path" not in rows[0]:
        raise ImageSetError(
            path, ["it needs a tab-separated header with a path column (and optionally category, split)"]
        )
    listed = []
    for row in rows:
        if split is not None and (row.get("split") or split) != split:
            continue
        listed.append((path.parent / row["path"], row.get("category") or None))
    return listed
