"""`eval` on a retrieval dataset (Flickr30k, MSCOCO captions, any images with captions): the images and every
caption encoded — both cached, the captions as the classifiers are — and scored by `methods.retrieval`."""
from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from pixprompt.data.datasets import ImageDataset
from pixprompt.evaluation.scoring import text_classifier
from pixprompt.features.cache import FeatureSet
from pixprompt.methods.retrieval import retrieval_metrics
from pixprompt.models.base import VisionLanguageModel
from pixprompt.progress import counted
from pixprompt.prompts.templates import PromptSet

#: The metric a retrieval record is summed up by (DataComp's).
RETRIEVAL_METRIC = "mean_recall@1"


def caption_embeddings(model: VisionLanguageModel, captions: Sequence[tuple[str, ...]], cache_root: Path | None
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """(P, D) L2-normalised embeddings of every caption, image by image, and (P,) the row of each caption's image;
    from the cache when these captions were encoded by this model before (kept as a classifier whose classes are
    the images and whose descriptions are their captions)."""
    keys = [str(row) for row in range(len(captions))]
    count = sum(len(texts) for texts in captions)
    classifier = text_classifier(model, keys, PromptSet("captions", descriptions=dict(zip(keys, captions))),
                                 cache_root, f"encoding {counted(count, 'caption')} of {counted(len(keys), 'image')}")
    return classifier.prompt_embeddings, classifier.prompt_class


def retrieval_records(model: VisionLanguageModel, dataset: ImageDataset, features: FeatureSet,
                      cache_root: Path | None, facts: dict[str, Any], image_seconds: float) -> list[dict[str, Any]]:
    """`evaluate`'s one record for a retrieval dataset whose images are encoded (`features`), with the run's
    `facts`: the captions encoded (or read from the cache), then scored (see `methods.retrieval`). Captions of
    images that could not be read are left out with them (counted in `skipped`)."""
    started = time.perf_counter()
    rows = features.valid.nonzero().flatten()
    captions = [dataset.captions[int(row)] for row in rows]
    texts, text_image = caption_embeddings(model, captions, cache_root)
    metrics = retrieval_metrics(features.features[rows], texts, text_image)
    return [{**facts, "task": "retrieval", "templates": None, "ensemble": None, "captions": len(text_image),
             **metrics, "metric": RETRIEVAL_METRIC, "score": metrics[RETRIEVAL_METRIC],
             "elapsed_s": round(image_seconds + time.perf_counter() - started, 3)}]
