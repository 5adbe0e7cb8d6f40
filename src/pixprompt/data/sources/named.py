"""Readers for the catalog's named datasets (`food101`, `eurosat`, `resisc45`, …): each entry is registered as
a spec kind of its own, read from `--data-dir` (or pixprompt's cache folder) by torchvision, as class folders,
or as a CLIP_benchmark webdataset, and given the catalog's class names and templates.

`--data-dir` is the folder torchvision is given as `root` (it makes `food-101/`, `eurosat/`, … under it), a
folder holding the entry's class folders, or a CLIP_benchmark webdataset of the dataset.
"""
from __future__ import annotations

import hashlib
import inspect
import os
import xml.etree.ElementTree as ElementTree
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from PIL import Image

from pixprompt.data.catalog import CatalogEntry, catalog, label_map
from pixprompt.data.datasets import ArrayImages, DatasetOptions, FileImages, ImageDataset
from pixprompt.data.images import class_folders, files_by_class
from pixprompt.data.registry import SOURCES, Source
from pixprompt.data.sources.torchvision import torchvision_download
from pixprompt.data.sources.webdataset import fetch_hosted, load_webdataset
from pixprompt.errors import UnavailableError, UsageError
from pixprompt.paths import cache_root
from pixprompt.prompts.templates import paper_classnames


@dataclass
class IndexedImages(ArrayImages):
    """Images a torchvision dataset (`arrays`) holds in memory or in array files (MNIST, STL-10, FER2013, PCAM),
    read by index as the dataset gives them; ids combine its files' fingerprint and the index."""

    def load(self, index: int) -> Image.Image:
        return self.arrays[index][0].convert("RGB")


def files_fingerprint(root: Path, name: str, limit: int = 1000) -> str:
    """A digest of the names, sizes and modification times of the files under `root` (the first `limit`)."""
    digest = hashlib.sha1(name.encode())
    seen = 0
    for folder, folders, files in os.walk(root):
        folders.sort()
        for file in sorted(files):
            stat = os.stat(os.path.join(folder, file))
            digest.update(f"{os.path.relpath(os.path.join(folder, file), root)}|{stat.st_size}|"
                          f"{stat.st_mtime_ns}".encode())
            seen += 1
            if seen >= limit:
                return f"{name}-{digest.hexdigest()[:16]}"
    return f"{name}-{digest.hexdigest()[:16]}"


def catalog_classnames(entry: CatalogEntry) -> list[str]:
    """The entry's class names from the CLIP paper (the first of several synonyms)."""
    return paper_classnames(entry.name)


def _data_root(entry: CatalogEntry, options: DatasetOptions) -> Path:
    if options.data_dir:
        root = Path(options.data_dir).expanduser()
        if not root.is_dir():
            raise UnavailableError(f"data folder {root} for dataset {entry.name} does not exist")
        return root
    return cache_root() / "datasets" / entry.name


def _is_webdataset(root: Path) -> bool:
    return (root / "test" / "nshards.txt").is_file()


def webdataset_label_map(entry: CatalogEntry, wds_classnames: list[str]) -> list[int]:
    """For each class of the entry's CLIP_benchmark copy (its classnames.txt, in label order), the catalog's
    class of the same name (aliases first: CLIP_benchmark writes CLEVR's counts `three`, the paper `3`)."""
    return label_map(replace(entry, labels="name"), wds_classnames, catalog_classnames(entry))


def _from_webdataset(entry: CatalogEntry, root: Path) -> ImageDataset:
    """The entry from a CLIP_benchmark webdataset: its own names (`names: wds`), or the catalog's, mapped by name."""
    dataset = load_webdataset(str(root))
    dataset.name = entry.name
    if entry.names == "wds":
        return dataset
    classnames = catalog_classnames(entry)
    mapping = webdataset_label_map(entry, dataset.classnames)
    dataset.classnames, dataset.default_templates = classnames, entry.name
    dataset.labels = [mapping[label] for label in dataset.labels]
    return dataset


def _torchvision_class(entry: CatalogEntry):
    import torchvision

    return getattr(torchvision.datasets, entry.read["torchvision"])


def _open_torchvision(entry: CatalogEntry, root: Path, options: DatasetOptions) -> Any:
    """The torchvision dataset, downloaded into `root` when it is not there (and downloads are allowed)."""
    cls = _torchvision_class(entry)
    args = dict(entry.read.get("args", {}))
    try:
        return cls(str(root), **args)
    except RuntimeError:
        if not entry.read.get("download", True) or "download" not in inspect.signature(cls.__init__).parameters:
            raise UnavailableError(f"dataset {entry.name} is not in {root} and torchvision cannot download it: "
                                   f"fetch it as its publisher says and pass {options.data_dir_option}") from None
        return torchvision_download(entry.name, lambda: cls(str(root), **args, download=True), options)


def _first_attribute(data: Any, names: Sequence[str]) -> Any:
    return next((getattr(data, name) for name in names if getattr(data, name, None) is not None), None)


def _torchvision_items(data: Any, root: Path, name: str) -> tuple[Any, list[int]]:
    """The images (as files where torchvision keeps their paths) and integer labels of a torchvision dataset."""
    samples = _first_attribute(data, ("_samples", "samples"))
    if samples and isinstance(samples[0][0], (str, Path)):
        return FileImages([Path(path) for path, _ in samples]), [int(label) for _, label in samples]
    files = _first_attribute(data, ("_image_files", "_images", "images"))
    labels = _first_attribute(data, ("_labels", "targets", "labels"))
    if samples and labels is None:
        labels = [label for _, label in samples]
    if labels is None:  # PCAM: read each item's label (it keeps them in a file it opens per item)
        labels = [data[index][1] for index in range(len(data))]
    labels = [int(label) for label in labels]
    if files:
        return FileImages([Path(path) for path in files]), labels
    return IndexedImages(data, files_fingerprint(root, name)), labels


def _voc_labels(data: Any, classnames: Sequence[str]) -> list[tuple[int, ...]]:
    """The classes present in each image of a torchvision VOC dataset (every object, difficult ones too, as
    CLIP_benchmark's voc2007_multilabel counts them)."""
    index = {name: number for number, name in enumerate(classnames)}
    label_sets = []
    for annotation in data.annotations:
        objects = data.parse_voc_xml(ElementTree.parse(annotation).getroot())["annotation"].get("object", [])
        objects = objects if isinstance(objects, list) else [objects]
        unknown = [o["name"] for o in objects if o["name"] not in index]
        if unknown:
            raise UsageError(f"{annotation}: object class {unknown[0]!r} is not a VOC 2007 class")
        label_sets.append(tuple(sorted({index[o["name"]] for o in objects})))
    return label_sets


def _from_torchvision(entry: CatalogEntry, root: Path, options: DatasetOptions) -> ImageDataset:
    data = _open_torchvision(entry, root, options)
    classnames = catalog_classnames(entry)
    split = entry.read.get("args", {}).get("split", entry.read.get("args", {}).get("image_set", "all"))
    if entry.multi_label:
        return ImageDataset(entry.name, split, classnames, FileImages([Path(p) for p in data.images]),
                            [-1] * len(data.images), entry.name, label_sets=_voc_labels(data, classnames))
    images, labels = _torchvision_items(data, root, entry.name)
    if entry.labels == "value":
        source_names = sorted({str(label) for label in labels}, key=int)
        labels = [source_names.index(str(label)) for label in labels]
    else:
        source_names = list(_first_attribute(data, ("classes", "categories")) or range(len(classnames)))
        source_names = [str(name) for name in source_names]
    mapping = label_map(entry, source_names, classnames)
    return ImageDataset(entry.name, split, classnames, images, [mapping[label] for label in labels], entry.name)


def _folder_root(entry: CatalogEntry, root: Path) -> Path | None:
    """Where the entry's class folders are: under `root` at the catalog's path, or `root` itself."""
    nested = root / entry.read["folders"]
    if nested.is_dir():
        return nested
    return root if class_folders(root) and not (root / entry.read["folders"].split("/")[0]).exists() else None


def _from_folders(entry: CatalogEntry, root: Path, options: DatasetOptions) -> ImageDataset:
    folder_root = _folder_root(entry, root) if root.is_dir() else None
    if folder_root is None and "torchvision" in entry.read:
        _open_torchvision(entry, root, options)  # downloads and unpacks the archive
        folder_root = _folder_root(entry, root)
    if folder_root is None:
        how = f" or a CLIP_benchmark webdataset (wds/{entry.wds})" if entry.wds else ""
        raise UnavailableError(f"dataset {entry.name}: no class folders in {root}: give {options.data_dir_option} "
                               f"the folder that holds {entry.read['folders']}/<class>/…{how}")
    folders = class_folders(folder_root)
    classnames = catalog_classnames(entry)
    mapping = label_map(entry, [folder.name for folder in folders], classnames)
    by_folder = {folder.name: mapping[number] for number, folder in enumerate(folders)}
    paths, labels = files_by_class(folders, by_folder.__getitem__)
    if not paths:
        raise UnavailableError(f"no images in the class folders of {folder_root} for dataset {entry.name}")
    return ImageDataset(entry.name, "test", classnames, FileImages(paths), labels, entry.name)


def load_named(entry: CatalogEntry, options: DatasetOptions) -> ImageDataset:
    """The named dataset `entry`, from the data folder or, when it is not there, downloaded where it can be."""
    if "datacomp" in entry.read:
        from pixprompt.data.sources.datacomp import load_datacomp

        return load_datacomp(entry, options)
    root = _data_root(entry, options)
    if _is_webdataset(root):
        return _from_webdataset(entry, root)
    if entry.read.get("wds"):
        if options.data_dir:
            raise UnavailableError(f"{root} is not a CLIP_benchmark webdataset of {entry.name} (test/nshards.txt "
                                   f"is missing): give its folder, or leave out {options.data_dir_option} to fetch "
                                   f"wds/{entry.wds}")
        if not options.download:
            raise UnavailableError(f"dataset {entry.name} is not on disk: pass {options.data_dir_option}, or "
                                   f"{options.download_option}")
        return _from_webdataset(entry, fetch_hosted(entry.wds))
    if "folders" in entry.read:
        return _from_folders(entry, root, options)
    return _from_torchvision(entry, root, options)


def register_catalog() -> None:
    """Register a reader for every catalog entry that no code loader reads."""
    for entry in catalog().values():
        if "loader" not in entry.read:
            SOURCES[entry.name] = Source(entry.name, lambda _, options, entry=entry: load_named(entry, options))


register_catalog()
