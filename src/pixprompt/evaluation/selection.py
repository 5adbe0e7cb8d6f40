"""Template selection as OpenAI chose its 7 ImageNet templates (openai/CLIP notebooks/Prompt_Engineering_for_
ImageNet.ipynb): greedy forward selection on a validation set — add the candidate that most raises the
ensemble's accuracy, stop when none raises it."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from pixprompt.data.datasets import ImageDataset
from pixprompt.features.cache import FeatureSet, extract_features
from pixprompt.models.base import VisionLanguageModel
from pixprompt.prompts.classifier import ZeroShotClassifier
from pixprompt.prompts.templates import PromptSet


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


def select_templates(model: VisionLanguageModel, validation: ImageDataset, candidates: PromptSet,
                     held_out: ImageDataset | None = None, cache_root: Path | None = None,
                     batch_size: int | None = None, workers: int | None = None) -> dict[str, Any]:
    """Forward selection from `candidates` on `validation`; with `held_out`, the chosen and the whole candidate
    set's accuracy there. A record: the path, the chosen templates, the comparison ({} on ranks other than 0)."""
    from pixprompt.evaluation.runs import run_facts
    from pixprompt.evaluation.scoring import text_classifier

    encoded = [extract_features(model, data, cache_root, batch_size=batch_size, workers=workers)
               for data in (validation, held_out) if data is not None]
    if encoded[0] is None:
        return {}

    def accuracies(data: ImageDataset, features: FeatureSet, subset: list[str]) -> tuple[float, float]:
        classifier = text_classifier(model, data.classnames, candidates, cache_root)
        embeddings = per_template_embeddings(classifier)
        x, y = features.features[features.valid].float(), features.labels[features.valid]
        chosen = [candidates.templates.index(t) for t in subset]
        return ensemble_accuracy(embeddings[chosen].sum(0), x, y), ensemble_accuracy(embeddings.sum(0), x, y)

    classifier = text_classifier(model, validation.classnames, candidates, cache_root)
    features = encoded[0]
    path = forward_selection(per_template_embeddings(classifier), list(candidates.templates),
                             features.features[features.valid], features.labels[features.valid])
    chosen = [step.template for step in path]
    chosen_validation, all_validation = accuracies(validation, features, chosen)
    chosen_held, all_held = accuracies(held_out, encoded[1], chosen) if held_out is not None else (None, None)
    comparison = [{"templates": "chosen", "count": len(chosen), "selection set %": round(100 * chosen_validation, 2),
                   "held-out %": None if chosen_held is None else round(100 * chosen_held, 2)},
                  {"templates": f"all of {candidates.name}", "count": len(candidates.templates),
                   "selection set %": round(100 * all_validation, 2),
                   "held-out %": None if all_held is None else round(100 * all_held, 2)}]
    return {**run_facts(model.info, validation, features), "templates": f"selected from {candidates.name}",
            "ensemble": "embedding", "candidates": candidates.name, "chosen": chosen,
            "selection_path": [{"template": s.template, "accuracy": s.accuracy} for s in path],
            "top1": chosen_held if chosen_held is not None else chosen_validation,
            "held_out_dataset": held_out.name if held_out is not None else None, "comparison": comparison}
