"""Classification metrics as small pure functions over scores (N, C) and labels (N,), returning dicts.

Fractions are computed from integer counts in Python floats (`hits / n`), so 23 of 100 is 0.23 exactly as
scikit-learn and CLIP_benchmark print it, never float32's 0.23000000417232513.
"""
from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch


def topk_accuracy(scores: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Share of images whose label is among the k highest scores (k capped at the number of classes)."""
    return ranked_accuracy(scores.topk(min(k, scores.shape[1]), dim=1).indices, labels, k)


def ranked_accuracy(ranking: torch.Tensor, labels: torch.Tensor, k: int) -> float:
    """Share of images whose label is among the first k classes of their ranking (N, ≥k or all classes)."""
    hits = int((ranking[:, :k] == labels[:, None]).any(dim=1).sum())
    return hits / len(labels) if len(labels) else float("nan")


def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(C, C) counts: row = true class, column = predicted class."""
    flat = labels * num_classes + predictions
    return torch.bincount(flat, minlength=num_classes * num_classes).view(num_classes, num_classes)


def per_class_accuracy(matrix: torch.Tensor, classnames: Sequence[str]) -> dict[str, float | None]:
    """Recall of each class; None for a class with no images."""
    totals, hits = matrix.sum(dim=1).tolist(), matrix.diagonal().tolist()
    return {name: (hits[c] / totals[c] if totals[c] else None) for c, name in enumerate(classnames)}


def mean_per_class_recall(matrix: torch.Tensor) -> float:
    """Mean recall over the classes that have images (classes absent from the data are left out), in float64
    as scikit-learn's `balanced_accuracy_score` takes it."""
    counts = matrix.numpy().astype(np.int64)
    totals = counts.sum(axis=1)
    present = totals > 0
    return float(np.mean(np.diag(counts)[present] / totals[present])) if present.any() else float("nan")


def top_confusions(matrix: torch.Tensor, classnames: Sequence[str], count: int = 10) -> list[dict[str, Any]]:
    """The most frequent (true → predicted) mistakes."""
    off_diagonal = matrix.clone()
    off_diagonal.fill_diagonal_(0)
    values, flat = off_diagonal.flatten().topk(min(count, off_diagonal.numel()))
    size = matrix.shape[1]
    return [{"true": classnames[i // size], "predicted": classnames[i % size], "count": int(v)}
            for v, i in zip(values.tolist(), flat.tolist()) if v > 0]


def classification_metrics(scores: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str],
                           full_confusion_up_to: int = 100) -> dict[str, Any]:
    """Top-1, top-5 (top-min(5, C)), mean per-class recall, per-class accuracy and confusions."""
    return ranking_metrics(scores.topk(min(5, scores.shape[1]), dim=1).indices, labels, classnames,
                           full_confusion_up_to)


def ranking_metrics(ranking: torch.Tensor, labels: torch.Tensor, classnames: Sequence[str],
                    full_confusion_up_to: int = 100) -> dict[str, Any]:
    """`classification_metrics` from each image's top classes (N, min(5, C)), best first: all it needs, so
    scores can be computed block by block and never held whole."""
    matrix = confusion_matrix(ranking[:, 0], labels, len(classnames))
    metrics: dict[str, Any] = {
        "top1": ranked_accuracy(ranking, labels, 1),
        "top5": ranked_accuracy(ranking, labels, 5),
        "mean_per_class_recall": mean_per_class_recall(matrix),
        "per_class_accuracy": per_class_accuracy(matrix, classnames),
        "top_confusions": top_confusions(matrix, classnames),
    }
    if len(classnames) <= full_confusion_up_to:
        metrics["confusion_matrix"] = matrix.tolist()
    return metrics


def average_precision(scores: np.ndarray, positives: np.ndarray) -> float | None:
    """Average precision of one class: the precision at the rank of each of its images, averaged, images ranked
    by score, best first (non-interpolated, as CLIP_benchmark's `average_precision_per_class` computes it; equal
    to scikit-learn's `average_precision_score` when no two scores tie). None for a class with no images."""
    total = int(positives.sum())
    if not total:
        return None
    order = np.argsort(-scores, kind="stable")
    hits = positives[order].astype(np.float64)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float((precision * hits).sum() / total)


def multilabel_metrics(scores: torch.Tensor, targets: torch.Tensor, classnames: Sequence[str]) -> dict[str, Any]:
    """Mean average precision as CLIP_benchmark computes it (`targets`: (N, C) 0/1): over every class, a class
    without a positive image counting 0 (named in `classes_without_positives`, its `per_class_ap` null); each
    class's AP; and `top1`: the share of images whose best-scored class is one of theirs."""
    values, truth = scores.double().numpy(), targets.bool().numpy()
    per_class = {name: average_precision(values[:, c], truth[:, c]) for c, name in enumerate(classnames)}
    best = values.argmax(axis=1) if len(values) else np.zeros(0, dtype=int)
    return {
        "mean_average_precision": float(np.mean([ap or 0.0 for ap in per_class.values()])) if per_class
        else float("nan"),
        "classes_without_positives": [name for name, ap in per_class.items() if ap is None],
        "per_class_ap": per_class,
        "top1": float(truth[np.arange(len(best)), best].mean()) if len(best) else float("nan"),
    }


def reliability_bins(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> list[dict[str, Any]]:
    """Images grouped by top-1 probability into `bins` equal-width bins over [0, 1] (a probability of exactly b/bins
    falls in the bin below, as in Guo et al., 2017): each bin's count, mean confidence and accuracy."""
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    table = []
    for b in range(bins):
        members = which == b
        count = int(members.sum())
        table.append({"low": float(edges[b]), "high": float(edges[b + 1]), "count": count,
                      "confidence": float(confidence[members].mean()) if count else None,
                      "accuracy": float(correct[members].mean()) if count else None})
    return table


def expected_calibration_error(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE: the count-weighted mean gap between accuracy and mean confidence over equal-width confidence bins."""
    total = len(confidence)
    return float(sum(b["count"] / total * abs(b["accuracy"] - b["confidence"])
                     for b in reliability_bins(confidence, correct, bins) if b["count"])) if total else float("nan")


def calibration_metrics(confidence: np.ndarray, correct: np.ndarray, nll: np.ndarray,
                        squared_error: np.ndarray, bins: int = 15) -> dict[str, Any]:
    """ECE (15 bins), and the mean over images of each label's negative log-likelihood and of the Brier score (the
    squared distance between the probabilities and the one-hot label, summed over classes)."""
    if not len(confidence):
        return {"ece": float("nan"), "nll": float("nan"), "brier": float("nan"), "reliability": []}
    return {"ece": expected_calibration_error(confidence, correct, bins),
            "nll": float(nll.astype(np.float64).mean()),
            "brier": float(squared_error.astype(np.float64).mean()),
            "reliability": reliability_bins(confidence, correct, bins)}


def selective_accuracy(confidence: np.ndarray, correct: np.ndarray, threshold: float) -> dict[str, float]:
    """Open-set view at a probability threshold: the share of images whose top-1 probability reaches it
    (`coverage`; the rest would be `unknown`) and the accuracy on those."""
    kept = confidence >= threshold
    return {"threshold": threshold, "coverage": float(kept.mean()) if len(kept) else float("nan"),
            "accuracy": float(correct[kept].mean()) if kept.any() else float("nan")}


def macro_f1(predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """F1 averaged over the classes that occur among the labels (the `wilds` package's `F1(average="macro")`,
    which DataComp's iWildCam score is: scikit-learn's `f1_score` with `labels` = the labels present): per class
    2·TP / (2·TP + FP + FN), from integer counts."""
    scores = []
    for label in labels.unique():
        true_positive = int(((predictions == label) & (labels == label)).sum())
        mistaken = int((predictions == label).sum()) + int((labels == label).sum()) - 2 * true_positive
        scores.append(2 * true_positive / (2 * true_positive + mistaken))
    return sum(scores) / len(scores) if scores else float("nan")


def worst_group_accuracy(correct: torch.Tensor, groups: torch.Tensor) -> tuple[float, dict[int, float]]:
    """The lowest accuracy over the groups that have images, and each group's (WILDS' worst-group metric)."""
    per_group = {int(group): int(correct[groups == group].sum()) / int((groups == group).sum())
                 for group in groups.unique()}
    return min(per_group.values()), per_group


#: The group metrics DataComp's WILDS and fairness tasks name (`wilds_eval.py`, `fairness_eval.py`): each image
#: counts as right when its label is its top-1 (`acc`) or among its top-5 (`acc_top5`).
GROUP_METRIC_K = {"acc": 1, "acc_top5": 5}


def group_metrics(ranking: torch.Tensor, labels: torch.Tensor, fields: Sequence[str], metadata: torch.Tensor,
                  specs: Sequence[dict[str, str]]) -> dict[str, Any]:
    """The metrics `specs` name, DataComp's way: `{"name": "acc_wg", "metric": "acc", "by": "region"}` is the
    worst accuracy over the values of metadata field `region` (each group's under `{name}_by_group`);
    `{"metric": "f1_macro"}` is `macro_f1` of the top-1 predictions."""
    results: dict[str, Any] = {}
    for spec in specs:
        if spec["metric"] == "f1_macro":
            results[spec["name"]] = macro_f1(ranking[:, 0], labels)
            continue
        k = GROUP_METRIC_K[spec["metric"]]
        correct = (ranking[:, :k] == labels[:, None]).any(dim=1)
        worst, per_group = worst_group_accuracy(correct, metadata[:, list(fields).index(spec["by"])])
        results[spec["name"]] = worst
        results[f"{spec['name']}_by_group"] = {f"{spec['by']} {group}": value for group, value in per_group.items()}
    return results


def spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
