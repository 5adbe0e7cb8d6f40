"""Finding and opening image files the way users expect (EXIF rotation applied, RGB)."""
from __future__ import annotations

import glob
import logging
import os
from collections.abc import Iterable
from pathlib import Path
from typing import IO

from PIL import Image, ImageOps

from pixprompt.errors import UsageError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def walk_images(folder: Path) -> list[Path]:
    """Image files below `folder`, sorted, following symlinks to folders once; links back to the folder or
    its ancestors (loops) are not followed."""
    found, ignored, seen = [], [], set()
    top = os.path.realpath(folder)
    for root, dirs, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(root)
        if real in seen or (real != top and (top + os.sep).startswith(real + os.sep)):
            if real not in seen:  # a link back to an ancestor would pull in the folders beside this one
                log.warning("not following %s: it links back to %s, which holds it", root, real)
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in sorted(files):
            (found if is_image_file(Path(name)) else ignored).append(Path(root) / name)
    if ignored:
        shown = ", ".join(str(p) for p in ignored[:20]) + (" …" if len(ignored) > 20 else "")
        log.info("ignored %d file(s) without an image extension under %s: %s", len(ignored), folder, shown)
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


def open_rgb(path: str | os.PathLike, draft_size: int | None = None) -> Image.Image:
    """Open an image fully decoded, rotated by its EXIF orientation, as 8-bit RGB (first frame of animations)."""
    if os.path.getsize(path) == 0:
        raise ValueError("empty file (0 bytes)")
    return decode_rgb(path, draft_size)


def decode_rgb(source: str | os.PathLike | IO[bytes], draft_size: int | None = None) -> Image.Image:
    """`open_rgb` for a path or an open binary file (an upload): EXIF rotation applied, 8-bit RGB.

    With `draft_size`, JPEGs are decoded at the smallest of libjpeg's 1/2, 1/4 and 1/8 scales whose sides
    stay at least `draft_size`: several times faster for large photos, but approximate pixels (opt-in).
    Pillow refuses images over its decompression-bomb limit (about 179 megapixels) before decoding.
    """
    with Image.open(source) as image:
        if draft_size and image.format == "JPEG":
            image.draft("RGB", (draft_size, draft_size))
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


def thumbnail_data_uri(image: Image.Image, size: int = 96) -> str:
    """A small JPEG of `image` as a `data:` URI, for self-contained reports."""
    import base64
    import io

    thumbnail = image.copy()
    thumbnail.thumbnail((size, size))
    buffer = io.BytesIO()
    thumbnail.save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")
