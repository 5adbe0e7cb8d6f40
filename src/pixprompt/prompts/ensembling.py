"""Ways to combine a class's prompts into one score: small pure functions over embeddings, in a registry.

Each takes image features (N, D), the classifier and returns scores (N, C) whose row order is the
prediction order; `embedding` and `logits` scores are logits in the model's own scale.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from pixprompt.errors import UsageError

if TYPE_CHECKING:  # the registry is named (and a mode checked) without importing torch
    import torch

    from pixprompt.prompts.classifier import ZeroShotClassifier

Ensembler = Callable[["torch.Tensor", "ZeroShotClassifier"], "torch.Tensor"]


def embedding_scores(image_features: torch.Tensor, classifier: ZeroShotClassifier) -> torch.Tensor:
    """Logits against the renormalised mean of each class's normalised prompt embeddings (CLIP's recipe)."""
    return classifier.scale_logits(image_features @ classifier.weights.T)


def logit_scores(image_features: torch.Tensor, classifier: ZeroShotClassifier) -> torch.Tensor:
    """The mean over a class's prompts of each prompt's logit.

    Logits are affine in the embedding, so the mean logit is the logit of the (unrenormalised) mean
    embedding: one matrix product instead of one per prompt.
    """
    return classifier.scale_logits(image_features @ classifier.mean_embeddings.T)


def vote_scores(image_features: torch.Tensor, classifier: ZeroShotClassifier) -> torch.Tensor:
    """Number of templates whose own prediction is each class, ties broken by the mean logit.

    Scores are `votes + tie-break`, the tie-break a per-row rescaling of the mean logit into [0, 0.5],
    so a class with more votes always ranks first.
    """
    import torch

    votes = torch.zeros(image_features.shape[0], classifier.num_classes)
    for template_logits in classifier.per_template_logits(image_features):
        votes.scatter_add_(1, template_logits.argmax(dim=1, keepdim=True), torch.ones(votes.shape[0], 1))
    mean_logits = logit_scores(image_features, classifier)
    low = mean_logits.min(dim=1, keepdim=True).values
    span = (mean_logits.max(dim=1, keepdim=True).values - low).clamp_min(1e-12)
    return votes + 0.5 * (mean_logits - low) / span


ENSEMBLERS: dict[str, Ensembler] = {"embedding": embedding_scores, "logits": logit_scores, "vote": vote_scores}


def get_ensembler(mode: str) -> Ensembler:
    """The ensembling function named `mode`, or a usage error listing the modes."""
    try:
        return ENSEMBLERS[mode]
    except KeyError:
        raise UsageError(f"unknown ensembling mode {mode!r}: use one of {', '.join(ENSEMBLERS)}") from None
