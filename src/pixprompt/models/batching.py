"""Running a model over a batch in pieces small enough for the device, halving them on out-of-memory."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from pixprompt.errors import UnavailableError

log = logging.getLogger(__name__)

#: Batch sizes that keep a ViT-B tower busy without exhausting memory, by device type.
DEFAULT_BATCH_SIZES = {"cuda": 256, "mps": 64, "cpu": 32}


def default_batch_size(device: torch.device) -> int:
    """The image batch size pixprompt starts with on `device` (halved later if memory runs out)."""
    return DEFAULT_BATCH_SIZES.get(device.type, 32)


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA's OutOfMemoryError, and the CPU/MPS allocators' RuntimeErrors that say the same."""
    if isinstance(error, torch.OutOfMemoryError):
        return True
    message = str(error).lower()
    return isinstance(error, RuntimeError) and ("out of memory" in message or "can't allocate memory" in message)


class ShrinkingBatches:
    """Call `forward` on whole batches until memory runs out; then on slices of half the size (for this
    batch and all later ones), halving again as needed; at one row give up with a clear error."""

    def __init__(self, forward: Callable[[Any], torch.Tensor], what: str):
        self.forward = forward
        self.what = what
        self.size: int | None = None  # no limit until the first out-of-memory error

    def __call__(self, rows: Any) -> torch.Tensor:
        """`rows`: anything sliceable with a length (a tensor batch, a list of prompts)."""
        outputs = []
        start = 0
        while start < len(rows):
            size = min(self.size or len(rows), len(rows))
            try:
                outputs.append(self.forward(rows[start:start + size]))
            except Exception as error:
                if not is_out_of_memory(error):
                    raise
                self._shrink(size, error)
                continue
            start += size
        return torch.cat(outputs)

    def _shrink(self, size: int, error: BaseException) -> None:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        if size == 1:
            raise UnavailableError(
                f"out of memory encoding {self.what} even one at a time ({str(error).splitlines()[0][:160]}): "
                "use a smaller model, --precision fp16, or --device cpu"
            ) from None
        self.size = size // 2
        log.warning("out of memory encoding %s: retrying with batches of %d", self.what, self.size)
