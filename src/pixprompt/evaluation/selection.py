"""`select-templates`: forward selection (see `methods.template_selection`) on a validation dataset's cached
features, with the chosen and the whole candidate set's accuracy on a held-out dataset."""
from __future__ import annotations

from typing import Any

from pixprompt.data.datasets import ImageDataset
from pixprompt.evaluation.settings import RunSettings, run_settings
from pixprompt.features.cache import FeatureSet
from pixprompt.methods.template_selection import ensemble_accuracy, forward_selection, per_template_embeddings
from pixprompt.models.base import VisionLanguageModel
from pixprompt.prompts.templates import PromptSet


def select_templates(model: VisionLanguageModel, validation: ImageDataset, candidates: PromptSet,
                     held_out: ImageDataset | None = None, settings: RunSettings | None = None,
                     **options: Any) -> dict[str, Any]:
    """Forward selection from `candidates` on `validation`; with `held_out`, the chosen and the whole candidate
    set's accuracy there. A record: the path, the chosen templates, the comparison ({} on ranks other than 0)."""
    from pixprompt.evaluation.runs import run_facts
    from pixprompt.evaluation.scoring import text_classifier

    settings = run_settings(settings, options)
    cache_root = settings.cache
    encoded = [settings.features(model, data) for data in (validation, held_out) if data is not None]
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
    return {**run_facts(model, validation, features), "templates": f"selected from {candidates.name}",
            "ensemble": "embedding", "candidates": candidates.name, "chosen": chosen,
            "selection_path": [{"template": s.template, "accuracy": s.accuracy} for s in path],
            "top1": chosen_held if chosen_held is not None else chosen_validation,
            "held_out_dataset": held_out.name if held_out is not None else None, "comparison": comparison}
