"""Batched image encoding: parallel decode + preprocess in workers, overlapped with the encoder."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, Dataset

from pixprompt.data.images import ImageRejected, is_lasting_failure
from pixprompt.models.batching import ShrinkingBatches, default_batch_size
from pixprompt.progress import progress_bar

if TYPE_CHECKING:
    from pixprompt.data.datasets import ImageSource
    from pixprompt.models.base import VisionLanguageModel

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageFailure:
    """An image that could not be encoded; `lasting` when it is the file's own fault (see
    `is_lasting_failure`), so that the cache may remember it until the file changes."""

    index: int
    message: str
    lasting: bool


class _Preprocessed(Dataset):
    """Items are (index, pixels or an ImageFailure); a bad image never stops the loader."""

    def __init__(self, images: ImageSource, indices: Sequence[int], model: VisionLanguageModel):
        self.images = images
        self.indices = indices
        self.preprocess = model.preprocess

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, position: int):
        index = self.indices[position]
        try:
            return index, self.preprocess(self.images.load(index))
        except Exception as error:  # any decoding problem is reported per image
            message = str(error) if isinstance(error, ImageRejected) else f"{type(error).__name__}: {error}"
            # a message quoting a name that is not UTF-8 is written as `path_text` writes names
            message = message.strip().encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
            return index, ImageFailure(index, message, is_lasting_failure(error))


def _collate(items):
    good = [(i, pixels) for i, pixels in items if not isinstance(pixels, ImageFailure)]
    failed = [failure for _, failure in items if isinstance(failure, ImageFailure)]
    indices = torch.tensor([i for i, _ in good], dtype=torch.long)
    pixels = torch.stack([p for _, p in good]) if good else None
    return indices, pixels, failed


@dataclass
class EncodedBatch:
    """Embeddings of the images that decoded, with their indices in the source."""

    indices: torch.Tensor
    features: torch.Tensor
    failures: list[ImageFailure] = field(default_factory=list)


def default_workers() -> int:
    """Decoding processes beside the encoder: cores − 1 (at most 8); none on two cores or fewer, where a
    worker only takes its core from the encoder's threads (measured in BENCHMARKS.md)."""
    cores = torch.get_num_threads() or 1
    return 0 if cores <= 2 else min(8, cores - 1)


def iter_encoded(model: VisionLanguageModel, images: ImageSource, indices: Sequence[int] | None = None,
                 batch_size: int | None = None, workers: int | None = None,
                 desc: str = "encode images", bar: Any = None) -> Iterator[EncodedBatch]:
    """Encode the images at `indices` (all by default) in batches; failures are logged and yielded.

    `batch_size` defaults to the device's (see `default_batch_size`); out-of-memory halves it. Progress
    goes to `bar` (anything with tqdm's `update`) when given, else to a bar of its own.
    """
    indices = list(range(len(images))) if indices is None else list(indices)
    workers = default_workers() if workers is None else workers
    loader = DataLoader(_Preprocessed(images, indices, model),
                        batch_size=batch_size or default_batch_size(model.device),
                        num_workers=workers, collate_fn=_collate, pin_memory=model.device.type == "cuda",
                        prefetch_factor=4 if workers else None)
    encode = ShrinkingBatches(model.encode_images, "images")
    with contextlib.nullcontext(bar) if bar is not None else progress_bar(len(indices), desc, "img") as bar:
        for batch_indices, pixels, failed in loader:
            features = encode(pixels) if pixels is not None else torch.empty(0, 0)
            for failure in failed:
                log.warning("skipped %s: %s", images.describe(failure.index), failure.message)
            yield EncodedBatch(batch_indices, features, failed)
            bar.update(len(batch_indices) + len(failed))
