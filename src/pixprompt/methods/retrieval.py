"""Image ↔ text retrieval on embedding arrays, as CLIP-like papers, CLIP_benchmark's `zeroshot_retrieval` and
DataComp score it: every caption against every image by cosine similarity.

- `image_retrieval_recall@k` (text → image): the share of captions whose own image is among the k images most
  similar to it.
- `text_retrieval_recall@k` (image → text): the share of images with at least one of their own captions among
  the k captions most similar to them.
- `mean_recall@1`: DataComp's main metric, the mean of the two recalls at 1.

Ranks are counted, not sorted: a caption's image is within the top k when fewer than k images score higher, so
memory stays at one block of (captions × images) scores; ties (rare with float embeddings) count in the item's
favour, where `torch.topk` would break them by index.
"""
from __future__ import annotations

from collections.abc import Sequence

import torch

#: The recalls CLIP_benchmark and DataComp report.
RECALL_AT = (1, 5, 10)
#: Captions scored at once (a block of scores is BLOCK_CAPTIONS × images).
BLOCK_CAPTIONS = 1024


def retrieval_ranks(image_features: torch.Tensor, text_features: torch.Tensor, text_image: torch.Tensor
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """(per caption, per image) 0-based ranks: for each caption, how many images score above its own image; for
    each image, how many captions score above its best own caption. Features L2-normalised (float32, as the
    references score them); `text_image[t]` is caption t's image."""
    images, texts = image_features.float(), text_features.float()
    text_image = text_image.long()

    def blocks():  # the same products both times, so a pair's score is bit-for-bit the same in both passes
        for start in range(0, len(texts), BLOCK_CAPTIONS):
            yield start, texts[start:start + BLOCK_CAPTIONS] @ images.T  # (captions, images)

    caption_ranks = torch.empty(len(texts), dtype=torch.long)
    best_own = torch.full((len(images),), -torch.inf)
    for start, block in blocks():
        owners = text_image[start:start + len(block)]
        own = block.gather(1, owners[:, None])
        caption_ranks[start:start + len(block)] = (block > own).sum(dim=1)
        best_own.scatter_reduce_(0, owners, own[:, 0], reduce="amax")
    image_ranks = torch.zeros(len(images), dtype=torch.long)
    for _, block in blocks():
        image_ranks += (block > best_own[None, :]).sum(dim=0)
    return caption_ranks, image_ranks


def retrieval_metrics(image_features: torch.Tensor, text_features: torch.Tensor, text_image: torch.Tensor,
                      recall_at: Sequence[int] = RECALL_AT) -> dict[str, float]:
    """CLIP_benchmark's recall@k in both directions (its names) and DataComp's `mean_recall@1` (when 1 is asked)."""
    caption_ranks, image_ranks = retrieval_ranks(image_features, text_features, text_image)
    metrics: dict[str, float] = {}
    for k in recall_at:
        metrics[f"image_retrieval_recall@{k}"] = float((caption_ranks < k).double().mean())
        metrics[f"text_retrieval_recall@{k}"] = float((image_ranks < k).double().mean())
    if 1 in recall_at:
        metrics["mean_recall@1"] = (metrics["image_retrieval_recall@1"] + metrics["text_retrieval_recall@1"]) / 2
    return metrics
