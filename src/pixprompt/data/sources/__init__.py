"""Dataset sources: one module per family, each registering the spec kinds it reads (`folder:PATH`,
`imagenet`, `wds:PATH`, …) with `source`; `registered` imports them all."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pixprompt.data.datasets import DatasetOptions, ImageDataset


@dataclass(frozen=True)
class Source:
    """How one spec kind is read: `kind` alone (`imagenet`) or `kind:PATH` when it `takes_path`."""

    kind: str
    load: Callable[[str, DatasetOptions], ImageDataset]
    takes_path: bool = False

    @property
    def usage(self) -> str:
        return f"{self.kind}:PATH" if self.takes_path else f"{self.kind}NAME" if self.kind.endswith("/") else self.kind


SOURCES: dict[str, Source] = {}


def source(kind: str, takes_path: bool = False):
    """Register the decorated function as the reader of spec kind `kind`."""
    def register(load: Callable[[str, DatasetOptions], ImageDataset]):
        SOURCES[kind] = Source(kind, load, takes_path)
        return load
    return register


def registered() -> dict[str, Source]:
    """Every source, its module imported (each registers itself on import)."""
    from pixprompt.data.sources import folders, huggingface, named, torchvision, webdataset  # noqa: F401

    return SOURCES
