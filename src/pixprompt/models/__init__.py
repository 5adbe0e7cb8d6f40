"""Models layer: load CLIP-like dual encoders from open_clip or transformers behind one interface."""
from pixprompt.models.base import ModelInfo, VisionLanguageModel
from pixprompt.models.registry import BACKENDS, detect_backend, load_model

__all__ = ["BACKENDS", "ModelInfo", "VisionLanguageModel", "detect_backend", "load_model"]
