"""ZLaP, zero-shot label propagation (Stojnić et al., "Label Propagation for Zero-shot Classification with
Vision-Language Models", CVPR 2024, and the authors' `zlap.py`, transductive setting): a graph whose nodes are the
C class embeddings and the N images; each image links to its k nearest images (itself among them, as the authors'
search returns it) with their cosine similarity and to its k nearest classes with the similarity to the power γ
(negative similarities cut to 0). With W symmetrised, its diagonal removed and normalised as D^-½ W D^-½, each
class's scores solve (I − α W) z = e_class; an image's score for the class is its entry of z."""
from __future__ import annotations

import logging

import torch

log = logging.getLogger(__name__)

#: Rows of similarities computed at once in the nearest-neighbour search.
SEARCH_ROWS = 1024


def nearest(queries: torch.Tensor, keys: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(indices, similarities), each (Q, k): every query's k keys of largest inner product, best first."""
    indices, similarities = [], []
    for start in range(0, len(queries), SEARCH_ROWS):
        values, found = (queries[start:start + SEARCH_ROWS] @ keys.T).topk(k, dim=1)
        indices.append(found)
        similarities.append(values)
    return torch.cat(indices), torch.cat(similarities)


def normalised_graph(features: torch.Tensor, class_weights: torch.Tensor, k: int, gamma: float) -> torch.Tensor:
    """The sparse (C + N)² matrix D^-½ W D^-½ of the authors' graph, classes first."""
    classes, count = len(class_weights), len(features)
    image_knn, image_sim = nearest(features, features, min(k, count))
    text_knn, text_sim = nearest(features, class_weights, min(k, classes))
    rows = (torch.arange(count) + classes)[:, None]
    source = torch.cat([rows.expand_as(image_knn), rows.expand_as(text_knn)], dim=1).flatten()
    target = torch.cat([image_knn + classes, text_knn], dim=1).flatten()
    weight = torch.cat([image_sim.clamp_min(0), text_sim.clamp_min(0) ** gamma], dim=1).flatten().double()
    size = classes + count
    both = torch.sparse_coo_tensor(torch.stack([torch.cat([source, target]), torch.cat([target, source])]),
                                   torch.cat([weight, weight]), (size, size), check_invariants=False).coalesce()
    index, value = both.indices(), both.values()
    value = torch.where(index[0] == index[1], torch.zeros_like(value), value)  # no self-loops
    degree = torch.zeros(size, dtype=torch.float64).index_add_(0, index[0], value)
    scale = degree.masked_fill(degree == 0, 1).rsqrt()
    return torch.sparse_coo_tensor(index, value * scale[index[0]] * scale[index[1]], (size, size),
                                   check_invariants=False).coalesce()


def zlap_scores(features: torch.Tensor, class_weights: torch.Tensor, k: int = 5, gamma: float = 5.0,
                alpha: float = 0.3, tolerance: float = 1e-10, max_iterations: int = 1000) -> torch.Tensor:
    """(N, C) each image's propagated score for each class (the authors' defaults k = 5, γ = 5, α = 0.3).

    All C systems are solved at once by the fixed point z = e + α W z, which converges geometrically at rate
    α · ρ(W) ≤ α < 1 (the authors run conjugate gradients to 1e-6 per class): iterated until the largest change is
    below `tolerance` times the largest entry, and a warning says so if `max_iterations` came first."""
    classes = len(class_weights)
    graph = normalised_graph(features.float(), class_weights.float(), k, gamma)
    seeds = torch.zeros(graph.shape[0], classes, dtype=torch.float64)
    seeds[torch.arange(classes), torch.arange(classes)] = 1
    solution = seeds.clone()
    for _ in range(max_iterations):
        updated = seeds + alpha * torch.sparse.mm(graph, solution)
        change = float((updated - solution).abs().max())
        solution = updated
        if change <= tolerance * float(solution.abs().max()):
            break
    else:
        log.warning("ZLaP's propagation stopped after %d iterations before converging (last change %.3g)",
                    max_iterations, change)
    return solution[classes:].float()
