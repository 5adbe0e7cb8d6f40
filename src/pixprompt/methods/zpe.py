"""ZPE, zero-shot prompt ensembling (Allingham et al., "A Simple Zero-shot Prompt Weighting Technique to Improve
Prompt Ensembling in Text-Image Models", ICML 2023, Algorithm 2): each template's weight comes from unlabeled
images alone. A template's score is the mean over the images of its largest logit after each class's mean logit
over those images is subtracted (the paper's correction of the per-class logit bias); the weights are the softmax
of the scores, and a class's logit is the weighted sum of its templates' logits. The paper takes the per-class
mean over pre-training images where it has them, and the test images otherwise: pixprompt has only the latter."""
from __future__ import annotations

from collections.abc import Iterable

import torch


def zpe_template_scores(template_logits: Iterable[torch.Tensor]) -> torch.Tensor:
    """(T,) each template's ZPE score from its logits over the unlabeled images ((N, C) per template, read once: a
    generator keeps one template's logits in memory at a time)."""
    scores = []
    for logits in template_logits:
        logits = logits.double()
        scores.append((logits - logits.mean(dim=0, keepdim=True)).max(dim=1).values.mean())
    return torch.stack(scores)


def zpe_weights(template_logits: Iterable[torch.Tensor], temperature: float = 1.0) -> torch.Tensor:
    """(T,) the templates' weights: softmax(score / temperature) (the paper's is 1)."""
    return torch.softmax(zpe_template_scores(template_logits) / temperature, dim=0)


def weighted_class_embeddings(by_template: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(C, D) Σ_t w_t · (each class's embedding under template t), from (C, T, D) and (T,): the class's logit under
    it is the weighted sum of its templates' logits (logits are affine in the embedding and the weights sum to 1)."""
    return torch.einsum("ctd,t->cd", by_template.double(), weights.double()).float()
