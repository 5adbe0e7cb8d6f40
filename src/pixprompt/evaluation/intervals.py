"""Is the difference real? Intervals on a record's figures and paired tests between records of one run, as small
pure functions over per-image arrays.

- A share of images (top-1, top-5): Wilson's score interval (statsmodels' `proportion_confint(method="wilson")`).
- A mean over classes (mean per-class recall): a percentile bootstrap over the classes, which are its samples.
- A figure over images that is no plain share (ECE): a percentile bootstrap over the images.
- Two records on the same images: the difference in top-1 with a paired percentile bootstrap over the images (each
  resample drawn as one multinomial over the images that gain, lose or keep: the same distribution, O(1) each), and
  an exact McNemar test on the discordant images (statsmodels' `mcnemar(exact=True)`), Holm-corrected across the
  comparisons of one run (statsmodels' `multipletests(method="holm")`).

Bootstraps are seeded (`BootstrapSettings.seed`) and vectorised: resamples are drawn in blocks of index arrays, so
1,000 resamples of 50,000 images cost a few hundred milliseconds, not a Python loop each.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np

#: Resampled values held at once (a block of resamples × images).
BLOCK_VALUES = 1 << 23


@dataclass(frozen=True)
class BootstrapSettings:
    """The confidence of every interval (`--confidence`), the resamples of every bootstrap (`--bootstrap`) and the
    seed they are drawn with."""

    confidence: float = 0.95
    resamples: int = 1000
    seed: int = 0

    def to_dict(self) -> dict[str, float | int]:
        return {"confidence": self.confidence, "resamples": self.resamples, "seed": self.seed}


def wilson_interval(successes: int, total: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson's score interval for a binomial share: (low, high); (nan, nan) for no trials."""
    if total == 0:
        return math.nan, math.nan
    z = NormalDist().inv_cdf((1 + confidence) / 2)  # P(|Z| ≤ z) = confidence
    share = successes / total
    centre = (share + z * z / (2 * total)) / (1 + z * z / total)
    half = z * math.sqrt(share * (1 - share) / total + z * z / (4 * total * total)) / (1 + z * z / total)
    return max(0.0, centre - half), min(1.0, centre + half)


def _resampled_statistics(count: int, statistic: Callable[[np.ndarray], np.ndarray],
                          settings: BootstrapSettings) -> np.ndarray:
    """`statistic` of `settings.resamples` resamples with replacement of `count` items: `statistic` takes a
    (block, count) array of indices and returns a (block,) array."""
    generator = np.random.default_rng(settings.seed)
    block = max(1, BLOCK_VALUES // max(1, count))
    values = []
    for start in range(0, settings.resamples, block):
        indices = generator.integers(0, count, size=(min(block, settings.resamples - start), count), dtype=np.int32)
        values.append(statistic(indices))
    return np.concatenate(values) if values else np.zeros(0)


def _percentiles(values: np.ndarray, confidence: float) -> tuple[float, float]:
    finite = values[np.isfinite(values)]
    if not len(finite):
        return math.nan, math.nan
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(finite, [tail, 100 - tail])
    return float(low), float(high)


def class_mean_interval(per_class: Sequence[float | None], settings: BootstrapSettings) -> tuple[float, float]:
    """The percentile bootstrap interval of a mean over classes (classes without images left out, as the mean
    leaves them out), resampling the classes."""
    values = np.array([v for v in per_class if v is not None], dtype=np.float64)
    if not len(values):
        return math.nan, math.nan
    return _percentiles(_resampled_statistics(len(values), lambda idx: values[idx].mean(axis=1), settings),
                        settings.confidence)


def ece_interval(confidence: np.ndarray, correct: np.ndarray, settings: BootstrapSettings,
                 bins: int = 15) -> tuple[float, float]:
    """The percentile bootstrap interval of the expected calibration error (equal-width bins as
    `metrics.reliability_bins`), resampling the images."""
    count = len(confidence)
    if not count:
        return math.nan, math.nan
    edges = np.linspace(0, 1, bins + 1)
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, bins - 1)
    gap = correct.astype(np.float64) - confidence.astype(np.float64)  # a bin's Σ gap = n_b (acc_b − conf_b)

    def statistic(indices: np.ndarray) -> np.ndarray:
        rows = (np.arange(len(indices), dtype=np.int64)[:, None] * bins + which[indices]).ravel()  # own bins
        sums = np.bincount(rows, weights=gap[indices].ravel(), minlength=len(indices) * bins).reshape(-1, bins)
        return np.abs(sums).sum(axis=1) / count  # Σ n_b/N · |acc_b − conf_b|

    return _percentiles(_resampled_statistics(count, statistic, settings), settings.confidence)


def mcnemar_exact(only_first: int, only_second: int) -> float:
    """The exact two-sided McNemar p-value: the binomial test of the discordant pairs (right by one, wrong by the
    other) against one half, as statsmodels' `mcnemar(exact=True)` computes it."""
    discordant = only_first + only_second
    if discordant == 0:
        return 1.0
    smaller = min(only_first, only_second)
    tail = sum(math.comb(discordant, k) for k in range(smaller + 1)) / 2 ** discordant
    return min(1.0, 2 * tail)


def paired_difference(correct: np.ndarray, baseline: np.ndarray, settings: BootstrapSettings
                      ) -> dict[str, float | int]:
    """`correct`'s top-1 minus `baseline`'s on the same images, with its paired percentile bootstrap interval, the
    discordant counts and the exact McNemar p-value."""
    first, second = correct.astype(bool), baseline.astype(bool)
    count = len(first)
    only_first, only_second = int((first & ~second).sum()), int((second & ~first).sum())
    change = (only_first - only_second) / count if count else math.nan
    low = high = math.nan
    if count:  # a resample's difference is (its +1s − its −1s) / N: one multinomial draw, as resampling the images
        drawn = np.random.default_rng(settings.seed).multinomial(
            count, [only_first / count, only_second / count, 1 - (only_first + only_second) / count],
            size=settings.resamples)
        low, high = _percentiles((drawn[:, 0] - drawn[:, 1]) / count, settings.confidence)
    return {"difference": change, "low": low, "high": high,
            "only_this": only_first, "only_baseline": only_second, "mcnemar_p": mcnemar_exact(only_first, only_second)}


def with_holm(comparisons: list[dict], confidence: float) -> list[dict]:
    """`paired_difference` results of one family, each given its Holm-corrected p-value (`holm_p`) and `real`: that p
    below 1 − confidence and the interval clear of 0."""
    for comparison, adjusted in zip(comparisons, holm([c["mcnemar_p"] for c in comparisons])):
        comparison["holm_p"] = adjusted
        comparison["real"] = adjusted < 1 - confidence and not comparison["low"] <= 0 <= comparison["high"]
    return comparisons


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the given order."""
    order = sorted(range(len(p_values)), key=p_values.__getitem__)
    adjusted, running = [0.0] * len(p_values), 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(p_values) - rank) * p_values[index]))
        adjusted[index] = running
    return adjusted


def pack_correct(correct: np.ndarray) -> str:
    """Per-image correctness as the record keeps it: one bit per image, base64 (1/8 byte per image, 4/3 of that
    as text)."""
    import base64

    return base64.b64encode(np.packbits(correct.astype(bool)).tobytes()).decode("ascii")


def unpack_correct(text: str, count: int) -> np.ndarray:
    import base64

    return np.unpackbits(np.frombuffer(base64.b64decode(text), dtype=np.uint8))[:count].astype(bool)


def compare_runs(baseline: Sequence[dict], others: Sequence[dict], settings: BootstrapSettings) -> list[dict]:
    """One row per record of `others` against the `baseline` record of its dataset (the first there), paired by
    the images both scored (`items_digest`): the top-1 difference, its paired interval, McNemar's p and Holm's
    across the rows. Records without per-image correctness are left out; a dataset scored on other images refuses."""
    from pixprompt.errors import UsageError

    first: dict[str, dict] = {}
    for record in baseline:
        if record.get("correct_bits"):
            first.setdefault(record["dataset"], record)
    rows = []
    for record in others:
        base = first.get(record.get("dataset"))
        if base is None or not record.get("correct_bits"):
            continue
        if record.get("items_digest") != base.get("items_digest") or record.get("images") != base.get("images"):
            raise UsageError(f"{record['dataset']}: the records were scored on other images ({base.get('images')} "
                             f"images there, {record.get('images')} here, or other files): compare runs on the same "
                             "test set")
        comparison = paired_difference(unpack_correct(record["correct_bits"], record["images"]),
                                       unpack_correct(base["correct_bits"], base["images"]), settings)
        rows.append({"dataset": record["dataset"], "baseline": _named(base), "record": _named(record), **comparison})
    return with_holm(rows, settings.confidence)


def _named(record: dict) -> str:
    from pixprompt.models.info import model_label

    return (f"{model_label(record['model'], record.get('pretrained'))} {record.get('templates')} "
            f"{record.get('method', 'plain')}")

