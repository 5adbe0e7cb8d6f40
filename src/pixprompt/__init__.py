"""pixprompt: zero-shot image classification with CLIP-like vision-language models.

Importing the package is instant: the public names below load torch and the model libraries only when
first used (PEP 562).
"""
from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from pixprompt._lazy import lazy_exports
from pixprompt.errors import PixpromptError, UnavailableError, UsageError

try:
    __version__ = version("pixprompt")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0"

__getattr__, __dir__ = lazy_exports(__name__, {
    "VisionLanguageModel": "pixprompt.models.base",
    "load_model": "pixprompt.models.registry",
    "ZeroShotClassifier": "pixprompt.prompts.classifier",
    "build_classifier": "pixprompt.prompts.classifier",
    "resolve_templates": "pixprompt.prompts.templates",
})

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
