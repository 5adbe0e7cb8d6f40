"""Models layer: load CLIP-like dual encoders from open_clip or transformers behind one interface."""
from pixprompt._lazy import lazy_exports
from pixprompt.models.info import ModelInfo

__getattr__, __dir__ = lazy_exports(__name__, {
    "VisionLanguageModel": "pixprompt.models.base",
    "BACKENDS": "pixprompt.models.registry",
    "detect_backend": "pixprompt.models.registry",
    "load_model": "pixprompt.models.registry",
})

__all__ = ["BACKENDS", "ModelInfo", "VisionLanguageModel", "detect_backend", "load_model"]
