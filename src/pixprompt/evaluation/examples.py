"""A few images per class with the model's top predictions, kept in the results for the visual report."""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import torch

from pixprompt.data.datasets import ImageDataset
from pixprompt.data.images import thumbnail_data_uri

log = logging.getLogger(__name__)


def pick_examples(labels: torch.Tensor, num_classes: int, per_class: int, max_classes: int = 12) -> list[int]:
    """Row indices: the first `per_class` rows of up to `max_classes` classes spread over all of them."""
    spread = torch.linspace(0, num_classes - 1, steps=min(num_classes, max_classes)).round().long().unique()
    rows: list[int] = []
    for label in spread.tolist():
        rows += (labels == label).nonzero().flatten()[:per_class].tolist()
    return rows


class Thumbnails:
    """Thumbnails of dataset items, made once per evaluation however many template sets it scores."""

    def __init__(self, dataset: ImageDataset):
        self.dataset = dataset
        self.made: dict[int, str | None] = {}

    def __call__(self, index: int) -> str | None:
        if index not in self.made:
            try:
                self.made[index] = thumbnail_data_uri(self.dataset.images.load(index))
            except Exception as error:  # the image decoded for encoding; a later failure only loses a picture
                log.debug("no thumbnail for %s: %s", self.dataset.images.describe(index), error)
                self.made[index] = None
        return self.made[index]


def example_predictions(thumbnails: Thumbnails, item_indices: torch.Tensor, labels: torch.Tensor,
                        probabilities_of: Callable[[torch.Tensor], torch.Tensor], classnames: list[str],
                        per_class: int, top_k: int = 3) -> list[dict[str, Any]]:
    """Up to `per_class` images of several classes, each with its true class and the model's top-k.

    `item_indices[i]` is the dataset index of row i of `labels`; `probabilities_of(rows)` gives the model's
    probabilities (len(rows), C) of those rows (only the picked rows are scored).
    """
    picked = pick_examples(labels, len(classnames), per_class)
    if not picked:
        return []
    top = probabilities_of(torch.tensor(picked)).topk(min(top_k, len(classnames)), dim=1)
    examples = []
    for position, row in enumerate(picked):
        index = int(item_indices[row])
        predicted = top.indices[position].tolist()
        examples.append({
            "image": thumbnails.dataset.images.describe(index),
            "thumbnail": thumbnails(index),
            "true": classnames[int(labels[row])],
            "top": [{"label": classnames[c], "probability": round(float(p), 4)}
                    for c, p in zip(predicted, top.values[position].tolist())],
            "correct": predicted[0] == int(labels[row]),
        })
    return examples
