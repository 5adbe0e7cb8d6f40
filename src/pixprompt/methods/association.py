"""WinoGAViL's association games scored as DataComp's `wino_eval.py` scores them: for each game, the candidates
whose images are most similar to the cue's text, as many as the cue has associations, against the associated ones
by the Jaccard index (scikit-learn's `jaccard_score` of the two 0/1 vectors); the mean over games, and over the
games of 5, 6, 10 and 12 candidates and of 5–6 and 10–12 (DataComp's main metric, `jaccard_score_10-12`)."""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

#: DataComp's per-size means: (name, the smallest and largest candidate count it averages).
GAME_SIZES = (("5", 5, 5), ("6", 6, 6), ("10", 10, 10), ("12", 12, 12), ("5-6", 0, 6), ("10-12", 10, 10**9))


def cue_prompt(cue: str) -> str:
    """The text DataComp encodes for a cue (`get_clip_prompt`): "An …" before a vowel, else "A …", lower-cased."""
    cue = cue.lower()
    return f"An {cue}" if cue[:1] in "aeiou" and cue else f"A {cue}"


def game_jaccard(similarities: torch.Tensor, associated: Sequence[bool]) -> float:
    """One game's Jaccard index: the top-n candidates by similarity to the cue (n: the associated ones) against
    the associated ones."""
    truth = torch.tensor(associated, dtype=torch.bool)
    chosen = torch.zeros_like(truth)
    chosen[similarities.topk(int(truth.sum())).indices] = True
    union = int((chosen | truth).sum())
    return int((chosen & truth).sum()) / union if union else 0.0


def association_metrics(jaccards: Sequence[float], sizes: Sequence[int]) -> dict[str, float | None]:
    """DataComp's figures from each game's Jaccard index and candidate count (None where no game has that size)."""
    scores, counts = np.asarray(jaccards, dtype=np.float64), np.asarray(sizes)
    metrics: dict[str, float | None] = {"avg_jaccard_score": float(scores.mean()) if len(scores) else None}
    for name, low, high in GAME_SIZES:
        kept = scores[(counts >= low) & (counts <= high)]
        metrics[f"jaccard_score_{name}"] = float(kept.mean()) if len(kept) else None
    return metrics
