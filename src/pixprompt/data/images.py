"""Finding and opening image files the way users expect (EXIF rotation applied, RGB)."""
from __future__ import annotations

import glob
import logging
import os
import stat
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO

import numpy as np
from PIL import ExifTags, Image, ImageOps

from pixprompt.errors import UsageError

log = logging.getLogger(__name__)

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"})

#: Default decoding budget (`--max-pixels`): 64 megapixels (8000 × 8000, 190 MB decoded) covers phone and
#: most camera photos; larger images are skipped with a message rather than decoded.
DEFAULT_MAX_PIXELS = 64_000_000

_FILE_KINDS = {stat.S_ISFIFO: "a named pipe (FIFO)", stat.S_ISSOCK: "a socket", stat.S_ISCHR: "a character device",
               stat.S_ISBLK: "a block device", stat.S_ISDIR: "a folder"}


class ImageRejected(ValueError):
    """An image pixprompt will not decode under the current settings (too many pixels, too extreme a shape).

    Unlike a damaged file, it depends on settings, so it is never cached as a permanent failure.
    """


def is_lasting_failure(error: BaseException) -> bool:
    """Whether a decoding error is a property of the file's bytes, worth remembering until the file changes.

    I/O errors (permissions, a vanished file, a failing disk: OSErrors with an errno) and settings-dependent
    refusals (`ImageRejected`) are retried on the next run; Pillow's decoding errors are not.
    """
    if isinstance(error, ImageRejected):
        return False
    return not (isinstance(error, OSError) and error.errno is not None)


def path_text(path: str | os.PathLike) -> str:
    """A file name as every output (table, JSON, CSV, Parquet, records) writes it: valid Unicode, one text per name.

    A name that is UTF-8 and has no backslash is written as it is. On POSIX, where names are bytes, a name with bytes
    that are not UTF-8 has each such byte written `\\xNN` and each backslash `\\\\`, and so does a name with a
    backslash: two names never become one, and the bytes can be read back (`path_from_text`)."""
    text = os.fspath(path)
    if os.sep == "\\":  # Windows names are Unicode already, and the backslash is their separator
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    if "\\" not in text and not any("\udc80" <= c <= "\udcff" for c in text):
        return text
    return text.replace("\\", "\\\\").encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def path_from_text(text: str) -> bytes:
    """The bytes of the POSIX file name `path_text` wrote as `text`."""
    if "\\" not in text:
        return text.encode("utf-8")
    out, position = bytearray(), 0
    while position < len(text):
        if text.startswith("\\\\", position):
            out += b"\\"
            position += 2
        elif text.startswith("\\x", position):
            out.append(int(text[position + 2:position + 4], 16))
            position += 4
        else:
            out += text[position].encode("utf-8")
            position += 1
    return bytes(out)


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def walk_images(folder: Path) -> list[Path]:
    """Image files below `folder`, sorted (see `iter_walk`)."""
    return list(iter_walk(folder))


def iter_walk(folder: Path) -> Iterator[Path]:
    """Image files below `folder` in sorted order, yielded folder by folder as the walk goes (nothing is
    listed ahead), following symlinks to folders once; links back to the folder or its ancestors (loops)
    are not followed."""
    ignored: list[Path] = []  # the first 21, for the message
    ignored_count, seen = 0, set()
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
            if is_image_file(Path(name)):
                yield Path(root) / name
                continue
            ignored_count += 1
            if len(ignored) <= 20:
                ignored.append(Path(root) / name)
    if ignored:
        shown = ", ".join(str(p) for p in ignored[:20]) + (" …" if ignored_count > 20 else "")
        log.info("ignored %d file(s) without an image extension under %s: %s", ignored_count, folder, shown)


def check_inputs(inputs: Sequence[str]) -> None:
    """Refuse an input that is neither a file, a folder nor a glob pattern, before any work."""
    for item in inputs:
        path = Path(item).expanduser()
        if not (path.exists() or path.is_symlink() or glob.has_magic(item)):
            raise UsageError(f"{item} does not exist: give image files, folders or glob patterns")


def iter_images(inputs: Iterable[str]) -> Iterator[Path]:
    """Image paths from files, folders (recursively) and glob patterns, in the order given, as a stream:
    folders are walked while the images already found are worked on."""
    for item in inputs:
        path = Path(item).expanduser()
        if path.is_dir():
            yield from iter_walk(path)
        elif path.exists() or path.is_symlink():
            yield path
        elif glob.has_magic(item):
            matches = sorted(Path(p) for p in glob.iglob(os.path.expanduser(item), recursive=True))
            yield from (p for p in matches if p.is_file() and is_image_file(p))


def open_rgb(path: str | os.PathLike, draft_size: int | None = None,
             max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Open an image fully decoded, rotated by its EXIF orientation, as 8-bit RGB (first frame of animations).

    Only regular files are opened: a FIFO or a device named `x.jpg` would block or never end.
    """
    mode = os.stat(path).st_mode
    kind = next((name for test, name in _FILE_KINDS.items() if test(mode)), None)
    if kind:
        raise ImageRejected(f"{kind}, not an image file")
    if os.path.getsize(path) == 0:
        raise ValueError("empty file (0 bytes)")
    return decode_rgb(path, draft_size, max_pixels)


def decode_rgb(source: str | os.PathLike | IO[bytes], draft_size: int | None = None,
               max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Image.Image:
    """`open_rgb` for a path or an open binary file (an upload): EXIF rotation applied, 8-bit RGB.

    The header's size is checked against `max_pixels` before anything is decoded (None: no budget beyond
    Pillow's decompression-bomb limit of about 179 megapixels). With `draft_size`, JPEGs are decoded at the
    smallest of libjpeg's 1/2, 1/4 and 1/8 scales whose sides stay at least `draft_size`: several times
    faster for large photos, but approximate pixels (opt-in).
    """
    with warnings.catch_warnings():
        if max_pixels:  # pixprompt's own budget decides: Pillow's softer bomb warning would only repeat it
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        image = Image.open(source)
        try:
            width, height = image.size
            if max_pixels and width * height > max_pixels:
                raise ImageRejected(f"{width}×{height} is {width * height / 1e6:.0f} megapixels, over the "
                                    f"{max_pixels / 1e6:g}-megapixel decoding budget (raise it with --max-pixels)")
            if draft_size and image.format == "JPEG":
                image.draft("RGB", (draft_size, draft_size))
            image.load()
            # no copy where nothing changes: Pillow holds 4 bytes per pixel and 8 per row, and this one copy is
            # all (README: Messy inputs), so an image costs ~4/3× its RGB size, 4× for a one-pixel-wide strip
            upright = ImageOps.exif_transpose(image) if _orientation(image) != 1 else image
            rgb = _viewer_rgb(upright)
            if rgb is image and getattr(image, "n_frames", 1) > 1:  # an animation keeps its file open: detach
                rgb = image.copy()
        except BaseException:
            image.close()
            raise
        if rgb is not image:
            image.close()
        return rgb


def decoded_bytes(width: int, height: int) -> int:
    """What Pillow holds for a decoded RGB image of this size: 4 bytes per pixel and 8 per row."""
    return height * (4 * width + 8)


def _orientation(image: Image.Image) -> int:
    """The EXIF orientation tag (1: upright, also when there is none or it cannot be read)."""
    try:
        return int(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # a damaged EXIF block: exif_transpose would not use it either
        return 1


def _viewer_rgb(image: Image.Image) -> Image.Image:
    """8-bit RGB as a viewer shows the image: transparency on white, high bit depths and floats scaled."""
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        # flatten transparency onto white, as a viewer shows it, rather than onto black
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    if image.mode.startswith("I;16") or image.mode in ("I", "F"):
        # numpy reads every byte order right; Pillow's own convert clips these modes to 0..255
        values = np.asarray(image).astype(np.float64)
        peak = float(values.max()) if values.size else 0.0
        if image.mode == "F":
            scale = 255.0 if peak <= 1.0 else 1.0 if peak <= 255.0 else 255.0 / peak  # 0–1, 0–255 or wider
        else:
            scale = 255.0 / 65535.0 if peak <= 65535 else 255.0 / peak  # 16-bit, or wider integers
        grey = np.clip(np.rint(values * scale), 0, 255).astype(np.uint8)
        return Image.fromarray(grey, "L").convert("RGB")
    return image if image.mode == "RGB" else image.convert("RGB")


def thumbnail_data_uri(image: Image.Image, size: int = 96) -> str:
    """A small JPEG of `image` as a `data:` URI, for self-contained reports."""
    import base64
    import io

    thumbnail = image.copy()
    thumbnail.thumbnail((size, size))
    buffer = io.BytesIO()
    thumbnail.save(buffer, "JPEG", quality=80)
    return "data:image/jpeg;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def class_folders(root: Path) -> list[Path]:
    """The class folders of an image-folder dataset: its visible subfolders, sorted."""
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def files_by_class(folders: Sequence[Path], label_of: Callable[[str], int]) -> tuple[list[Path], list[int]]:
    """Image paths and labels of class folders; classes whose folder has no images stay classes (warned)."""
    paths, labels, empty = [], [], []
    class_of: dict[str, str] = {}  # each image file (links resolved) → the first class folder holding it
    shared: list[tuple[Path, str, str]] = []
    for folder in folders:
        images = walk_images(folder)
        paths.extend(images)
        labels.extend([label_of(folder.name)] * len(images))
        if not images:
            empty.append(folder.name)
        for image in images:
            first = class_of.setdefault(os.path.realpath(image), folder.name)
            if first != folder.name:
                shared.append((image, first, folder.name))
    if empty and paths:
        log.warning("%d class folder(s) hold no images: %s (they stay candidate classes, with no test images)",
                    len(empty), ", ".join(empty[:10]) + (" …" if len(empty) > 10 else ""))
    if shared:
        image, first, second = shared[0]
        log.warning("%d image(s) are counted in two classes through links, e.g. %s (in %s and %s): each is scored "
                    "once per class folder", len(shared), image, first, second)
    return paths, labels
