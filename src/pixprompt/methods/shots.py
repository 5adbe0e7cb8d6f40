"""Few-shot draws on label arrays: which images a k-shot learner sees, and the validation half it tunes on."""
from __future__ import annotations

import numpy as np

#: Images per class a probe may ask for (more than any dataset holds; `all` takes every image).
MAX_SHOTS = 100_000


def draw_shots(labels: np.ndarray, shots: int | None, seed: int) -> np.ndarray:
    """Indices of `shots` images per class drawn without replacement (all of a class's when it has fewer, or when
    `shots` is None), in index order."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen.append(members if shots is None or len(members) <= shots else rng.choice(members, shots, False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=int)


def carve_validation(indices: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split drawn images into (fit, validation): half of each class's images (rounded down) go to validation;
    a class with a single image keeps it for fitting. Empty validation when every class has one image."""
    rng = np.random.default_rng(seed + 1_000_003)
    fit, validation = [], []
    for label in np.unique(labels[indices]):
        members = rng.permutation(indices[labels[indices] == label])
        held = len(members) // 2
        validation.append(members[:held])
        fit.append(members[held:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(validation))


def shots_list(text: str) -> list[int | None]:
    """`1,2,4,all` → [1, 2, 4, None] (None: every training image)."""
    values: list[int | None] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "all":
            values.append(None)
        elif part.isdigit() and 0 < int(part) <= MAX_SHOTS:
            values.append(int(part))
        else:
            raise ValueError(f"shots must be whole numbers from 1 to {MAX_SHOTS:,} or `all`, not {part[:30]!r}")
    if not values:
        raise ValueError("no shot count given")
    return values
