"""Ctrl-C in the middle of image encoding, as the tests simulate it."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from pixprompt.models.base import VisionLanguageModel


@contextlib.contextmanager
def ctrl_c_after(monkeypatch: pytest.MonkeyPatch, batches: int) -> Iterator[None]:
    """Within the block, image encoding raises KeyboardInterrupt once `batches` batches are done."""
    original = VisionLanguageModel.encode_images
    done = {"batches": 0}

    def interrupted(self, pixels):
        if done["batches"] == batches:
            raise KeyboardInterrupt
        done["batches"] += 1
        return original(self, pixels)

    monkeypatch.setattr(VisionLanguageModel, "encode_images", interrupted)
    try:
        yield
    finally:
        monkeypatch.setattr(VisionLanguageModel, "encode_images", original)
