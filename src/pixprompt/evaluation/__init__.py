"""Evaluation layer: predictions, metrics and runs over datasets."""
from pixprompt.evaluation.predict import Prediction, classify, classify_many

__all__ = ["Prediction", "classify", "classify_many"]
from pixprompt.evaluation.metrics import classification_metrics
from pixprompt.evaluation.runs import evaluate

__all__ += ["classification_metrics", "evaluate"]
