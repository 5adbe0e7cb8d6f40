"""Classify image files: encode → score with a zero-shot classifier → top-k rows."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from pixprompt.data.datasets import FileImages
from pixprompt.data.images import DEFAULT_MAX_PIXELS
from pixprompt.features.encoding import iter_encoded
from pixprompt.models.base import VisionLanguageModel
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
                  max_pixels: int | None = DEFAULT_MAX_PIXELS) -> list[list[Prediction]]:
    """Predictions of each classifier for each path (input order), from one pass over the images.

    Files that cannot be read, or that are over `max_pixels`, get an error row under every classifier.
    `jpeg_draft` decodes JPEGs at reduced scale (faster, approximate; see `decode_rgb`).
    """
    rows: list[dict[int, Prediction]] = [{} for _ in classifiers]
    images = FileImages([Path(p) for p in paths], model.decode_size if jpeg_draft else None, max_pixels)
    for batch in iter_encoded(model, images, batch_size=batch_size, workers=workers):
        for failure in batch.failures:
            for by_index in rows:
                by_index[failure.index] = Prediction(str(paths[failure.index]), error=failure.message)
        if len(batch.indices) == 0:
            continue
        for classifier, by_index in zip(classifiers, rows):
            k = max(1, min(top_k, classifier.num_classes))
            scores = classifier.scores(batch.features, ensemble)
            probabilities = classifier.probabilities(scores, ensemble)
            top = scores.topk(k, dim=1).indices
            for row, index in enumerate(batch.indices.tolist()):
                classes = top[row].tolist()
                by_index[index] = Prediction(
                    str(paths[index]),
                    labels=tuple(classifier.classnames[c] for c in classes),
                    probabilities=tuple(float(probabilities[row, c]) for c in classes),
                )
    return [[by_index[i] for i in range(len(paths))] for by_index in rows]


def classify(model: VisionLanguageModel, classifier: ZeroShotClassifier, paths: Sequence[Path],
             top_k: int = 5, ensemble: str = "embedding", batch_size: int | None = None,
             workers: int | None = None) -> list[Prediction]:
    """Predictions for each path in input order; files that cannot be read get an error row."""
    return classify_many(model, [classifier], paths, top_k, ensemble, batch_size, workers)[0]
