"""Datasets torchvision reads and downloads: CIFAR-10 and CIFAR-100 (or their class-named image folders)."""
from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pixprompt.data.classnames import CIFAR10_CLASSES, cifar100_classes
from pixprompt.data.datasets import ArrayImages, DatasetOptions, FileImages, ImageDataset
from pixprompt.data.images import class_folders, files_by_class
from pixprompt.data.registry import source
from pixprompt.errors import UnavailableError, UsageError
from pixprompt.paths import cache_root


def torchvision_download(name: str, build: Callable[[], Any], options: DatasetOptions) -> Any:
    if not options.download:
        raise UnavailableError(f"dataset {name} is not on disk: pass {options.data_dir_option}, or "
                               f"{options.download_option}")
    try:
        return build()
    except Exception as error:  # offline, or a broken partial download
        raise UnavailableError(f"could not download {name} with torchvision ({str(error).splitlines()[0]}): "
                               f"download it elsewhere and pass {options.data_dir_option}") from None


def _cifar(name: str, options: DatasetOptions) -> ImageDataset:
    """CIFAR test split: class-named image folders, or torchvision's files (downloaded when online)."""
    import torchvision

    templates = name
    if options.data_dir and Path(options.data_dir).is_dir():

        root = Path(options.data_dir).expanduser()
        folders = class_folders(root)
        if folders and not (root / "cifar-10-batches-py").exists() and not (root / "cifar-100-python").exists():
            # every class of the dataset stays a candidate, however many folders are present (no inflated score)
            canonical = list(CIFAR10_CLASSES) if name == "cifar10" else list(cifar100_classes())
            index = {c: i for i, c in enumerate(canonical)}
            unknown = [f.name for f in folders if f.name not in index]
            if unknown:
                raise UsageError(f"{root}: folder(s) {', '.join(unknown[:5])} are not {name} classes")
            paths, labels = files_by_class(folders, index.__getitem__)
            return ImageDataset(name, "test", [c.replace("_", " ") for c in canonical], FileImages(paths),
                                labels, templates)
    root = Path(options.data_dir).expanduser() if options.data_dir else cache_root() / "datasets" / name
    cls = torchvision.datasets.CIFAR10 if name == "cifar10" else torchvision.datasets.CIFAR100
    try:
        data = cls(str(root), train=False, download=False)
    except RuntimeError:
        data = torchvision_download(name, lambda: cls(str(root), train=False, download=True), options)
    fingerprint = hashlib.sha1(data.data[:64].tobytes()).hexdigest()[:16]
    return ImageDataset(name, "test", [c.replace("_", " ") for c in data.classes],
                        ArrayImages(data.data, f"{name}-{fingerprint}"), list(map(int, data.targets)), templates)




@source("cifar10")
def load_cifar10(_: str, options: DatasetOptions) -> ImageDataset:
    """CIFAR-10 test split (10 000 images)."""
    return _cifar("cifar10", options)


@source("cifar100")
def load_cifar100(_: str, options: DatasetOptions) -> ImageDataset:
    """CIFAR-100 test split (10 000 images, 100 fine classes)."""
    return _cifar("cifar100", options)
