"""Template selection as OpenAI chose its 7 ImageNet templates (openai/CLIP notebooks/Prompt_Engineering_for_
ImageNet.ipynb), on embedding arrays: greedy forward selection on a validation set — add the candidate that most
raises the ensemble's accuracy, stop when none raises it."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from pixprompt.prompts.classifier import ZeroShotClassifier


@dataclass(frozen=True)
class Step:
    template: str
    accuracy: float


def ensemble_accuracy(summed: torch.Tensor, features: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 of the classifier whose class weights are the normalised sums `summed` (C, D) of template embeddings
    (embedding ensembling: the mean, renormalised, ranks classes as the sum does)."""
    weights = torch.nn.functional.normalize(summed, dim=-1)
    return float(((features @ weights.T).argmax(dim=1) == labels).double().mean())


def forward_selection(per_template: torch.Tensor, templates: list[str], features: torch.Tensor,
                      labels: torch.Tensor) -> list[Step]:
    """The greedy path over `per_template` (T, C, D) normalised class embeddings, one per template: each step adds
    the template whose addition gives the best accuracy (ties: the earlier candidate), while it improves."""
    features = features.float()
    chosen: list[int] = []
    summed = torch.zeros_like(per_template[0])
    path: list[Step] = []
    best_so_far = -1.0
    while len(chosen) < len(templates):
        scores = {t: ensemble_accuracy(summed + per_template[t], features, labels)
                  for t in range(len(templates)) if t not in chosen}
        candidate = max(scores, key=lambda t: (scores[t], -t))
        if scores[candidate] <= best_so_far:
            break
        chosen.append(candidate)
        summed = summed + per_template[candidate]
        best_so_far = scores[candidate]
        path.append(Step(templates[candidate], best_so_far))
    return path


def per_template_embeddings(classifier: ZeroShotClassifier) -> torch.Tensor:
    """(T, C, D) each template's class embeddings, from a templated classifier."""
    return classifier.by_template().float().transpose(0, 1)
