"""Finding and opening image files the way users expect (EXIF rotation applied, RGB)."""
from __future__ import annotations

import glob
import os
from collections.abc import Iterable
from pathlib import Path

from PIL import Image, ImageOps

from pixprompt.errors import UsageError

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def walk_images(folder: Path) -> list[Path]:
    """Image files below `folder`, sorted, following symlinks once (loops are not followed twice)."""
    found, seen = [], set()
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen:
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        found.extend(Path(root) / name for name in sorted(files) if is_image_file(Path(name)))
    return found


def collect_images(inputs: Iterable[str]) -> list[Path]:
    """Image paths from files, folders (recursively) and glob patterns, in the order given."""
    paths: list[Path] = []
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            paths.extend(walk_images(path))
        elif path.exists() or path.is_symlink():
            paths.append(path)
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.glob(os.path.expanduser(item), recursive=True))
            paths.extend(p for p in matches if p.is_file() and is_image_file(p))
        else:
            raise UsageError(f"{item} does not exist: give image files, folders or glob patterns")
    if not paths:
        raise UsageError(f"no images found in {', '.join(inputs)}")
    return paths


def open_rgb(path: str | os.PathLike) -> Image.Image:
    """Open an image fully decoded, rotated by its EXIF orientation, as 8-bit RGB (first frame of animations)."""
    with Image.open(path) as image:
        image.load()
        image = ImageOps.exif_transpose(image)
        if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
            # flatten transparency onto white, as a viewer shows it, rather than onto black
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
            return Image.alpha_composite(background, rgba).convert("RGB")
        if image.mode == "I;16" or image.mode == "I":
            return image.point(lambda value: value / 256).convert("L").convert("RGB")
        return image.convert("RGB")
