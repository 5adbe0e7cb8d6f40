"""Prompts layer: template sets, class names, ensembling, and the zero-shot classifier they build."""
from pixprompt.prompts.classifier import ZeroShotClassifier, build_classifier
from pixprompt.prompts.ensembling import ENSEMBLERS
from pixprompt.prompts.labels import parse_labels, validate_classnames
from pixprompt.prompts.templates import TEMPLATE_SETS, PromptSet, load_descriptions, resolve_templates

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
