"""Batched image encoding: parallel decode + preprocess in workers, overlapped with the encoder."""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Sequence

import torch
from torch.utils.data import DataLoader, Dataset

from pixprompt.data.images import open_rgb
from pixprompt.models.base import VisionLanguageModel
from pixprompt.progress import progress_bar

log = logging.getLogger(__name__)


class _PreprocessedImages(Dataset):
    """Items are (index, pixels or None, error message); a bad file never stops the loader."""

    def __init__(self, paths: Sequence[Path], model: VisionLanguageModel):
        self.paths = paths
        self.preprocess = model.preprocess

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            return index, self.preprocess(open_rgb(self.paths[index])), ""
        except Exception as error:  # any decoding problem is reported per file
            return index, None, f"{type(error).__name__}: {error}".strip()


def _collate(items):
    good = [(i, pixels) for i, pixels, _ in items if pixels is not None]
    failed = [(i, message) for i, pixels, message in items if pixels is None]
    indices = torch.tensor([i for i, _ in good], dtype=torch.long)
    pixels = torch.stack([p for _, p in good]) if good else None
    return indices, pixels, failed


@dataclass
class EncodedBatch:
    """Embeddings of the images that decoded, with their positions in the input list."""

    indices: torch.Tensor
    features: torch.Tensor
    failures: list[tuple[int, str]] = field(default_factory=list)


def default_workers() -> int:
    """Leave one core to the encoder; at least one worker so decoding overlaps encoding."""
    return max(1, min(8, (torch.get_num_threads() or 2) - 1))


def iter_encoded(model: VisionLanguageModel, paths: Sequence[Path], batch_size: int = 32,
                 workers: int | None = None, desc: str = "encode images") -> Iterator[EncodedBatch]:
    """Encode images in batches, yielding each batch's embeddings (and the files that failed)."""
    workers = default_workers() if workers is None else workers
    loader = DataLoader(_PreprocessedImages(paths, model), batch_size=batch_size, num_workers=workers,
                        collate_fn=_collate, pin_memory=model.device.type == "cuda",
                        persistent_workers=False)
    with progress_bar(total=len(paths), desc=desc, unit="img") as bar:
        for indices, pixels, failed in loader:
            features = model.encode_images(pixels) if pixels is not None else torch.empty(0, 0)
            for index, message in failed:
                log.warning("skipped %s: %s", paths[index], message)
            yield EncodedBatch(indices, features, failed)
            bar.update(len(indices) + len(failed))
