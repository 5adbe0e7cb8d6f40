"""Dataset adapters: each yields image items, integer labels, class names and its default templates.

Specs: `imagenet`, `imagenette`, `cifar10`, `cifar100`, `folder:PATH`, `csv:PATH`, `hf:PATH`, `wds:PATH`
(CLIP_benchmark's webdataset layout) and `wds/NAME` (its hosted copies).
"""
from __future__ import annotations

import csv
import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Protocol

from PIL import Image

from pixprompt.data.images import DEFAULT_MAX_PIXELS, open_rgb, walk_images
from pixprompt.data.webdataset import TarImages, fetch_hosted, load_webdataset
from pixprompt.errors import UnavailableError, UsageError, first_line
from pixprompt.paths import cache_root
from pixprompt.prompts.labels import read_text_file, validate_classnames

log = logging.getLogger(__name__)

IMAGENETTE_WNIDS = ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916",
                    "n03417042", "n03425413", "n03445777", "n03888257")


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
        return str(self.paths[index])


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


@dataclass
class HFImages:
    """A Hugging Face `datasets` table with an image column."""

    table: Any
    column: str

    def __len__(self) -> int:
        return len(self.table)

    def load(self, index: int) -> Image.Image:
        image = self.table[index][self.column]
        return (image if isinstance(image, Image.Image) else Image.open(image["path"])).convert("RGB")

    def item_id(self, index: int) -> str:
        return f"{self.table._fingerprint}|{index}"

    def describe(self, index: int) -> str:
        return f"row {index}"


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
    #: The whole dataset's feature-cache group, kept by subsets so that they share its cached features.
    parent_group: str = ""

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
                       parent_group=self.cache_group)

    @property
    def cache_group(self) -> str:
        """The name its cached features are kept under: subsets share the whole dataset's."""
        return self.parent_group or f"{self.name}-{self.split}"

    def decoded_with(self, draft_size: int | None = None,
                     max_pixels: int | None = DEFAULT_MAX_PIXELS) -> ImageDataset:
        """This dataset with its image files decoded under a pixel budget and, given `draft_size`, their JPEGs
        at reduced scale, no side below it (approximate; see `decode_rgb`)."""
        if isinstance(self.images, TarImages):  # tar-held images: the pixel budget applies; no JPEG drafts
            return replace(self, images=replace(self.images, max_pixels=max_pixels))
        if not isinstance(self.images, FileImages):
            if draft_size:
                log.warning("%s: JPEG draft decoding applies to image files only; decoding exactly", self.name)
            return self
        return replace(self, images=replace(self.images, draft_size=draft_size, max_pixels=max_pixels))


@dataclass(frozen=True)
class DatasetOptions:
    data_dir: str | None = None
    class_map: str | None = None
    download: bool = True


# -- class names -----------------------------------------------------------------------------------
@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (sorted; list as shipped by timm)."""
    text = resources.files("pixprompt.resources").joinpath("imagenet_wnids.txt").read_text()
    return tuple(text.split())


@lru_cache(maxsize=1)
def imagenet_classnames() -> tuple[str, ...]:
    """The 1000 class names in the cleaned form the CLIP authors used (from open_clip)."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    return tuple(IMAGENET_CLASSNAMES)


def wnid_names(wnids: Sequence[str]) -> list[str]:
    names = dict(zip(imagenet_wnids(), imagenet_classnames()))
    return [names[w] for w in wnids]


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@lru_cache(maxsize=1)
def cifar100_classes() -> tuple[str, ...]:
    """CIFAR-100's 100 fine labels in label order (torchvision's `fine_label_names`), shipped as data."""
    return tuple(resources.files("pixprompt.resources").joinpath("cifar100_classes.txt").read_text().split())


# -- helpers ---------------------------------------------------------------------------------------
def _require_dir(path: str | None, dataset: str) -> Path:
    if not path:
        raise UsageError(f"dataset {dataset} needs --data-dir (the folder that holds its images)")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UnavailableError(f"data folder {root} for dataset {dataset} does not exist")
    return root


def _class_folders(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _files_by_class(folders: Sequence[Path], label_of: Callable[[str], int]) -> tuple[list[Path], list[int]]:
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


def _require_two_classes(classnames: Sequence[str], source: object) -> None:
    """Zero-shot accuracy over a single class is meaningless (every image gets it): refuse it."""
    if len(classnames) < 2:
        raise UsageError(f"{source} has only one class ({', '.join(classnames)}): zero-shot evaluation needs "
                         "at least two classes to choose between")


def _wnid_root(root: Path, dataset: str) -> Path:
    """The folder holding `<wnid>/` class folders: ROOT/val, ROOT/imagenette2*/val, or ROOT itself."""
    candidates = [root / "val", *sorted(root.glob("imagenette2*/val")), root]
    for candidate in candidates:
        if candidate.is_dir() and any(p.name.startswith("n") and p.name[1:].isdigit()
                                      for p in _class_folders(candidate)):
            return candidate
    raise UnavailableError(f"{root} holds no ImageNet-style class folders (val/<wnid>/*.JPEG) for {dataset}")


def _wnid_dataset(name: str, root: Path, class_wnids: Sequence[str], templates: str) -> ImageDataset:
    folders = _class_folders(_wnid_root(root, name))
    index = {wnid: i for i, wnid in enumerate(class_wnids)}
    unknown = [f.name for f in folders if f.name not in index]
    if unknown:
        raise UsageError(f"{root}: folder(s) {', '.join(unknown[:5])} are not {name} classes (WordNet ids)")
    paths, labels = _files_by_class(folders, index.__getitem__)
    if not paths:
        raise UnavailableError(f"no images in {root} for dataset {name}")
    return ImageDataset(name, "val", wnid_names(class_wnids), FileImages(paths), labels, templates,
                        list(class_wnids))


# -- adapters --------------------------------------------------------------------------------------
def load_imagenet(_: str, options: DatasetOptions) -> ImageDataset:
    """ImageNet-1k val from `val/<wnid>/` folders (torchvision's layout); any subset of classes works."""
    return _wnid_dataset("imagenet", _require_dir(options.data_dir, "imagenet"), imagenet_wnids(), "imagenet")


def load_imagenette(_: str, options: DatasetOptions) -> ImageDataset:
    """Imagenette val: a `val/<wnid>/` folder, or torchvision's download into the pixprompt cache."""
    if options.data_dir:
        root = _require_dir(options.data_dir, "imagenette")
    else:
        root = cache_root() / "datasets" / "imagenette"
        if not any(root.glob("imagenette2*/val")):
            _torchvision_download("imagenette", lambda: __import__("torchvision").datasets.Imagenette(
                str(root), split="val", size="full", download=True), options)
    return _wnid_dataset("imagenette", root, IMAGENETTE_WNIDS, "imagenet")


def _torchvision_download(name: str, build: Callable[[], Any], options: DatasetOptions) -> Any:
    if not options.download:
        raise UnavailableError(f"dataset {name} is not on disk: pass --data-dir, or allow the download")
    try:
        return build()
    except Exception as error:  # offline, or a broken partial download
        raise UnavailableError(f"could not download {name} with torchvision ({str(error).splitlines()[0]}): "
                               f"download it elsewhere and pass --data-dir") from None


def _cifar(name: str, options: DatasetOptions) -> ImageDataset:
    """CIFAR test split: class-named image folders, or torchvision's files (downloaded when online)."""
    import torchvision

    templates = name
    if options.data_dir and Path(options.data_dir).is_dir():
        root = Path(options.data_dir).expanduser()
        folders = _class_folders(root)
        if folders and not (root / "cifar-10-batches-py").exists() and not (root / "cifar-100-python").exists():
            # every class of the dataset stays a candidate, however many folders are present (no inflated score)
            canonical = list(CIFAR10_CLASSES) if name == "cifar10" else list(cifar100_classes())
            index = {c: i for i, c in enumerate(canonical)}
            unknown = [f.name for f in folders if f.name not in index]
            if unknown:
                raise UsageError(f"{root}: folder(s) {', '.join(unknown[:5])} are not {name} classes")
            paths, labels = _files_by_class(folders, index.__getitem__)
            return ImageDataset(name, "test", [c.replace("_", " ") for c in canonical], FileImages(paths),
                                labels, templates)
    root = Path(options.data_dir).expanduser() if options.data_dir else cache_root() / "datasets" / name
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        data = cls(str(root), train=False, download=False)
    except RuntimeError:
        data = _torchvision_download(name, lambda: cls(str(root), train=False, download=True), options)
    fingerprint = hashlib.sha1(data.data[:64].tobytes()).hexdigest()[:16]
    return ImageDataset(name, "test", [c.replace("_", " ") for c in data.classes],
                        ArrayImages(data.data, f"{name}-{fingerprint}"), list(map(int, data.targets)), templates)


def load_folder(path: str, options: DatasetOptions) -> ImageDataset:
    """One class per sub-folder; the folder name is the class name unless --class-map renames it."""
    root = _require_dir(path, f"folder:{path}")
    folders = _class_folders(root)
    if not folders:
        raise UsageError(f"{root} has no class sub-folders: put each class's images in a folder of its own")
    rename = _class_map(options.class_map)
    classnames = validate_classnames(rename.get(f.name, f.name) for f in folders)
    _require_two_classes(classnames, root)
    index = {f.name: i for i, f in enumerate(folders)}
    paths, labels = _files_by_class(folders, index.__getitem__)
    if not paths:
        raise UsageError(f"no images in the class folders of {root}")
    return ImageDataset(f"folder:{root.name}", "all", classnames, FileImages(paths), labels)


def _class_map(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    try:
        mapping = json.loads(read_text_file(path, "class map"))
    except json.JSONDecodeError as error:
        raise UsageError(f"class map {path} is not valid JSON ({error})") from None
    if not isinstance(mapping, dict):
        raise UsageError(f"class map {path} must be a JSON object: folder name → class name")
    return {str(k): str(v) for k, v in mapping.items()}


def load_csv(path: str, options: DatasetOptions) -> ImageDataset:
    """A CSV with `path` and `label` columns; relative paths are resolved from the CSV's folder."""
    csv_path = Path(path).expanduser()
    rows = list(csv.DictReader(read_text_file(csv_path, "CSV file").splitlines()))
    columns = set(rows[0].keys()) if rows else set()
    missing = {"path", "label"} - columns
    if missing:
        raise UsageError(f"CSV file {csv_path} lacks column(s) {', '.join(sorted(missing))} "
                         f"(has: {', '.join(sorted(c for c in columns if c)) or 'no rows'})")
    for number, row in enumerate(rows, start=2):  # line 1 is the header
        blank = [column for column in ("path", "label") if not (row.get(column) or "").strip()]
        if blank:
            raise UsageError(f"CSV file {csv_path}, line {number}: no {' and no '.join(blank)} "
                             "(every row needs an image path and a label)")
    paths = [(csv_path.parent / row["path"].strip()).expanduser() for row in rows]
    absent = [str(p) for p in paths if not p.exists()]
    if absent:
        raise UsageError(f"CSV file {csv_path}: {len(absent)} image path(s) do not exist, e.g. {', '.join(absent[:3])}")
    classnames = sorted({row["label"].strip() for row in rows})
    validate_classnames(classnames)
    _require_two_classes(classnames, f"CSV file {csv_path}")
    index = {name: i for i, name in enumerate(classnames)}
    return ImageDataset(f"csv:{csv_path.stem}", "all", classnames, FileImages(paths),
                        [index[row["label"].strip()] for row in rows])


def load_hf(path: str, options: DatasetOptions) -> ImageDataset:
    """A Hugging Face `datasets` dataset saved with `save_to_disk`, or parquet file(s), with image+label."""
    try:
        import datasets
    except ImportError:
        raise UnavailableError("hf: datasets need the `datasets` package: pip install datasets") from None
    source = Path(path).expanduser()
    if not source.exists():
        raise UnavailableError(f"hf dataset {source} does not exist")
    saved = source.is_dir() and any((source / name).exists() for name in ("dataset_info.json", "dataset_dict.json"))
    files = [] if saved else sorted(map(str, source.glob("*.parquet"))) if source.is_dir() else [str(source)]
    if not saved and not files:
        raise UnavailableError(f"hf dataset {source} holds neither a saved dataset (save_to_disk) nor .parquet files")
    verbosity = datasets.logging.get_verbosity()
    datasets.logging.set_verbosity(logging.CRITICAL)  # a failure is reported below, in one line
    try:
        table = datasets.load_from_disk(str(source)) if saved else \
            datasets.load_dataset("parquet", data_files=files, split="train")
    except Exception as error:  # datasets and pyarrow raise many kinds for empty or damaged files
        reason = first_line(error, 200)
        raise UnavailableError(f"hf dataset {source} could not be read ({type(error).__name__}: {reason})") from None
    finally:
        datasets.logging.set_verbosity(verbosity)
    if isinstance(table, datasets.DatasetDict):
        split = "validation" if "validation" in table else "test" if "test" in table else next(iter(table))
        table = table[split]
    image_column = next((c for c in ("image", "img") if c in table.column_names), None)
    label_column = next((c for c in ("label", "labels", "fine_label") if c in table.column_names), None)
    if image_column is None or label_column is None:
        raise UsageError(f"hf dataset {source} needs an image and a label column (has {table.column_names})")
    feature = table.features[label_column]
    labels = list(table[label_column])
    if hasattr(feature, "names"):
        classnames = [n.replace("_", " ") for n in feature.names]
    else:
        classnames = sorted({str(v) for v in labels})
        index = {n: i for i, n in enumerate(classnames)}
        labels = [index[str(v)] for v in labels]
    return ImageDataset(f"hf:{source.name}", "all", classnames, HFImages(table, image_column), labels)


DATASETS: dict[str, Callable[[str, DatasetOptions], ImageDataset]] = {
    "imagenet": load_imagenet,
    "imagenette": load_imagenette,
    "cifar10": lambda arg, options: _cifar("cifar10", options),
    "cifar100": lambda arg, options: _cifar("cifar100", options),
    "folder": load_folder,
    "csv": load_csv,
    "hf": load_hf,
    "wds": lambda path, options: load_webdataset(path),
}


def load_dataset(spec: str, options: DatasetOptions | None = None) -> ImageDataset:
    """The dataset named by `spec` (`imagenet`, `folder:/photos`, …), with its class names and labels."""
    if spec.startswith("wds/"):  # CLIP_benchmark's hosted copy, fetched into the Hugging Face cache
        return load_webdataset(str(fetch_hosted(spec[len("wds/"):])))
    kind, _, argument = spec.partition(":")
    if kind not in DATASETS:
        raise UsageError(f"unknown dataset {spec!r}: use one of imagenet, imagenette, cifar10, cifar100, "
                         "folder:PATH, csv:PATH, hf:PATH, wds:PATH or wds/NAME")
    if kind in ("folder", "csv", "hf", "wds") and not argument:
        raise UsageError(f"dataset {kind}: needs a path, e.g. {kind}:/data/my_images")
    return DATASETS[kind](argument, options or DatasetOptions())


def dataset_classnames(spec: str) -> tuple[list[str], str]:
    """Class names and default template set of a named dataset, without reading any image."""
    names = {
        "imagenet": (list(imagenet_classnames()), "imagenet"),
        "imagenette": (wnid_names(IMAGENETTE_WNIDS), "imagenet"),
        "cifar10": (list(CIFAR10_CLASSES), "cifar10"),
    }
    if spec not in names:
        raise UsageError(f"--dataset {spec!r} has no built-in class names: use one of {', '.join(names)} "
                         "or --labels-file")
    return names[spec]


__all__ = ["DATASETS", "DatasetOptions", "ImageDataset", "dataset_classnames", "load_dataset"]
