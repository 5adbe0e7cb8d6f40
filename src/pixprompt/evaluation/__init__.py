"""Evaluation layer: predictions, metrics and runs over datasets."""
from pixprompt._lazy import lazy_exports

__getattr__, __dir__ = lazy_exports(__name__, {
    "Prediction": "pixprompt.evaluation.predict",
    "classify": "pixprompt.evaluation.predict",
    "classify_many": "pixprompt.evaluation.predict",
    "classification_metrics": "pixprompt.evaluation.metrics",
    "evaluate": "pixprompt.evaluation.runs",
})

__all__ = ["Prediction", "classification_metrics", "classify", "classify_many", "evaluate"]
