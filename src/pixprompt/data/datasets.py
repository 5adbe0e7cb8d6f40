"""What every dataset is to the rest of pixprompt: an `ImageDataset` (images, labels, class names, default
templates), and `load_dataset`, which finds the source that reads a spec.

Sources live in `pixprompt.data.sources`, one module per family (folders and CSV files, torchvision,
Hugging Face, webdataset), each registering the spec kinds it reads.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from pixprompt.data.images import DEFAULT_MAX_PIXELS, open_rgb, path_text
from pixprompt.errors import UsageError
from pixprompt.storage import identity_digest

log = logging.getLogger(__name__)


class ImageSource(Protocol):
    """Indexable images with a stable id per item that changes when the item changes."""

    def __len__(self) -> int: ...

    def load(self, index: int) -> Image.Image: ...

    def item_id(self, index: int) -> str: ...

    def describe(self, index: int) -> str: ...


@dataclass
class FileImages:
    """Images stored as files; an item's id includes its size and modification time, and the JPEG draft
    size when one is set (see `decode_rgb`), so approximate features are cached apart from exact ones.
    Images over `max_pixels` are refused before decoding (the budget changes no pixel, so no id)."""

    paths: Sequence[Path]
    draft_size: int | None = None
    max_pixels: int | None = DEFAULT_MAX_PIXELS

    def __len__(self) -> int:
        return len(self.paths)

    def load(self, index: int) -> Image.Image:
        return open_rgb(self.paths[index], self.draft_size, self.max_pixels)

    def item_id(self, index: int) -> str:
        path = self.paths[index]
        draft = f"|draft{self.draft_size}" if self.draft_size else ""
        try:
            stat = path.stat()
            return f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}{draft}"
        except OSError:
            return f"{path}|unreadable"

    def describe(self, index: int) -> str:
        return path_text(self.paths[index])


def files_identity(paths: Sequence[Path], draft_size: int | None = None) -> str:
    """The identity of a list of image files (their paths, sizes and modification times) as one short string
    (`identity_digest`): equal only for the same files, unchanged."""
    files = FileImages(paths, draft_size)
    return identity_digest(files.item_id(i) for i in range(len(paths)))


def shared_items(images: ImageSource, others: ImageSource) -> list[int]:
    """Positions of `images`' items that are also items of `others` (the same ids: file, size and modification
    time, or tar member, or array), in order."""
    other_ids = {others.item_id(i) for i in range(len(others))}
    return [i for i in range(len(images)) if images.item_id(i) in other_ids]


@dataclass
class ArrayImages:
    """Images held in memory (torchvision CIFAR); ids combine the dataset's fingerprint and index."""

    arrays: Any
    fingerprint: str

    def __len__(self) -> int:
        return len(self.arrays)

    def load(self, index: int) -> Image.Image:
        return Image.fromarray(self.arrays[index]).convert("RGB")

    def item_id(self, index: int) -> str:
        return f"{self.fingerprint}|{index}"

    def describe(self, index: int) -> str:
        return f"{self.fingerprint} item {index}"


@dataclass(frozen=True)
class Game:
    """One association game: a cue and its candidate images (`first` … `first + len(associated) − 1` of the
    dataset's images), `associated` marking those the cue goes with (WinoGAViL)."""

    cue: str
    first: int
    associated: tuple[bool, ...]


@dataclass
class ImageDataset:
    """Everything an evaluation needs from a dataset."""

    name: str
    split: str
    classnames: list[str]
    images: ImageSource
    labels: list[int]
    default_templates: str = "standard"
    #: WordNet ids of the classes, for ImageNet and its subsets (used to map supervised logits).
    wnids: list[str] = field(default_factory=list)
    #: Multi-label datasets (VOC 2007): the classes present in each image; their `labels` are all -1.
    label_sets: list[tuple[int, ...]] | None = None
    #: Retrieval datasets (Flickr30k, MSCOCO captions): each image's captions; they have no classes, and their
    #: `labels` are all -1.
    captions: list[tuple[str, ...]] | None = None
    #: Group metadata (WILDS, DataComp's fairness sets): the field names and each image's values.
    metadata: tuple[list[str], list[tuple[int, ...]]] | None = None
    #: The language of its class names and default templates when not English (`--language`).
    language: str | None = None
    #: Association games (WinoGAViL): each game's cue, the position of its first candidate image among `images`,
    #: and which of its candidates the cue is associated with; they have no classes, and their `labels` are all -1.
    games: list[Game] | None = None

    def __len__(self) -> int:
        return len(self.labels)

    def spread_subset(self, count: int) -> ImageDataset:
        """At most `count` items taken at even steps (so every class keeps some), for quick looks.

        Only file-based datasets can be cut this way; the classes stay the same.
        """
        if count < 1:
            raise UsageError(f"a subset needs at least one image (asked for {count})")
        if count >= len(self):
            return self
        if not isinstance(self.images, FileImages):
            raise UsageError(f"{self.name}: only folder, CSV and ImageNet-style datasets can be subsampled")
        keep = [round(i * len(self) / count) for i in range(count)]
        return replace(self, images=replace(self.images, paths=[self.images.paths[i] for i in keep]),
                       labels=[self.labels[i] for i in keep], split=f"{self.split}[{count} of {len(self)}]",
                       label_sets=None if self.label_sets is None else [self.label_sets[i] for i in keep],
                       captions=None if self.captions is None else [self.captions[i] for i in keep],
                       metadata=None if self.metadata is None else
                       (self.metadata[0], [self.metadata[1][i] for i in keep]))

    @property
    def multi_label(self) -> bool:
        return self.label_sets is not None

    @property
    def retrieval(self) -> bool:
        return self.captions is not None

    @property
    def association(self) -> bool:
        return self.games is not None

    def decoded_with(self, draft_size: int | None = None,
                     max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageDataset:
        """This dataset with its image files decoded under a pixel budget and, given `draft_size`, their JPEGs
        at reduced scale, no side below it (approximate; see `decode_rgb`)."""
        if not isinstance(self.images, FileImages):
            if hasattr(self.images, "max_pixels"):  # other encoded images (tar members): the budget applies
                return replace(self, images=replace(self.images, max_pixels=max_pixels))
            if draft_size:
                log.warning("%s: JPEG draft decoding applies to image files only; decoding exactly", self.name)
            return self
        return replace(self, images=replace(self.images, draft_size=draft_size, max_pixels=max_pixels))


@dataclass(frozen=True)
class DatasetOptions:
    data_dir: str | None = None
    class_map: str | None = None
    download: bool = True
    #: ImageNet's class names and templates in this language (see `pixprompt.data.languages`).
    language: str | None = None
    #: How the user gives `data_dir` and `download`, as messages name them (a bench config has no flags).
    data_dir_option: str = "--data-dir"
    download_option: str = "allow the download"


def load_dataset(spec: str, options: DatasetOptions | None = None) -> ImageDataset:
    """The dataset named by `spec` (`imagenet`, `folder:/photos`, `wds/vtab/cifar10`, …), with its class names and
    labels, read by the source registered for its kind."""
    from pixprompt.data.registry import registered

    sources = registered()
    kind, argument = ("wds/", spec[len("wds/"):]) if spec.startswith("wds/") else spec.partition(":")[::2]
    if kind not in sources:
        raise UsageError(f"unknown dataset {spec!r}: use one of {', '.join(s.usage for s in sources.values())}")
    if sources[kind].takes_path and not argument:
        raise UsageError(f"dataset {kind}: needs a path, e.g. {kind}:/data/my_images")
    options = options or DatasetOptions()
    dataset = sources[kind].load(argument, options)
    if options.language and options.language.strip().lower() != "en":
        from pixprompt.data.languages import localised
        from pixprompt.paths import cache_root

        dataset = localised(dataset, options.language, cache_root() / "languages")
    return dataset


__all__ = ["DatasetOptions", "ImageDataset", "load_dataset"]
