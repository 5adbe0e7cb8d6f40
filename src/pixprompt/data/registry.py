"""The registry of dataset sources: the spec kinds (`folder:PATH`, `imagenet`, `wds:PATH`, …) and the reader of
each. The source modules (`pixprompt.data.sources.*`, one per family) register theirs with `source` when
imported; `registered` imports them by name, so this module, which the dataset core uses, imports none of them
itself (no import circle: sources → registry and core, core → registry)."""
from __future__ import annotations

import importlib
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


#: The source modules, under `pixprompt.data.sources`.
SOURCE_MODULES = ("folders", "huggingface", "named", "torchvision", "webdataset")


def registered() -> dict[str, Source]:
    """Every source, its module imported (each registers itself on import)."""
    for module in SOURCE_MODULES:
        importlib.import_module(f"pixprompt.data.sources.{module}")
    return SOURCES
