"""Resize-then-center-crop preprocessing in bounded memory, with the library's own pixels.

CLIP's preprocessing (and torchvision's ImageNet presets) resize the short side to the input size, then
crop the centre. For an elongated image that first resize is enormous: a 1×60000 PNG becomes
224×13,440,000 pixels (about 10 GB) before all but 224×224 of them are thrown away. Pillow can resample
a region of the source straight to the output size (`Image.resize(..., box=...)`), with the filter's
window still reaching outside the region, which is what the full resize computes for those pixels.
So for images whose intermediate resize would be large, pixprompt resizes just the part the crop keeps.
Ordinary photos keep the library's own path.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from PIL import Image
from torchvision import transforms
from torchvision.transforms import functional
from torchvision.transforms._presets import ImageClassification  # what torchvision's weights.transforms() give

#: Intermediate resizes up to this many times the crop's area take the library's own path.
FUSE_ABOVE_CROP_AREAS = 4
#: Half-widths of Pillow's resampling filters, in source pixels at scale 1 (libImaging/Resample.c).
FILTER_SUPPORT = {Image.Resampling.BOX: 0.5, Image.Resampling.BILINEAR: 1.0, Image.Resampling.HAMMING: 1.0,
                  Image.Resampling.BICUBIC: 2.0, Image.Resampling.LANCZOS: 3.0}


def resized_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) after torchvision's `Resize(short_side)`: the short side scaled, the long one truncated."""
    if width <= height:
        return short_side, int(short_side * height / width)
    return int(short_side * width / height), short_side


@dataclass
class ResizeCenterCrop:
    """`Resize(short_side)` then `CenterCrop(crop)` on a PIL image, then `tail` (to-tensor, normalise).

    `__call__` gives the same pixels as the two steps one after the other; for images whose
    intermediate would exceed `fuse_above` pixels it resamples only the cropped region.
    """

    short_side: int
    crop: tuple[int, int]  # (height, width), as torchvision spells it
    resample: Image.Resampling
    tail: Callable[[Image.Image], torch.Tensor]
    reference: Callable[[Image.Image], torch.Tensor]
    fuse_above: int = 0

    def __post_init__(self) -> None:
        self.fuse_above = self.fuse_above or FUSE_ABOVE_CROP_AREAS * self.crop[0] * self.crop[1]

    def __call__(self, image: Image.Image) -> torch.Tensor:
        width, height = image.size
        out_width, out_height = resized_size(width, height, self.short_side)
        crop_height, crop_width = self.crop
        if (out_width * out_height <= self.fuse_above or crop_width > out_width or crop_height > out_height
                or self.resample not in FILTER_SUPPORT):
            return self.reference(image)
        # the offsets torchvision's center_crop takes on the resized image, mapped back onto the source
        top, left = int(round((out_height - crop_height) / 2.0)), int(round((out_width - crop_width) / 2.0))
        scale_x, scale_y = width / out_width, height / out_height
        # Pillow resamples rows first (each row alone), then columns. So: cut the source down to the rows and
        # columns the filters reach (with a margin, so that no window meets the cut), then run the two passes
        # on that cut only. Pillow takes box corners as 32-bit floats: small offsets keep them exact.
        support = FILTER_SUPPORT[self.resample]
        x0, x1 = _reach(left * scale_x, (left + crop_width) * scale_x, scale_x, support, width)
        y0, y1 = _reach(top * scale_y, (top + crop_height) * scale_y, scale_y, support, height)
        cut = image.crop((x0, y0, x1, y1))
        rows = cut.resize((crop_width, cut.height), self.resample,
                          box=(left * scale_x - x0, 0, (left + crop_width) * scale_x - x0, cut.height))
        pixels = rows.resize((crop_width, crop_height), self.resample,
                             box=(0, top * scale_y - y0, crop_width, (top + crop_height) * scale_y - y0))
        return self.tail(pixels)


def _reach(start: float, end: float, scale: float, support: float, size: int) -> tuple[int, int]:
    """The source pixels a resampling filter reads for outputs between `start` and `end`, plus a margin."""
    margin = math.ceil(support * max(scale, 1.0)) + 2
    return max(0, math.floor(start) - margin), min(size, math.ceil(end) + margin)


def _pil_resample(mode: transforms.InterpolationMode) -> Image.Resampling:
    return functional.pil_modes_mapping[mode]


def bounded(transform: Callable[[Image.Image], torch.Tensor]) -> Callable[[Image.Image], torch.Tensor]:
    """`transform` with its leading short-side resize and centre crop done in bounded memory, where it has
    them (open_clip's `Compose` and torchvision's `ImageClassification` presets); otherwise unchanged."""
    if isinstance(transform, transforms.Compose) and len(transform.transforms) >= 2:
        resize, crop, *rest = transform.transforms
        if (isinstance(resize, transforms.Resize) and isinstance(crop, transforms.CenterCrop)
                and resize.max_size is None and _single(resize.size) is not None):
            return ResizeCenterCrop(_single(resize.size), tuple(crop.size), _pil_resample(resize.interpolation),
                                    transforms.Compose(rest), transform)
    if isinstance(transform, ImageClassification) and _single(transform.resize_size) is not None:
        def tail(image: Image.Image) -> torch.Tensor:  # the preset's steps after its crop
            pixels = functional.convert_image_dtype(functional.pil_to_tensor(image), torch.float)
            return functional.normalize(pixels, mean=transform.mean, std=transform.std)

        crop = transform.crop_size[0]
        return ResizeCenterCrop(_single(transform.resize_size), (crop, crop), _pil_resample(transform.interpolation),
                                tail, transform)
    return transform


def _single(size: int | list[int] | tuple[int, ...]) -> int | None:
    """The short side of a `Resize` size given as an int or a one-element list; None for (h, w)."""
    if isinstance(size, int):
        return size
    return size[0] if len(size) == 1 else None
