"""Class names from the command line or a file, checked before any model work starts."""
from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from pixprompt.errors import UsageError


def read_text_file(path: str | Path, what: str) -> str:
    """A UTF-8 text file's content, or a one-line error naming the file and the fix."""
    path = Path(path).expanduser()
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{what} {path} does not exist") from None
    except OSError as error:
        raise UsageError(f"{what} {path} cannot be read: {error.strerror or error}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as error:
        raise UsageError(f"{what} {path} is not UTF-8 text (byte {error.start}): re-save it as UTF-8") from None


def read_json_mapping(path: str | Path, what: str, shape: str) -> dict:
    """A JSON file's non-empty top-level mapping, or a one-line error naming the file and the `shape` it needs."""
    try:
        data = json.loads(read_text_file(path, what))
    except json.JSONDecodeError as error:
        raise UsageError(f"{what} {path} is not valid JSON ({error})") from None
    if not isinstance(data, dict) or not data:
        raise UsageError(f"{what} {path} must map {shape}")
    return data


def validate_classnames(names: Iterable[str], unique: bool = True) -> list[str]:
    """Stripped class names; refuses an empty list, blank names and (if `unique`) duplicates, naming them.

    Built-in lists may repeat a name on purpose: CLIP's cleaned ImageNet names have two 'missile'
    and two 'sunglasses' classes, which must stay separate classes.
    """
    cleaned = [name.strip() for name in names]
    if not cleaned:
        raise UsageError("no class names given: pass --labels a,b,c, --labels-file FILE or --dataset NAME")
    blank = [i + 1 for i, name in enumerate(cleaned) if not name]
    if blank:
        raise UsageError(f"class name number {', '.join(map(str, blank[:5]))} is empty or only whitespace")
    duplicates = [name for name, count in Counter(cleaned).items() if count > 1]
    if duplicates and unique:
        raise UsageError(f"duplicate class names: {', '.join(map(repr, duplicates[:10]))}; each class once")
    return cleaned


def parse_labels(labels: str | None = None, labels_file: str | None = None) -> list[str]:
    """Class names from `--labels a,b,c` or `--labels-file` (one per line), validated."""
    if labels and labels_file:
        raise UsageError("give either --labels or --labels-file, not both")
    if labels_file:
        lines = read_text_file(labels_file, "label file").splitlines()
        return validate_classnames(line for line in lines if line.strip())
    if labels is None or not labels.strip():
        return validate_classnames([])
    return validate_classnames(labels.split(","))
