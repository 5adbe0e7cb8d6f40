"""Reuse a saved classifier when it was built from the same model, classes and prompts."""
from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

from pixprompt.errors import UsageError
from pixprompt.models.base import VisionLanguageModel
from pixprompt.prompts.classifier import ZeroShotClassifier, build_classifier, is_classifier_file
from pixprompt.prompts.templates import PromptSet
from pixprompt.storage import cache_write, is_regular_file

log = logging.getLogger(__name__)


def matches(classifier: ZeroShotClassifier, model: VisionLanguageModel, classnames: Sequence[str],
            prompt_set: PromptSet) -> bool:
    """Whether a stored classifier was built from exactly these inputs (local weights files unchanged)."""
    return (classifier.model_identity == model.info.identity and classifier.classnames == list(classnames)
            and classifier.prompt_set == prompt_set
            and classifier.metadata.get("weights_stamp", "") == model.weights_stamp)


def _stored(path: Path, owned: bool) -> ZeroShotClassifier | None:
    """The classifier saved at `path`, or None where it is damaged and may be rebuilt in its place.

    A damaged file is replaced when pixprompt owns it (`owned`: its cache) or it is a pixprompt classifier
    whose bytes changed; any other file (a model's weights, say) is refused, never overwritten.
    """
    try:
        return ZeroShotClassifier.load(path)
    except UsageError as error:
        if not (owned or is_classifier_file(path)):
            raise UsageError(f"{path} is not a pixprompt classifier file, and pixprompt never overwrites "
                             "other files: give --classifier a new file name (it is built and saved there)") from None
        log.warning("%s; rebuilding it", error)
        return None


def classifier_for(model: VisionLanguageModel, classnames: Sequence[str], prompt_set: PromptSet,
                   path: str | Path | None = None, owned: bool = False,
                   announcement: str | None = None) -> ZeroShotClassifier:
    """Load the classifier at `path` if it matches, else build it (and save it there if a path is given).

    `owned`: the file is pixprompt's own cache entry, removed and rebuilt whatever is wrong with it.
    """
    if path is not None and os.path.lexists(path) and not is_regular_file(Path(path)):
        if not owned:
            raise UsageError(f"{path} is not a regular file (a link, FIFO or device): give a classifier file name")
        if Path(path).is_dir() and not Path(path).is_symlink():  # never deleted with what it holds
            log.warning("a folder stands where cache file %s belongs: the classifier is built and not cached", path)
            path = None
        else:
            log.warning("removing %s from the cache: not a regular file", path)
            Path(path).unlink()
    if path is not None and Path(path).is_file():
        stored = _stored(Path(path), owned)
        if stored is not None and matches(stored, model, [c.strip() for c in classnames], prompt_set):
            log.info("reusing classifier %s", path)
            return stored
        if stored is not None:
            log.warning("classifier %s was built from other inputs or weights; rebuilding it", path)
    classifier = build_classifier(model, classnames, prompt_set, announcement=announcement)
    if path is not None:
        cache_write(lambda: classifier.save(path), path)
    return classifier
