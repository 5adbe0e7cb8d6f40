"""pixprompt: zero-shot image classification with CLIP-like vision-language models."""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("pixprompt")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

from pixprompt.errors import PixpromptError, UnavailableError, UsageError
from pixprompt.models import VisionLanguageModel, load_model
from pixprompt.prompts import ZeroShotClassifier, build_classifier, resolve_templates

__all__ = [
    "PixpromptError",
    "UnavailableError",
    "UsageError",
    "VisionLanguageModel",
    "ZeroShotClassifier",
    "build_classifier",
    "load_model",
    "resolve_templates",
]
