"""Prompts layer: template sets, class names, ensembling, and the zero-shot classifier they build."""
from pixprompt._lazy import lazy_exports
from pixprompt.prompts.labels import parse_labels, validate_classnames
from pixprompt.prompts.templates import TEMPLATE_SETS, PromptSet, load_descriptions, resolve_templates

__getattr__, __dir__ = lazy_exports(__name__, {
    "ENSEMBLERS": "pixprompt.prompts.ensembling",
    "ZeroShotClassifier": "pixprompt.prompts.classifier",
    "build_classifier": "pixprompt.prompts.classifier",
})

__all__ = [
    "ENSEMBLERS",
    "TEMPLATE_SETS",
    "PromptSet",
    "ZeroShotClassifier",
    "build_classifier",
    "load_descriptions",
    "parse_labels",
    "resolve_templates",
    "validate_classnames",
]
