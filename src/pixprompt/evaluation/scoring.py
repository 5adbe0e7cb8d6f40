"""Cached features and text classifiers, as every job uses them: the classifier for a model, class names and
template set (from the cache when it was built before), and every image's scores, block by block."""
from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch

from pixprompt.features.cache import classifier_path
from pixprompt.models.base import VisionLanguageModel
from pixprompt.prompts.classifier import ZeroShotClassifier
from pixprompt.prompts.store import classifier_for
from pixprompt.prompts.templates import PromptSet
from pixprompt.storage import remove_stale_partials

#: Images scored at once: scores of a block are (BLOCK_ROWS, classes), so memory does not grow with the data.
BLOCK_ROWS = 4096


def row_blocks(count: int) -> Iterator[slice]:
    return (slice(start, min(start + BLOCK_ROWS, count)) for start in range(0, count, BLOCK_ROWS))


def scores(classifier: ZeroShotClassifier, features: torch.Tensor, ensemble: str) -> torch.Tensor:
    """Every image's score for every class (N, C), computed block by block (for sets whose N × C fits in memory:
    multi-label datasets, probes' training and test sets, calibration sets)."""
    parts = [classifier.scores(features[rows], ensemble) for rows in row_blocks(len(features))]
    return torch.cat(parts) if parts else torch.zeros(0, classifier.num_classes)


def text_classifier(model: VisionLanguageModel, classnames: Sequence[str], prompt_set: PromptSet,
                    cache_root: Path | None, announcement: str | None = None) -> ZeroShotClassifier:
    """The classifier for these inputs, from the cache when it was built before (`announcement`: what building
    it is called, see `build_classifier`)."""
    path = None
    if cache_root is not None:
        key = json.dumps([prompt_set.name, prompt_set.templates, sorted(prompt_set.descriptions.items())])
        path = classifier_path(cache_root, model, classnames, key)
        remove_stale_partials(path.parent)
    return classifier_for(model, classnames, prompt_set, path, owned=True, announcement=announcement)
