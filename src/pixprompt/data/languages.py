"""ImageNet's class names and templates in other languages, as CLIP_benchmark evaluates multilingual models
(`--language XX`, for ImageNet and every dataset of ImageNet classes: its subsets and shifts):

- its own translations for `ar`, `cn`, `it`, `jp` (`{lang}_classnames.json`, `{lang}_zeroshot_classification_
  templates.json`: all 1,000 classes);
- Babel-ImageNet for ~90 more (Geigle et al., 2023, `babel_imagenet.json`: each language names the ImageNet classes
  it can, from BabelNet, so a dataset keeps only those classes and their images; NLLB-translated templates from
  `nllb_dist13b_prompts.json`), as CLIP_benchmark's `babel_imagenet` dataset does.

The files are read from the installed clip-benchmark package, else fetched once from its repository into
pixprompt's cache folder.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixprompt.data.classnames import imagenet_wnids
from pixprompt.errors import UnavailableError, UsageError, first_line

if TYPE_CHECKING:  # `load_dataset` calls `localised`: the core is not imported back
    from pixprompt.data.datasets import ImageDataset

#: The languages CLIP_benchmark translated ImageNet's names and templates into itself.
TRANSLATED = ("ar", "cn", "it", "jp")
SOURCE_URL = "https://raw.githubusercontent.com/LAION-AI/CLIP_benchmark/main/clip_benchmark/datasets/{}"
#: The most bytes a fetched file may have (babel_imagenet.json is ~6 MB).
MAX_FILE_BYTES = 64 * 2**20


@dataclass(frozen=True)
class LanguageNames:
    """ImageNet's classes as one language names them: `indices` (ImageNet class numbers), their `classnames`, and
    the templates (class slot `{}`)."""

    language: str
    indices: list[int]
    classnames: list[str]
    templates: list[str]
    source: str


def clip_benchmark_file(name: str) -> Any:
    """One of CLIP_benchmark's shipped JSON files: from the installed package, else the cached or fetched copy."""
    try:
        from importlib import resources

        return json.loads(resources.files("clip_benchmark.datasets").joinpath(name).read_text("utf-8"))
    except (ModuleNotFoundError, FileNotFoundError):
        return json.loads(_fetched(name).read_text("utf-8"))


def _fetched(name: str) -> Path:
    from pixprompt.paths import cache_root
    from pixprompt.storage import write_text_atomic

    path = cache_root() / "languages" / name
    if path.is_file():
        return path
    import requests

    try:
        response = requests.get(SOURCE_URL.format(name), timeout=60, stream=True)
        response.raise_for_status()
        data = response.raw.read(MAX_FILE_BYTES + 1, decode_content=True)
    except requests.RequestException as error:
        raise UnavailableError(f"class names in other languages come from CLIP_benchmark: install it (pip install "
                               f"clip-benchmark) or let pixprompt fetch {SOURCE_URL.format(name)} "
                               f"({first_line(error, 120)})") from None
    if len(data) > MAX_FILE_BYTES:
        raise UnavailableError(f"{SOURCE_URL.format(name)} is larger than {MAX_FILE_BYTES:,} bytes: not "
                               "CLIP_benchmark's file")
    json.loads(data)  # refuse anything that is not JSON before keeping it
    write_text_atomic(path, data.decode("utf-8"))
    return path


@lru_cache(maxsize=8)
def imagenet_in(language: str) -> LanguageNames:
    """ImageNet's class names and templates in `language` (see the module's docstring)."""
    language = language.strip().lower()
    if language in TRANSLATED:
        names = clip_benchmark_file(f"{language}_classnames.json")["imagenet1k"]
        templates = clip_benchmark_file(f"{language}_zeroshot_classification_templates.json")["imagenet1k"]
        return LanguageNames(language, list(range(len(names))), list(names),
                             [t.replace("{c}", "{}") for t in templates], "CLIP_benchmark's translation")
    babel = clip_benchmark_file("babel_imagenet.json")
    if language.upper() not in babel:
        choices = ", ".join(dict.fromkeys([*TRANSLATED, *sorted(k.lower() for k in babel)]))
        raise UsageError(f"--language {language[:20]!r}: ImageNet's class names exist in {choices}")
    indices, names = babel[language.upper()]
    templates = clip_benchmark_file("nllb_dist13b_prompts.json")[language.upper()]
    return LanguageNames(language, list(indices), list(names), list(templates), "Babel-ImageNet")


def localised(dataset: ImageDataset, language: str, templates_folder: Path) -> ImageDataset:
    """`dataset` with its ImageNet classes named in `language` and that language's templates as its default (a
    template file written to `templates_folder`); classes the language does not name are left out with their
    images (Babel-ImageNet)."""
    if not dataset.wnids:
        raise UsageError(f"--language: {dataset.name} has no ImageNet classes; class names in other languages exist "
                         "for ImageNet and its subsets and shifts")
    names = imagenet_in(language)
    position = {wnid: i for i, wnid in enumerate(imagenet_wnids())}
    named = dict(zip(names.indices, names.classnames))
    kept = [c for c, wnid in enumerate(dataset.wnids) if position[wnid] in named]
    if not kept:
        raise UsageError(f"--language {names.language}: {names.source} names none of {dataset.name}'s classes")
    renumbered = {old: new for new, old in enumerate(kept)}
    rows = [row for row, label in enumerate(dataset.labels) if label in renumbered]
    images = dataset.images
    if len(rows) < len(dataset.labels):
        if not hasattr(images, "paths"):  # only image files can be left out by path (FileImages)
            raise UsageError(f"--language {names.language}: {names.source} names {len(kept)} of {dataset.name}'s "
                             f"classes, and only file datasets can leave the others' images out")
        images = replace(images, paths=[images.paths[row] for row in rows])
    from pixprompt.prompts.templates import template_file_text
    from pixprompt.storage import write_text_atomic

    template_file = templates_folder / f"imagenet-{names.language}.txt"
    text = template_file_text(names.templates, f"ImageNet templates in {names.language}: {names.source}, via "
                                               "CLIP_benchmark")
    if not template_file.is_file() or template_file.read_text("utf-8") != text:
        write_text_atomic(template_file, text)
    return replace(dataset, classnames=[named[position[dataset.wnids[c]]] for c in kept], images=images,
                   labels=[renumbered[dataset.labels[row]] for row in rows], wnids=[dataset.wnids[c] for c in kept],
                   default_templates=str(template_file), language=names.language,
                   split=dataset.split if len(kept) == len(dataset.wnids) else
                   f"{dataset.split} ({len(kept)} of {len(dataset.wnids)} classes named in {names.language})")
