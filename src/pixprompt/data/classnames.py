"""Class lists that ship with pixprompt: ImageNet's WordNet ids and CLIP's cleaned names, Imagenette, CIFAR."""
from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

IMAGENETTE_WNIDS = ("n01440764", "n02102040", "n02979186", "n03000684", "n03028079", "n03394916",
                    "n03417042", "n03425413", "n03445777", "n03888257")


@lru_cache(maxsize=1)
def imagenet_wnids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in class-index order (sorted; list as shipped by timm)."""
    text = resources.files("pixprompt.resources").joinpath("imagenet_wnids.txt").read_text()
    return tuple(text.split())


@lru_cache(maxsize=1)
def imagenet_classnames() -> tuple[str, ...]:
    """The 1000 class names in the cleaned form the CLIP authors used, one per line as open_clip's
    `zero_shot_metadata.IMAGENET_CLASSNAMES` has them (shipped as data: listing them needs no torch)."""
    text = resources.files("pixprompt.resources").joinpath("imagenet_classnames.txt").read_text(encoding="utf-8")
    return tuple(text.splitlines())


def wnid_names(wnids: Sequence[str]) -> list[str]:
    names = dict(zip(imagenet_wnids(), imagenet_classnames()))
    return [names[w] for w in wnids]


CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


@lru_cache(maxsize=1)
def cifar100_classes() -> tuple[str, ...]:
    """CIFAR-100's 100 fine labels in label order (torchvision's `fine_label_names`), shipped as data."""
    return tuple(resources.files("pixprompt.resources").joinpath("cifar100_classes.txt").read_text().split())


@lru_cache(maxsize=None)
def shifted_wnids(name: str) -> tuple[str, ...]:
    """The 200 WordNet ids of ImageNet-A or ImageNet-R (Hendrycks et al., 2021), sorted: the class folders of
    the released archives, as CLIP_benchmark also lists them. Scored over these classes only, as the CLIP
    paper and CLIP_benchmark score them (the 1000-class classifier restricted to them)."""
    text = resources.files("pixprompt.resources").joinpath(f"{name.replace('-', '_')}_wnids.txt").read_text()
    return tuple(text.split())
