"""The catalog of named datasets (`resources/datasets.json`): how each is read, where its class names and
templates come from, how its source's labels map to those names, its main metric and its suites.

Adding a dataset is adding an entry; `pixprompt.data.sources.named` registers a reader for each.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

from pixprompt.errors import UsageError

#: The named suites `bench` runs (`suite: NAME`), and what each is.
SUITES = {
    "clip": "the CLIP paper's Table 11 image datasets",
    "imagenet-shifts": "ImageNet, V2, Sketch, A, R, ObjectNet",
    "vtab": "VTAB's 19 tasks, in 3 groups",
    "retrieval": "Flickr30k and MSCOCO image-text retrieval (recall@1, 5, 10 both ways)",
    "datacomp": "DataComp's 38 tasks (its tasklist.yml), from the copies its evaluate.py reads",
}


#: Where class names and templates come from, by the catalog's `names`.
NAME_SOURCES = {
    "paper": "CLIP paper (openai/CLIP data/prompts.md)",
    "imagenet": "CLIP's ImageNet names and 80 templates",
    "objectnet": "ObjectNet's own mapping files (as CLIP_benchmark)",
    "wds": "CLIP_benchmark's webdataset",
}


@dataclass(frozen=True)
class CatalogEntry:
    name: str
    title: str
    read: dict[str, Any]
    names: str
    reference: str
    labels: str = "index"
    aliases: dict[str, str] = field(default_factory=dict)
    metric: str = "top1"
    wds: str | None = None
    multi_label: bool = False
    suites: tuple[str, ...] = ()
    group: str | None = None

    @property
    def folder(self) -> str:
        """Its folder under a suite's `data_root`: DataComp's own folder name for a DataComp task (`--data_dir`'s
        layout: wds_vtab-dtd_test, or the Hugging Face table's name), else its name."""
        key = self.read.get("datacomp")
        if key is None:
            return self.name
        if "hf" in self.read:
            return self.read["hf"].split("/")[-1]
        # DataComp's evaluate.py reads its fairness tasks without the prefix (wds_geode_test)
        return f"wds_{key.removeprefix('fairness/').replace('/', '-')}_test"

    @property
    def obtained(self) -> str:
        """How its images are had, as a listing shows it."""
        ways = []
        if "loader" in self.read or "folders" in self.read:
            ways.append("folder layout")
        if "torchvision" in self.read:
            ways.append("torchvision download" if self.read.get("download", True) else "torchvision layout")
        if self.wds:
            ways.append(f"wds/{self.wds}")
        if "datacomp" in self.read:
            ways.append(self.read["hf"] if "hf" in self.read else f"djghosh/{self.folder}")
        return ", ".join(ways)

    @property
    def names_source(self) -> str:
        """Where its class names and templates come from."""
        return NAME_SOURCES[self.names]


def fetch_command(entry: CatalogEntry, data_root: str) -> str:
    """The shell line that puts `entry`'s copy in `data_root/FOLDER` on a connected machine (where a suite's
    `data_root:` reads it), or a comment saying how else it is had."""
    target = f"{data_root.rstrip('/')}/{entry.folder}"
    if "games" in entry.read:  # WinoGAViL: a table saved with save_to_disk, as DataComp loads it
        return (f"python -c \"import datasets; datasets.load_dataset('{entry.read['hf']}', split='test')"
                f".save_to_disk('{target}')\"")
    if "hf" in entry.read:
        return f"hf download --repo-type dataset {entry.read['hf']} --local-dir {target}"
    if "datacomp" in entry.read:
        return f"hf download --repo-type dataset djghosh/{entry.folder} --local-dir {target}"
    if entry.wds:  # CLIP_benchmark's copy, which a data folder may hold (its names mapped to the paper's)
        return f"hf download --repo-type dataset clip-benchmark/wds_{entry.wds.replace('/', '-')} --local-dir {target}"
    if "torchvision" in entry.read and entry.read.get("download", True):
        return f"# {entry.name}: torchvision downloads it on first use when online (or lay it out in {target})"
    return f"# {entry.name}: not downloadable: lay it out in {target} (see README's Datasets table)"


@lru_cache(maxsize=1)
def catalog() -> dict[str, CatalogEntry]:
    """Every named dataset, by name."""
    data = json.loads(resources.files("pixprompt.resources").joinpath("datasets.json").read_text("utf-8"))
    return {name: CatalogEntry(name=name, **{**entry, "suites": tuple(entry.get("suites", ()))})
            for name, entry in data["datasets"].items()}


def suite(name: str) -> list[str]:
    """The dataset names of a suite, in catalog order."""
    if name not in SUITES:
        raise UsageError(f"unknown suite {name!r}: use one of {', '.join(SUITES)}")
    return [entry.name for entry in catalog().values() if name in entry.suites]


def normalised(name: str) -> str:
    """A class name as names are compared: lower case, `_ - /` as spaces, no apostrophes, single spaces."""
    return " ".join(re.sub(r"[_\-/]", " ", name.replace("'", "")).lower().split())


def label_map(entry: CatalogEntry, source_names: Sequence[str], classnames: Sequence[str]) -> list[int]:
    """For each class of the source (in its label order), the index of the same class in `classnames`.

    By name (`labels: name`): the entry's aliases first, then names compared `normalised`. By index: the
    source's order is `classnames`' (the counts must agree). Any source class without a match is refused,
    so a renamed class can never be scored as another.
    """
    if entry.labels == "index":
        if len(source_names) != len(classnames):
            raise UsageError(f"dataset {entry.name}: the source has {len(source_names)} classes, "
                             f"the catalog names {len(classnames)}")
        return list(range(len(classnames)))
    index = {normalised(name): number for number, name in enumerate(classnames)}
    mapped, unknown = [], []
    for name in source_names:
        target = normalised(entry.aliases.get(name, name))
        mapped.append(index.get(target, -1))
        if target not in index:
            unknown.append(name)
    if unknown:
        raise UsageError(f"dataset {entry.name}: class(es) {', '.join(map(repr, unknown[:5]))} of the source "
                         "match no class of the catalog: is this the right dataset folder?")
    return mapped


def listing(entry: CatalogEntry) -> dict[str, Any]:
    """What `pixprompt datasets` says of an entry; reads no image and downloads nothing."""
    from pixprompt.prompts.templates import TEMPLATE_SETS

    try:
        classnames, templates = dataset_classnames(entry.name)
        classes: int | None = len(classnames)
        prompts: int | None = len(TEMPLATE_SETS[templates])
    except UsageError:  # names that come with the data (CLIP_benchmark's webdatasets, ObjectNet's mapping)
        classes = prompts = None
    return {"name": entry.name, "title": entry.title, "classes": classes, "templates": prompts,
            "multi_label": entry.multi_label, "metric": entry.metric, "obtained": entry.obtained,
            "names": entry.names, "names_from": entry.names_source, "suites": list(entry.suites), "group": entry.group,
            "reference": entry.reference}


def dataset_classnames(spec: str) -> tuple[list[str], str]:
    """Class names and default template set of a named dataset, without reading any image."""
    from pixprompt.data.classnames import (
        CIFAR10_CLASSES,
        IMAGENETTE_WNIDS,
        cifar100_classes,
        imagenet_classnames,
        imagenet_wnids,
        shifted_wnids,
        wnid_names,
    )
    from pixprompt.prompts.templates import CLIP_PAPER, paper_classnames

    names = {
        "imagenet": list(imagenet_classnames()), "imagenet-v2": list(imagenet_classnames()),
        "imagenet-sketch": wnid_names(imagenet_wnids()), "imagenette": wnid_names(IMAGENETTE_WNIDS),
        "imagenet-a": wnid_names(shifted_wnids("imagenet-a")), "imagenet-r": wnid_names(shifted_wnids("imagenet-r")),
        "cifar10": list(CIFAR10_CLASSES), "cifar100": [c.replace("_", " ") for c in cifar100_classes()],
    }
    if spec in names:
        return names[spec], "imagenet" if spec.startswith("imagenet") else spec
    if spec in catalog() and spec in CLIP_PAPER:
        return paper_classnames(spec), spec
    known = sorted(names.keys() | (catalog().keys() & CLIP_PAPER.keys()))
    raise UsageError(f"--dataset {spec!r} has no built-in class names: use one of {', '.join(known)} "
                     "or --labels-file")
