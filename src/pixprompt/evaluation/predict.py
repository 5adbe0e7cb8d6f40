"""Classify image files: encode → score with a zero-shot classifier → top-k rows."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pixprompt.data.datasets import FileImages, ImageDataset
from pixprompt.data.images import DEFAULT_MAX_PIXELS
from pixprompt.features.cache import extract_features
from pixprompt.models.base import VisionLanguageModel
from pixprompt.paths import resolve_cache
from pixprompt.prompts.classifier import ZeroShotClassifier


@dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image, or the error that kept it from being classified."""

    path: str
    labels: tuple[str, ...] = ()
    probabilities: tuple[float, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def classify_many(model: VisionLanguageModel, classifiers: Sequence[ZeroShotClassifier], paths: Sequence[Path],
                  top_k: int = 5, ensemble: str = "embedding", batch_size: int | None = None,
                  workers: int | None = None, jpeg_draft: bool = False,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS,
                  cache_root: Path | str | bool | None = True) -> list[list[Prediction]]:
    """Predictions of each classifier for each path (input order), from one pass over the images.

    Image features go through the same cache as `evaluate` (`cache_root`: True for the default folder,
    a folder, or None for none), so trying other class names or templates on the same photos encodes
    no image again. Files that cannot be read, or that are over `max_pixels`, get an error row under
    every classifier. `jpeg_draft` decodes JPEGs at reduced scale (faster, approximate; see `decode_rgb`).
    """
    images = FileImages([Path(p) for p in paths], model.decode_size if jpeg_draft else None, max_pixels)
    files = ImageDataset("files", "classify", [], images, [0] * len(images))
    features = extract_features(model, files, resolve_cache(cache_root), batch_size=batch_size, workers=workers)
    valid = features.valid.nonzero().flatten().tolist()
    predictions = []
    for classifier in classifiers:
        by_index = {i: Prediction(str(paths[i]), error=message) for i, message in features.failures.items()}
        if valid:
            k = max(1, min(top_k, classifier.num_classes))
            scores = classifier.scores(features.features[valid], ensemble)
            probabilities = classifier.probabilities(scores, ensemble)
            top = scores.topk(k, dim=1).indices.tolist()
            for row, index in enumerate(valid):
                by_index[index] = Prediction(
                    str(paths[index]), labels=tuple(classifier.classnames[c] for c in top[row]),
                    probabilities=tuple(float(probabilities[row, c]) for c in top[row]))
        predictions.append([by_index[i] for i in range(len(paths))])
    return predictions


def classify(model: VisionLanguageModel, classifier: ZeroShotClassifier, paths: Sequence[Path],
             top_k: int = 5, ensemble: str = "embedding", batch_size: int | None = None,
             workers: int | None = None, cache_root: Path | str | bool | None = True) -> list[Prediction]:
    """Predictions for each path in input order; files that cannot be read get an error row."""
    return classify_many(model, [classifier], paths, top_k, ensemble, batch_size, workers, cache_root=cache_root)[0]
