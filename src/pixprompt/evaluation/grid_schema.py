"""The one schema of a `bench` config: every key it may have, the type of its value and what it means. A config is
checked against it before anything runs: an unknown or misspelt key is refused naming the nearest valid one, a value
of the wrong type naming the key and the type (exit 2). README's table of config keys lists the same keys."""
from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pixprompt.errors import UsageError, shown

TEXT, FLAG, TEXTS = "text", "true or false", "a text or a list of texts"


@dataclass(frozen=True)
class Key:
    kind: str
    means: str


#: The keys of a model entry (`models: [{model: …, pretrained: …}]`, or just a name).
MODEL_KEYS = {"model": Key(TEXT, "an open_clip name, hf-hub:…, local-dir:…, a transformers id or a folder"),
              "pretrained": Key(TEXT, "the open_clip pretrained tag")}
#: The keys of a dataset entry (`datasets: [{dataset: …, data_dir: …}]`, or just a spec).
DATASET_KEYS = {"dataset": Key(TEXT, "a dataset spec, as --dataset takes it"),
                "data_dir": Key(TEXT, "where its images are, as --data-dir"),
                "class_map": Key(TEXT, "a JSON file renaming folders to class names, as --class-map"),
                "language": Key(TEXT, "its class names' language, as --language"),
                "suite": Key(TEXT, "a suite's datasets instead of one dataset")}
#: The top-level keys.
CONFIG_KEYS = {
    "models": Key("a list of model names or {model, pretrained} entries", "the models, each loaded once"),
    "datasets": Key("a list of dataset specs or {dataset, data_dir, class_map, language} entries", "the datasets"),
    "suite": Key(TEXTS, "named suites (clip, imagenet-shifts, vtab, retrieval, datacomp) beside or instead of "
                        "datasets"),
    "data_root": Key(TEXT, "the folder holding a suite's datasets, each in data_root/NAME"),
    "download": Key(FLAG, "fetch what can be fetched (default true); false keeps to what is on disk"),
    "templates": Key(TEXTS, "template sets, as --templates (default: clip80, standard, raw; `default` is each "
                            "dataset's own)"),
    "ensemble": Key(TEXT, "how prompts are combined, as --ensemble (default embedding)"),
    "language": Key(TEXT, "every dataset's class-name language, as --language"),
    "method": Key(TEXTS, "label-free methods beside plain, as --method"),
    "hierarchy": Key(TEXT, "the class hierarchy file CHiLS reads, as --hierarchy"),
    "descriptions": Key(TEXT, "a --descriptions spec added to every dataset's template sets"),
}


def check_config(data: Any, where: str) -> dict[str, Any]:
    """`data` (a parsed config) if it follows the schema, else one usage line naming the first thing that does not."""
    if not isinstance(data, Mapping):
        raise UsageError(f"{where} must be a mapping of keys ({', '.join(CONFIG_KEYS)}), not {_kind(data)}")
    _known_keys(data, CONFIG_KEYS, where)
    for key, value in data.items():
        if key in ("models", "datasets"):
            entry_keys, main = (MODEL_KEYS, "model") if key == "models" else (DATASET_KEYS, "dataset")
            if not isinstance(value, list):
                raise UsageError(f"{where}: `{key}` must be {CONFIG_KEYS[key].kind}, not {_kind(value)}")
            for number, entry in enumerate(value, start=1):
                _check_entry(entry, entry_keys, main, f"{where}: {key} entry {number}")
        else:
            _check_value(value, CONFIG_KEYS[key].kind, f"{where}: `{key}`")
    return dict(data)


def _check_entry(entry: Any, keys: dict[str, Key], main: str, where: str) -> None:
    if isinstance(entry, str):
        return
    if not isinstance(entry, Mapping):
        raise UsageError(f"{where} must be a text or a mapping with `{main}:`, not {_kind(entry)}")
    _known_keys(entry, keys, where)
    if main not in entry and "suite" not in entry:
        raise UsageError(f"{where} needs `{main}:`")
    for key, value in entry.items():
        _check_value(value, keys[key].kind, f"{where}: `{key}`")


def _known_keys(data: Mapping, keys: dict[str, Key], where: str) -> None:
    for key in data:
        if key not in keys:
            nearest = difflib.get_close_matches(str(key), keys, n=1, cutoff=0.5)
            hint = f"did you mean `{nearest[0]}`? " if nearest else ""
            raise UsageError(f"{where}: unknown key `{str(key)[:40]}`: {hint}(the keys are {', '.join(keys)})")


def _check_value(value: Any, kind: str, where: str) -> None:
    fits = {TEXT: isinstance(value, str), FLAG: isinstance(value, bool),
            TEXTS: isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))}
    if not fits.get(kind, True):
        raise UsageError(f"{where} must be {kind}, not {_kind(value)}")


def _kind(value: Any) -> str:
    """A value's type in a config's words, with a glimpse of it."""
    names = {bool: "true/false", int: "a number", float: "a number", str: "a text", list: "a list", dict: "a mapping"}
    return f"{names.get(type(value), type(value).__name__)} ({shown(value, 40)})"
