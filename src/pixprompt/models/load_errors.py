"""One actionable line for each way loading weights fails, instead of a library's wall of keys."""
from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

_SIZE_MISMATCH = re.compile(r"size mismatch for ([\w.]+): copying a param with shape torch\.Size\(\[([\d, ]*)\]\) "
                            r"from checkpoint, the shape in current model is torch\.Size\(\[([\d, ]*)\]\)")
_KEY_LIST = re.compile(r"(Missing|Unexpected) key\(s\) in state_dict: ((?:\"[^\"]+\"(?:, )?)+)")
_DAMAGED = ("Error while deserializing header", "invalid load key", "PytorchStreamReader failed", "unpickling",
            "could not find MARK", "Invalid magic number", "HeaderTooLarge", "MetadataIncompleteBuffer",
            "failed finding central directory", "incomplete metadata")


def is_local(name: str) -> bool:
    """Whether `name` points at a folder or file on this machine rather than at a download."""
    return Path(name.removeprefix("local-dir:")).expanduser().exists()


def _state_dict_mismatch(message: str, name: str) -> str | None:
    sizes = _SIZE_MISMATCH.findall(message)
    keys = {kind: re.findall(r'"([^"]+)"', listed) for kind, listed in _KEY_LIST.findall(message)}
    if not sizes and not keys:
        return None
    parts = []
    if sizes:
        key, checkpoint, model = sizes[0]
        parts.append(f"{len(sizes)} tensor(s) differ in shape, e.g. {key}: checkpoint [{checkpoint}] vs "
                     f"architecture [{model}]")
    for kind, listed in keys.items():
        parts.append(f"{len(listed)} {kind.lower()} key(s), e.g. {listed[0]}")
    return (f"the weights of {name} do not fit its architecture ({'; '.join(parts)}): the config and the "
            "checkpoint belong to different models; use the config that came with these weights")


def _transformers_mismatch(message: str, name: str) -> str | None:
    if "ignore_mismatched_sizes" not in message:
        return None
    return (f"the weights of {name} do not fit the architecture in its config.json (tensor shapes differ): "
            "the config and the checkpoint belong to different models; use the config that came with them")


def _damaged_file(message: str, name: str) -> str | None:
    if not any(marker.lower() in message.lower() for marker in _DAMAGED):
        return None
    where = "the checkpoint file" if not is_local(name) else f"a weights file in {name.removeprefix('local-dir:')}"
    return (f"{where} is damaged or not a checkpoint ({message.splitlines()[0][:120]}): download or save it "
            "again (an interrupted download leaves such files; delete it and retry)")


#: Tried in order; the first that recognises the message describes it.
DESCRIBERS: list[Callable[[str, str], str | None]] = [_state_dict_mismatch, _transformers_mismatch, _damaged_file]


def describe_load_error(error: BaseException, name: str) -> str | None:
    """A one-line explanation of a recognised loading failure, or None for anything else."""
    message = str(error)
    for describe in DESCRIBERS:
        line = describe(message, name)
        if line:
            return line
    return None
