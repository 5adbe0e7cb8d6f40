"""Image files on disk: one class per sub-folder (`folder:PATH`), ImageNet-style `<wnid>/` folders
(`imagenet`, `imagenette`) and CSV files of path and label (`csv:PATH`)."""
from __future__ import annotations

import csv
import logging
from collections.abc import Sequence
from pathlib import Path

from pixprompt.data.classnames import IMAGENETTE_WNIDS, imagenet_wnids, shifted_wnids, wnid_names
from pixprompt.data.datasets import DatasetOptions, FileImages, ImageDataset
from pixprompt.data.images import class_folders, files_by_class
from pixprompt.data.registry import source
from pixprompt.data.sources.torchvision import torchvision_download
from pixprompt.errors import UnavailableError, UsageError
from pixprompt.paths import cache_root
from pixprompt.prompts.labels import validate_classnames
from pixprompt.readers import read_json, read_json_mapping, read_text

log = logging.getLogger(__name__)


def _require_dir(path: str | None, dataset: str, option: str = "--data-dir") -> Path:
    if not path:
        raise UsageError(f"dataset {dataset} needs {option} (the folder that holds its images)")
    root = Path(path).expanduser()
    if not root.is_dir():
        raise UnavailableError(f"data folder {root} for dataset {dataset} does not exist")
    return root


def _require_two_classes(classnames: Sequence[str], origin: object) -> None:
    """Zero-shot accuracy over a single class is meaningless (every image gets it): refuse it."""
    if len(classnames) < 2:
        raise UsageError(f"{origin} has only one class ({', '.join(classnames)}): zero-shot evaluation needs "
                         "at least two classes to choose between")


def _wnid_root(root: Path, dataset: str) -> Path:
    """The folder holding `<wnid>/` class folders: ROOT/val, ROOT/sketch, ROOT/<dataset>, ROOT/imagenette2*/val, or
    ROOT itself (the layouts the datasets' archives unpack to)."""
    candidates = [root / "val", root / "sketch", root / dataset, *sorted(root.glob("imagenette2*/val")), root]
    for candidate in candidates:
        if candidate.is_dir() and any(p.name.startswith("n") and p.name[1:].isdigit()
                                      for p in class_folders(candidate)):
            return candidate
    raise UnavailableError(f"{root} holds no ImageNet-style class folders (<wnid>/*.JPEG) for {dataset}")


def _wnid_dataset(name: str, root: Path, class_wnids: Sequence[str], templates: str) -> ImageDataset:
    folders = class_folders(_wnid_root(root, name))
    index = {wnid: i for i, wnid in enumerate(class_wnids)}
    unknown = [f.name for f in folders if f.name not in index]
    if unknown:
        raise UsageError(f"{root}: folder(s) {', '.join(unknown[:5])} are not {name} classes (WordNet ids)")
    paths, labels = files_by_class(folders, index.__getitem__)
    if not paths:
        raise UnavailableError(f"no images in {root} for dataset {name}")
    return ImageDataset(name, "val", wnid_names(class_wnids), FileImages(paths), labels, templates,
                        list(class_wnids))


@source("imagenet")
def load_imagenet(_: str, options: DatasetOptions) -> ImageDataset:
    """ImageNet-1k val from `val/<wnid>/` folders (torchvision's layout); any subset of classes works."""
    root = _require_dir(options.data_dir, "imagenet", options.data_dir_option)
    return _wnid_dataset("imagenet", root, imagenet_wnids(), "imagenet")


@source("imagenet-sketch")
def load_imagenet_sketch(_: str, options: DatasetOptions) -> ImageDataset:
    """ImageNet-Sketch (Wang et al., 2019): 50 000 sketches in `sketch/<wnid>/` folders, all 1000 classes."""
    root = _require_dir(options.data_dir, "imagenet-sketch", options.data_dir_option)
    return _wnid_dataset("imagenet-sketch", root, imagenet_wnids(), "imagenet")


@source("imagenet-a")
def load_imagenet_a(_: str, options: DatasetOptions) -> ImageDataset:
    """ImageNet-A (natural adversarial examples): `imagenet-a/<wnid>/`, scored over its 200 classes."""
    root = _require_dir(options.data_dir, "imagenet-a", options.data_dir_option)
    return _wnid_dataset("imagenet-a", root, shifted_wnids("imagenet-a"), "imagenet")


@source("imagenet-r")
def load_imagenet_r(_: str, options: DatasetOptions) -> ImageDataset:
    """ImageNet-R (renditions): `imagenet-r/<wnid>/`, scored over its 200 classes."""
    root = _require_dir(options.data_dir, "imagenet-r", options.data_dir_option)
    return _wnid_dataset("imagenet-r", root, shifted_wnids("imagenet-r"), "imagenet")


@source("imagenet-v2")
def load_imagenet_v2(_: str, options: DatasetOptions) -> ImageDataset:
    """ImageNet-V2 MatchedFrequency (Recht et al., 2019): class-index folders `0/ … 999/` (as its archive
    `imagenetv2-matched-frequency-format-val/` unpacks), scored over the 1000 ImageNet classes."""
    root = _require_dir(options.data_dir, "imagenet-v2", options.data_dir_option)
    nested = root / "imagenetv2-matched-frequency-format-val"
    root = nested if nested.is_dir() else root
    folders = [f for f in class_folders(root) if f.name.isdigit() and int(f.name) < 1000]
    strays = [f.name for f in class_folders(root) if f not in folders]
    if strays or not folders:
        raise UsageError(f"{root}: ImageNet-V2 holds class-index folders 0 … 999"
                         + (f", not {', '.join(strays[:5])}" if strays else ", and there are none"))
    paths, labels = files_by_class(folders, int)
    if not paths:
        raise UnavailableError(f"no images in {root} for dataset imagenet-v2")
    return ImageDataset("imagenet-v2", "matched-frequency", list(wnid_names(imagenet_wnids())), FileImages(paths),
                        labels, "imagenet", list(imagenet_wnids()))


def _objectnet_files(root: Path) -> tuple[Path, Path]:
    """ObjectNet's mapping folder and image folder: as its archive unpacks (`objectnet-1.0/mappings`,
    `objectnet-1.0/images`), or the mapping files beside `objectnet-1.0/` (as CLIP_benchmark keeps them)."""
    mappings = next((folder for folder in (root / "objectnet-1.0" / "mappings", root / "mappings", root)
                     if (folder / "folder_to_objectnet_label.json").is_file()), None)
    images = next((folder for folder in (root / "objectnet-1.0" / "images", root / "images") if folder.is_dir()), None)
    if mappings is None or images is None:
        raise UnavailableError(f"{root} is not ObjectNet 1.0: it needs objectnet-1.0/images/<folder>/ and the "
                               "mapping files (folder_to_objectnet_label.json, objectnet_to_imagenet_1k.json)")
    return mappings, images


@source("objectnet")
def load_objectnet(_: str, options: DatasetOptions) -> ImageDataset:
    """ObjectNet 1.0 (Barbu et al., 2019), its 113 classes that overlap ImageNet, named and mapped by the
    dataset's own mapping files, as CLIP_benchmark reads it: classes are ObjectNet's labels (lower case) in
    folder order; images of the other classes are left out."""
    root = _require_dir(options.data_dir, "objectnet", options.data_dir_option)
    mappings, images = _objectnet_files(root)
    label_of = read_json_mapping(mappings / "folder_to_objectnet_label.json", "ObjectNet mapping file",
                                 "each folder name to an ObjectNet label")
    overlapping = read_json_mapping(mappings / "objectnet_to_imagenet_1k.json", "ObjectNet mapping file",
                                    "each ObjectNet label to ImageNet classes")
    folders = sorted(folder for folder, label in label_of.items() if label in overlapping)
    index = {folder: number for number, folder in enumerate(folders)}
    present = [folder for folder in class_folders(images) if folder.name in index]
    paths, labels = files_by_class(present, index.__getitem__)
    if not paths:
        raise UnavailableError(f"no images of ObjectNet's ImageNet classes in {images}")
    return ImageDataset("objectnet", "test", [label_of[folder].lower() for folder in folders], FileImages(paths),
                        labels, "imagenet")


@source("imagenette")
def load_imagenette(_: str, options: DatasetOptions) -> ImageDataset:
    """Imagenette val: a `val/<wnid>/` folder, or torchvision's download into the pixprompt cache."""
    if options.data_dir:
        root = _require_dir(options.data_dir, "imagenette", options.data_dir_option)
    else:
        root = cache_root() / "datasets" / "imagenette"
        if not any(root.glob("imagenette2*/val")):
            torchvision_download("imagenette", lambda: __import__("torchvision").datasets.Imagenette(
                str(root), split="val", size="full", download=True), options)
    return _wnid_dataset("imagenette", root, IMAGENETTE_WNIDS, "imagenet")


@source("folder", takes_path=True)
def load_folder(path: str, options: DatasetOptions) -> ImageDataset:
    """One class per sub-folder; the folder name is the class name unless --class-map renames it."""
    root = _require_dir(path, f"folder:{path}")
    folders = class_folders(root)
    if not folders:
        raise UsageError(f"{root} has no class sub-folders: put each class's images in a folder of its own")
    rename = _class_map(options.class_map)
    classnames = validate_classnames(rename.get(f.name, f.name) for f in folders)
    _require_two_classes(classnames, root)
    index = {f.name: i for i, f in enumerate(folders)}
    paths, labels = files_by_class(folders, index.__getitem__)
    if not paths:
        raise UsageError(f"no images in the class folders of {root}")
    return ImageDataset(f"folder:{root.name}", "all", classnames, FileImages(paths), labels)


def _class_map(path: str | None) -> dict[str, str]:
    if not path:
        return {}
    mapping = read_json(path, "class map")
    if not isinstance(mapping, dict):
        raise UsageError(f"class map {path} must be a JSON object: folder name → class name")
    return {str(k): str(v) for k, v in mapping.items()}


@source("csv", takes_path=True)
def load_csv(path: str, options: DatasetOptions) -> ImageDataset:
    """A CSV with `path` and `label` columns; relative paths are resolved from the CSV's folder. A label cell
    naming several classes separated by `|` makes the dataset multi-label."""
    csv_path = Path(path).expanduser()
    rows = list(csv.DictReader(read_text(csv_path, "CSV file").splitlines()))
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
    row_labels = [[label.strip() for label in row["label"].split("|") if label.strip()] for row in rows]
    classnames = sorted({label for labels in row_labels for label in labels})
    validate_classnames(classnames)
    _require_two_classes(classnames, f"CSV file {csv_path}")
    index = {name: i for i, name in enumerate(classnames)}
    if any(len(labels) > 1 for labels in row_labels):
        label_sets = [tuple(sorted({index[label] for label in labels})) for labels in row_labels]
        return ImageDataset(f"csv:{csv_path.stem}", "all", classnames, FileImages(paths), [-1] * len(rows),
                            label_sets=label_sets)
    return ImageDataset(f"csv:{csv_path.stem}", "all", classnames, FileImages(paths),
                        [index[labels[0]] for labels in row_labels])
