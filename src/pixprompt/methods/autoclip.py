"""AutoCLIP (Metzen et al., "AutoCLIP: Auto-tuning Zero-Shot Classifiers for Vision-Language Models", TMLR 2024,
Section 3 and the authors' `autoclip_aggregation`): per image, the templates (descriptor sets) get weights
softmax(a), a = 0 + step · ∇ₐ logsumexp_c(Σ_t softmax(a)_t s_ct) at a = 0, where s_ct is the image's cosine
similarity to class c under template t; the step is chosen by bisection so that the weights' entropy is β times
the uniform weights' (β = 0.85, the authors' default). A class's score is Σ_t w_t s_ct."""
from __future__ import annotations

import math

import torch

#: The authors' bisection interval for the step size.
STEP_RANGE = (0.0, 1e7)


def lse_gradient(similarities: torch.Tensor) -> torch.Tensor:
    """(N, T) ∇ₐ of logsumexp over classes of the uniformly weighted scores, per image, from (N, C, T) cosines.

    With w = softmax(a) at a = 0 (w_t = 1/T) and p = softmax_c(Σ_t w_t s_ct): ∂/∂w_t = Σ_c p_c s_ct = m_t, and
    through the softmax ∂/∂a_t = w_t (m_t − Σ_u w_u m_u)."""
    templates = similarities.shape[2]
    probabilities = torch.softmax(similarities.mean(dim=2), dim=1)
    moments = torch.einsum("nc,nct->nt", probabilities, similarities)
    return (moments - moments.mean(dim=1, keepdim=True)) / templates


def _entropy_bits(weights: torch.Tensor) -> torch.Tensor:
    return -(weights * torch.log2(weights + 1e-10)).sum(dim=-1)


def step_sizes(gradient: torch.Tensor, beta: float, iterations: int = 80) -> torch.Tensor:
    """(N,) the step along each image's gradient at which softmax(step · gradient) has entropy β · log₂ T bits,
    by bisection on the authors' interval (entropy falls as the step grows; a flat gradient keeps the low end)."""
    target = beta * math.log2(gradient.shape[1])
    low = torch.full(gradient.shape[:1], STEP_RANGE[0], dtype=torch.float64)
    high = torch.full_like(low, STEP_RANGE[1])
    for _ in range(iterations):
        middle = (low + high) / 2
        above = _entropy_bits(torch.softmax(middle[:, None] * gradient, dim=1)) > target
        low, high = torch.where(above, middle, low), torch.where(above, high, middle)
    return (low + high) / 2


def autoclip_weights(similarities: torch.Tensor, beta: float = 0.85) -> torch.Tensor:
    """(N, T) each image's template weights from its (N, C, T) cosine similarities."""
    similarities = similarities.double()
    gradient = lse_gradient(similarities)
    return torch.softmax(step_sizes(gradient, beta)[:, None] * gradient, dim=1)


def autoclip_similarities(similarities: torch.Tensor, beta: float = 0.85) -> torch.Tensor:
    """(N, C) each class's AutoCLIP-weighted cosine similarity."""
    weights = autoclip_weights(similarities, beta)
    return torch.einsum("nct,nt->nc", similarities.double(), weights).float()
