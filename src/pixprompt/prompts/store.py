"""Reuse a saved classifier when it was built from the same model, classes and prompts."""
from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

from pixprompt.models.base import VisionLanguageModel
from pixprompt.prompts.classifier import ZeroShotClassifier, build_classifier
from pixprompt.prompts.templates import PromptSet
from pixprompt.storage import cache_write

log = logging.getLogger(__name__)


def matches(classifier: ZeroShotClassifier, model: VisionLanguageModel, classnames: Sequence[str],
            prompt_set: PromptSet) -> bool:
    """Whether a stored classifier was built from exactly these inputs."""
    return (classifier.model_identity == model.info.identity and classifier.classnames == list(classnames)
            and classifier.prompt_set == prompt_set)


def classifier_for(model: VisionLanguageModel, classnames: Sequence[str], prompt_set: PromptSet,
                   path: str | Path | None = None) -> ZeroShotClassifier:
    """Load the classifier at `path` if it matches, else build it (and save it there if a path is given)."""
    if path is not None and Path(path).is_file():
        stored = ZeroShotClassifier.load(path)
        if matches(stored, model, [c.strip() for c in classnames], prompt_set):
            log.info("reusing classifier %s", path)
            return stored
        log.warning("classifier %s was built from other inputs; rebuilding it", path)
    classifier = build_classifier(model, classnames, prompt_set)
    if path is not None:
        cache_write(lambda: classifier.save(path), path)
    return classifier
