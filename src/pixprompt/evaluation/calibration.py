"""Temperature scaling (Guo et al., On Calibration of Modern Neural Networks, ICML 2017): one scalar T > 0
dividing the scores before softmax (or sigmoid), fitted on a validation set by minimising the labels' negative
log-likelihood. It changes no prediction, only the probabilities shown."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from pixprompt.data.datasets import ImageDataset
from pixprompt.errors import UsageError
from pixprompt.features.cache import FeatureSet
from pixprompt.models.base import VisionLanguageModel
from pixprompt.prompts.classifier import ZeroShotClassifier
from pixprompt.prompts.templates import PromptSet


def fit_temperature(classifier: ZeroShotClassifier, scores: torch.Tensor, labels: torch.Tensor,
                    ensemble: str = "embedding") -> float:
    """The T minimising the mean negative log-likelihood of `labels` under `classifier`'s probabilities of
    `scores` / T (L-BFGS on log T, so T stays positive)."""
    if ensemble == "vote":
        raise UsageError("vote ensembling gives vote shares, not probabilities: calibrate embedding or logits")
    if not len(labels):
        raise UsageError("the calibration set has no readable image")
    scores = scores.double()
    log_temperature = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_temperature], lr=0.5, max_iter=200, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        scaled = dataclasses.replace(classifier, temperature=log_temperature.exp())
        value = scaled.negative_log_likelihood(scores, labels, ensemble).mean()
        value.backward()
        return value

    optimiser.step(loss)
    return float(log_temperature.detach().exp())


def temperature_on(model: VisionLanguageModel, validation: ImageDataset, features: FeatureSet,
                   prompt_set: PromptSet, cache_root: Path | None, ensemble: str = "embedding") -> float:
    """The temperature fitted on `validation`'s encoded `features`, its own classes prompted with `prompt_set`."""
    from pixprompt.evaluation.runs import scores, text_classifier

    if validation.multi_label:
        raise UsageError(f"{validation.name} is multi-label: calibrate on a single-label dataset")
    classifier = text_classifier(model, validation.classnames, prompt_set, cache_root)
    validation_scores = scores(classifier, features.features[features.valid], ensemble)
    return fit_temperature(classifier, validation_scores, features.labels[features.valid], ensemble)
