"""Evaluation layer: predictions, metrics and runs over datasets."""
from pixprompt.evaluation.predict import Prediction, classify

__all__ = ["Prediction", "classify"]
from pixprompt.evaluation.metrics import classification_metrics  # noqa: E402
from pixprompt.evaluation.runs import evaluate  # noqa: E402

__all__ += ["classification_metrics", "evaluate"]
