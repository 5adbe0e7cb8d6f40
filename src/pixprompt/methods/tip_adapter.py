"""Tip-Adapter (Zhang et al., ECCV 2022, eq. 6), training-free: the few-shot features are keys F, their one-hot
labels values L, and a test feature f gets logits = zero-shot logits + α · exp(−β (1 − f Fᵀ)) L. α and β are
searched on a validation split (the paper's defaults α = 1, β = 5.5 with one image per class)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from pixprompt.methods.logistic import accuracy, normalised

TIP_ALPHAS = tuple(np.round(np.geomspace(0.1, 10, 9), 4))
TIP_BETAS = tuple(np.round(np.linspace(0.5, 10, 9), 4))
TIP_DEFAULTS = (1.0, 5.5)


def tip_adapter_logits(zero_shot: torch.Tensor, features: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                       alpha: float, beta: float) -> torch.Tensor:
    """Tip-Adapter's logits: zero-shot + α · exp(−β (1 − f·keysᵀ)) · values (features and keys L2-normalised)."""
    affinity = torch.exp(-beta * (1 - normalised(features) @ normalised(keys).T))
    return zero_shot.double() + alpha * affinity @ values.double()


def search_tip(zero_shot: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor,
               values: torch.Tensor) -> tuple[float, float]:
    """The (α, β) of the grid with the best accuracy on held-out images (ties: the first)."""
    best, chosen = -1.0, TIP_DEFAULTS
    for alpha in TIP_ALPHAS:
        for beta in TIP_BETAS:
            score = accuracy(tip_adapter_logits(zero_shot, features, keys, values, alpha, beta), labels)
            if score > best:
                best, chosen = score, (float(alpha), float(beta))
    return chosen


def one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels.long(), classes).double()


@dataclass
class TipAdapter:
    """Tip-Adapter as a fit/score object: `fit` searches (α, β) on the `held` images with the `fit` images as
    keys (the paper's defaults when no image is held), then keeps every drawn image as a key; `logits` adds the
    cache's votes to the test images' zero-shot logits."""

    classes: int
    keys: torch.Tensor | None = None
    values: torch.Tensor | None = None
    chosen: dict[str, float | str] = field(default_factory=dict)

    def fit(self, features: torch.Tensor, labels: torch.Tensor, fit: np.ndarray, held: np.ndarray,
            zero_shot: torch.Tensor) -> TipAdapter:
        """`zero_shot`: the training images' zero-shot logits (for the search on `held`)."""
        if len(held):
            alpha, beta = search_tip(zero_shot[held], features[held], labels[held], features[fit],
                                     one_hot(labels[fit], self.classes))
            how = "validation search"
        else:
            (alpha, beta), how = TIP_DEFAULTS, "the paper's defaults (no image to spare for validation)"
        drawn = np.sort(np.concatenate([fit, held]))
        self.keys, self.values = features[drawn], one_hot(labels[drawn], self.classes)
        self.chosen = {"alpha": alpha, "beta": beta, "chosen_by": how}
        return self

    def logits(self, features: torch.Tensor, zero_shot: torch.Tensor) -> torch.Tensor:
        if self.keys is None:
            raise RuntimeError("fit the adapter first")
        return tip_adapter_logits(zero_shot, features, self.keys, self.values, self.chosen["alpha"],
                                  self.chosen["beta"])
