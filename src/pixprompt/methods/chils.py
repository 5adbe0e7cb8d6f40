"""CHiLS, classification with hierarchical label sets (Novack et al., "CHiLS: Zero-Shot Image Classification with
Hierarchical Label Sets", ICML 2023, the authors' `conf_pred`, their default reweighting): every subclass's softmax
probability among all subclasses is multiplied by its superclass's softmax probability among the superclasses, and
the image goes to the superclass of its most probable subclass."""
from __future__ import annotations

import torch


def chils_scores(superclass_logits: torch.Tensor, subclass_logits: torch.Tensor,
                 subclass_parent: torch.Tensor) -> torch.Tensor:
    """(N, S) each superclass's score: the largest reweighted probability among its subclasses (0 for a
    superclass without any), from (N, S) and (N, K) logits and each subclass's superclass index (K,)."""
    reweighted = subclass_logits.double().softmax(dim=1) * superclass_logits.double().softmax(dim=1)[:, subclass_parent]
    scores = torch.zeros(superclass_logits.shape, dtype=torch.float64)
    index = subclass_parent[None, :].expand_as(reweighted)
    return scores.scatter_reduce(1, index, reweighted, reduce="amax", include_self=True).float()
