"""Class names from the command line or a file, checked before any model work starts."""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from pixprompt.errors import UsageError
from pixprompt.readers import read_text


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
        lines = read_text(labels_file, "label file").splitlines()
        return validate_classnames(line for line in lines if line.strip())
    if labels is None or not labels.strip():
        return validate_classnames([])
    return validate_classnames(labels.split(","))
