"""Messy image files built on the fly: the ones users' photo folders really contain.

`UNREADABLE` kinds must be skipped with a warning; `ODD_BUT_VALID` kinds must decode to RGB as a
viewer shows them. Each builder writes one file at `path` (its suffix chosen by the builder) and
returns the path it wrote.
"""
from __future__ import annotations

import io
import os
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

Builder = Callable[[Path], Path]


def _jpeg_bytes(size=(64, 48), colour=(200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG")
    return buffer.getvalue()


def zero_byte(path: Path) -> Path:
    path = path.with_suffix(".jpg")
    path.write_bytes(b"")
    return path


def truncated_jpeg(path: Path) -> Path:
    path = path.with_suffix(".jpg")
    path.write_bytes(_jpeg_bytes()[:300])
    return path


def text_named_jpg(path: Path) -> Path:
    path = path.with_suffix(".jpg")
    path.write_text("this is a shopping list, not a photo\n")
    return path


def dangling_link(path: Path) -> Path:
    path = path.with_suffix(".png")
    path.symlink_to(path.parent / "moved-away-long-ago.png")
    return path


def decompression_bomb(path: Path) -> Path:
    """A PNG whose header claims 20000×20000 pixels (a real one would need 1.2 GB to decode)."""
    path = path.with_suffix(".png")
    buffer = io.BytesIO()
    Image.new("RGB", (1, 1)).save(buffer, "PNG")
    data = bytearray(buffer.getvalue())
    data[16:24] = struct.pack(">II", 20000, 20000)  # IHDR width and height
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))  # IHDR checksum over type + fields
    path.write_bytes(bytes(data))
    return path


def jpeg_claiming(width: int, height: int) -> bytes:
    """A small JPEG whose frame header (SOF0) claims `width`×`height`: what a hostile upload sends."""
    data = bytearray(_jpeg_bytes((16, 16)))
    sof = data.index(b"\xff\xc0")
    data[sof + 5:sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def over_pixel_budget(path: Path) -> Path:
    """631 bytes claiming 11000×11000 (121 MP): inside Pillow's warn-only band, over pixprompt's budget."""
    path = path.with_suffix(".jpg")
    path.write_bytes(jpeg_claiming(11000, 11000))
    return path


def fifo_named_jpg(path: Path) -> Path:
    """A named pipe called `x.jpg`: opening it for reading would block forever."""
    path = path.with_suffix(".jpg")
    os.mkfifo(path)
    return path


def elongated_png(path: Path, width: int = 1, height: int = 60000) -> Path:
    """A few hundred bytes of PNG whose short-side resize would take gigabytes."""
    path = path.with_suffix(".png")
    Image.new("RGB", (width, height), (30, 160, 90)).save(path)
    return path


def png_with_alpha(path: Path) -> Path:
    path = path.with_suffix(".png")
    image = Image.new("RGBA", (40, 40), (0, 0, 255, 255))
    image.paste((0, 0, 0, 0), (0, 0, 20, 40))  # left half fully transparent
    image.save(path)
    return path


def palette(path: Path) -> Path:
    path = path.with_suffix(".png")
    Image.new("RGB", (40, 30), (10, 200, 10)).convert("P", palette=Image.Palette.ADAPTIVE).save(path)
    return path


def greyscale(path: Path) -> Path:
    path = path.with_suffix(".png")
    Image.new("L", (30, 40), 128).save(path)
    return path


def cmyk_jpeg(path: Path) -> Path:
    path = path.with_suffix(".jpg")
    Image.new("CMYK", (40, 40), (0, 255, 255, 0)).save(path, "JPEG")
    return path


def png_16_bit(path: Path) -> Path:
    path = path.with_suffix(".png")
    Image.fromarray(np.full((30, 30), 65535, dtype=np.uint16)).save(path)
    return path


def tiff_16_bit_big_endian(path: Path) -> Path:
    """A 16-bit greyscale TIFF stored big-endian (mode I;16B), mid-grey."""
    path = path.with_suffix(".tif")
    Image.frombytes("I;16B", (30, 30), np.full((30, 30), 32896, dtype=">u2").tobytes()).save(path)
    return path


def float_zero_to_one(path: Path) -> Path:
    """A 32-bit float TIFF with values in 0–1 (mode F), as scientific tools write them: 0.5 is mid-grey."""
    path = path.with_suffix(".tif")
    Image.fromarray(np.full((30, 30), 0.5, dtype=np.float32), "F").save(path)
    return path


def exif_rotated(path: Path) -> Path:
    """Stored 60×20 with EXIF orientation 6 (rotate 90° clockwise to view): shown 20×60."""
    path = path.with_suffix(".jpg")
    image = Image.new("RGB", (60, 20), (250, 250, 0))
    exif = Image.Exif()
    exif[0x0112] = 6
    image.save(path, "JPEG", exif=exif.tobytes())
    return path


def animated_gif(path: Path) -> Path:
    """Two frames, red then blue: the first frame is the picture."""
    path = path.with_suffix(".gif")
    frames = [Image.new("RGB", (30, 30), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)
    return path


def one_pixel(path: Path) -> Path:
    path = path.with_suffix(".png")
    Image.new("RGB", (1, 1), (90, 90, 90)).save(path)
    return path


UNREADABLE: dict[str, Builder] = {
    "zero-byte": zero_byte,
    "truncated-jpeg": truncated_jpeg,
    "text-named-jpg": text_named_jpg,
    "dangling-link": dangling_link,
    "decompression-bomb": decompression_bomb,
    "over-pixel-budget": over_pixel_budget,
    "fifo": fifo_named_jpg,
}

ODD_BUT_VALID: dict[str, Builder] = {
    "png-alpha": png_with_alpha,
    "palette": palette,
    "greyscale": greyscale,
    "cmyk-jpeg": cmyk_jpeg,
    "png-16-bit": png_16_bit,
    "tiff-16-bit-big-endian": tiff_16_bit_big_endian,
    "tiff-float-0-1": float_zero_to_one,
    "exif-rotated": exif_rotated,
    "animated-gif": animated_gif,
    "one-pixel": one_pixel,
}


def write_non_images(folder: Path) -> list[Path]:
    """Files a photo folder collects besides photos."""
    files = [folder / "notes.txt", folder / "Thumbs.db", folder / "labels.csv"]
    for file in files:
        file.write_text("not an image\n")
    return files


def write_photos(folder: Path, count: int, colour: tuple[int, int, int], seed: int) -> list[Path]:
    """`count` small noisy images around `colour` (enough signal for a random model to separate classes)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(count):
        pixels = np.clip(np.array(colour) + rng.normal(0, 40, (24, 24, 3)), 0, 255).astype(np.uint8)
        paths.append(folder / f"photo-{i:03d}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths
