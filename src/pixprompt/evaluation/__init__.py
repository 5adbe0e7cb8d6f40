"""Evaluation layer: predictions, metrics and runs over datasets."""
from pixprompt.evaluation.predict import Prediction, classify

__all__ = ["Prediction", "classify"]
