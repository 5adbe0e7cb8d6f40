"""Calibrating a run: the temperature (see `methods.temperature`) fitted on a validation dataset's cached
features, its own classes prompted with the run's template set."""
from __future__ import annotations

from pathlib import Path

from pixprompt.data.datasets import ImageDataset
from pixprompt.errors import UsageError
from pixprompt.evaluation.scoring import scores, text_classifier
from pixprompt.features.cache import FeatureSet
from pixprompt.methods.temperature import fit_temperature
from pixprompt.models.base import VisionLanguageModel
from pixprompt.prompts.templates import PromptSet


def temperature_on(model: VisionLanguageModel, validation: ImageDataset, features: FeatureSet,
                   prompt_set: PromptSet, cache_root: Path | None, ensemble: str = "embedding") -> float:
    """The temperature fitted on `validation`'s encoded `features`, its own classes prompted with `prompt_set`."""
    if validation.multi_label:
        raise UsageError(f"{validation.name} is multi-label: calibrate on a single-label dataset")
    classifier = text_classifier(model, validation.classnames, prompt_set, cache_root)
    validation_scores = scores(classifier, features.features[features.valid], ensemble)
    return fit_temperature(classifier, validation_scores, features.labels[features.valid], ensemble)
