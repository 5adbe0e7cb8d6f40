"""Image ↔ text retrieval on embedding arrays, as CLIP-like papers, CLIP_benchmark's `zeroshot_retrieval` and
DataComp score it: every caption against every image by cosine similarity.

- `image_retrieval_recall@k` (text → image): the share of captions whose own image is among the k images most
  similar to it.
- `text_retrieval_recall@k` (image → text): the share of images with at least one of their own captions among
  the k captions most similar to them.
- `mean_recall@1`: DataComp's main metric, the mean of the two recalls at 1.

Each row's top k is taken by `torch.topk` on that row, as CLIP_benchmark's `recall_at_k` (and DataComp, which calls
it) takes it, so ties (identical captions have identical embeddings, and COCO and Flickr repeat captions) are broken
exactly as theirs are, not counted in the item's favour; memory stays at one block of rows of scores.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

#: The recalls CLIP_benchmark and DataComp report.
RECALL_AT = (1, 5, 10)
#: Scores held at once (a block of rows × every column).
BLOCK_SCORES = 1 << 24


def _row_blocks(rows: int, columns: int) -> list[torch.Tensor]:
    """Row numbers 0…rows-1 in blocks of at most BLOCK_SCORES scores."""
    return list(torch.arange(rows).split(max(1, BLOCK_SCORES // max(1, columns))))


def retrieval_hits(image_features: torch.Tensor, text_features: torch.Tensor, text_image: torch.Tensor,
                   recall_at: Sequence[int] = RECALL_AT) -> tuple[dict[int, torch.Tensor], dict[int, torch.Tensor]]:
    """({k: whether each caption's image is among its top k images}, {k: whether each image has one of its captions
    among its top k captions}), the top k of each row taken by `torch.topk` as CLIP_benchmark takes it (k capped at
    the row's length). Features L2-normalised (float32, as the references score them); `text_image[t]` is caption
    t's image."""
    images, texts = image_features.float(), text_features.float()
    text_image = text_image.long()
    caption_hits = {k: torch.zeros(len(texts), dtype=torch.bool) for k in recall_at}
    image_hits = {k: torch.zeros(len(images), dtype=torch.bool) for k in recall_at}
    for rows in _row_blocks(len(texts), len(images)):
        block = texts[rows] @ images.T  # (captions, images)
        for k in recall_at:  # one topk per k, as the reference calls it: with ties a longer top k may order its head
            top = block.topk(min(k, len(images)), dim=1).indices
            caption_hits[k][rows] = (top == text_image[rows, None]).any(dim=1)
    for rows in _row_blocks(len(images), len(texts)):
        block = (texts @ images[rows].T).T  # (images, captions): the reference's scores.T
        for k in recall_at:
            top = block.topk(min(k, len(texts)), dim=1).indices
            image_hits[k][rows] = (text_image[top] == rows[:, None]).any(dim=1)
    return caption_hits, image_hits


def retrieval_metrics(image_features: torch.Tensor, text_features: torch.Tensor, text_image: torch.Tensor,
                      recall_at: Sequence[int] = RECALL_AT) -> dict[str, float]:
    """CLIP_benchmark's recall@k in both directions (its names) and DataComp's `mean_recall@1` (when 1 is asked)."""
    caption_hits, image_hits = retrieval_hits(image_features, text_features, text_image, recall_at)
    metrics: dict[str, float] = {}
    for k in recall_at:
        metrics[f"image_retrieval_recall@{k}"] = float(caption_hits[k].double().mean())
        metrics[f"text_retrieval_recall@{k}"] = float(image_hits[k].double().mean())
    if 1 in recall_at:
        metrics["mean_recall@1"] = (metrics["image_retrieval_recall@1"] + metrics["text_retrieval_recall@1"]) / 2
    return metrics
