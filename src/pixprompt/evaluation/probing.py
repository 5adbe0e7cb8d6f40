"""`pixprompt probe`: few-shot learners (see `methods`) on a training dataset's cached features, scored on a test
dataset beside zero-shot, over shot counts and random draws; one record per (method, shots, draw)."""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from pixprompt.data.datasets import ImageDataset, shared_items
from pixprompt.errors import UsageError
from pixprompt.evaluation.metrics import classification_metrics, spread
from pixprompt.evaluation.runs import main_metric, run_facts
from pixprompt.evaluation.scoring import scores, text_classifier
from pixprompt.evaluation.settings import RunSettings, run_settings
from pixprompt.features.cache import FeatureSet
from pixprompt.methods.logistic import LinearProbeClassifier
from pixprompt.methods.shots import carve_validation, draw_shots
from pixprompt.methods.tip_adapter import TipAdapter
from pixprompt.models.base import VisionLanguageModel
from pixprompt.progress import announce
from pixprompt.prompts.templates import PromptSet

METHODS = ("linear", "linear-zs-init", "tip-adapter")
RESNET_METHOD = "resnet50-linear"

log = logging.getLogger(__name__)


def _valid(features: FeatureSet) -> tuple[torch.Tensor, torch.Tensor]:
    return features.features[features.valid], features.labels[features.valid]


def _check_pair(train: ImageDataset, test: ImageDataset) -> None:
    if train.classnames != test.classnames:
        raise UsageError(f"the training set {train.name} and the test set {test.name} must have the same classes in "
                         f"the same order ({len(train.classnames)} and {len(test.classnames)} classes)")
    if train.multi_label or test.multi_label:
        raise UsageError("probes are single-label classifiers: give single-label datasets")
    shared = shared_items(train.images, test.images)
    if shared:
        raise UsageError(f"{len(shared):,} of the {len(train.images):,} training images are test images (e.g. "
                         f"{train.images.describe(shared[0])}): a probe fitted on them is scored on images it has "
                         "seen; give a training set apart from the test set")


def probe_records(model: VisionLanguageModel, train: ImageDataset, test: ImageDataset, prompt_set: PromptSet,
                  shots: Sequence[int | None], seeds: int = 3, methods: Sequence[str] = METHODS,
                  supervised: Any = None, ensemble: str = "embedding", settings: RunSettings | None = None,
                  **options: Any) -> list[dict[str, Any]]:
    """Records of zero-shot (once) and of each method × shot count × draw (`seeds` draws: 0 … seeds−1).

    `supervised`, a ResNet-50 with its penultimate features (`load_resnet50(..., penultimate=True)`), adds its
    linear probe on the same draws. `settings` (see `RunSettings`) or its fields as keywords say how to encode
    and cache. Every rank encodes its share; rank 0 returns the records, others [].
    """
    settings = run_settings(settings, options)
    _check_pair(train, test)
    unknown = sorted(set(methods) - set(METHODS))
    if unknown:
        raise UsageError(f"unknown probe method(s) {', '.join(unknown)}: use {', '.join(METHODS)}")
    encoded = [settings.features(model, data) for data in (train, test)]
    backbone = [settings.features(supervised, data) for data in (train, test)] if supervised is not None else None
    if encoded[1] is None:
        return []
    (train_x, train_y), (test_x, test_y) = _valid(encoded[0]), _valid(encoded[1])
    if not len(train_y) or not len(test_y):
        raise UsageError("the training or the test set has no readable image")
    classes = len(test.classnames)
    classifier = text_classifier(model, test.classnames, prompt_set, settings.cache)

    zero_shot_train, zero_shot_test = scores(classifier, train_x, ensemble), scores(classifier, test_x, ensemble)
    text_weights = classifier.logit_scale * classifier.weights
    facts = {**run_facts(model, test, encoded[1]), "train_dataset": train.name, "templates": prompt_set.name,
             "ensemble": ensemble, "metric": main_metric(test.name)}

    def record(method: str, logits: torch.Tensor, labels: torch.Tensor, **extra: Any) -> dict[str, Any]:
        metrics = classification_metrics(logits.float(), labels, test.classnames)
        return {**facts, "method": method, **extra, **metrics, "score": metrics[facts["metric"]]}

    records = [record("zero-shot", zero_shot_test, test_y, shots=0, seed=None, train_images=0)]
    labels = train_y.numpy()
    empty = [name for number, name in enumerate(test.classnames) if not (labels == number).any()]
    if empty:
        raise UsageError(f"{len(empty)} class(es) have no readable training image, e.g. "
                         f"{', '.join(map(repr, empty[:5]))}: a probe needs at least one image of every class")
    counts = _drawable(shots, int(np.bincount(labels).max()))
    fits = len(counts) * seeds * (len(methods) + (backbone is not None))
    done, started = 0, time.perf_counter()

    def progress(what: str) -> None:
        """One line per fitted learner, with the time left at the pace so far (a sweep can take minutes)."""
        nonlocal done
        done += 1
        elapsed = time.perf_counter() - started
        left = elapsed / done * (fits - done)
        announce(f"probe {done}/{fits}: {what} done in {elapsed:.0f} s so far, about {left:.0f} s left")

    for count, actual in counts:
        for seed in range(seeds):
            drawn = draw_shots(labels, count, seed)
            fit, held = carve_validation(drawn, labels, seed)
            common = {"shots": actual, "shots_requested": count if count is not None else "all", "seed": seed,
                      "train_images": len(drawn)}
            for method in methods:
                if method == "tip-adapter":
                    adapter = TipAdapter(classes).fit(train_x, train_y, fit, held, zero_shot_train)
                    logits = adapter.logits(test_x, zero_shot_test)
                    chosen = {**adapter.chosen, "logit_scale": classifier.logit_scale}  # the paper writes 100
                else:
                    probe = LinearProbeClassifier(classes, text_weights if method == "linear-zs-init" else None,
                                                  model.device).fit(train_x, train_y, fit, held)
                    logits, chosen = probe.logits(test_x), probe.chosen
                records.append(record(method, logits, test_y, **common, **chosen))
                progress(f"{method}, {actual} shot(s), draw {seed}")
            if backbone is not None:
                records.append(_supervised_record(record, backbone, encoded, fit, held, classes, supervised, common))
                progress(f"{RESNET_METHOD}, {actual} shot(s), draw {seed}")
    return records


def _drawable(shots: Sequence[int | None], most: int) -> list[tuple[int | None, int | str]]:
    """(requested, drawn) shots per class for each requested count: a count beyond the training set's largest
    class draws that class's all (warned), and a count that would draw the same images as an earlier one is
    left out (warned), so no row claims shots that were not drawn."""
    counts: list[tuple[int | None, int | str]] = []
    for count in shots:
        actual: int | str = "all" if count is None else min(count, most)
        if count is not None and count > most:
            log.warning("--shots %d: the training set has at most %d image(s) per class, so %d per class are drawn",
                        count, most, most)
        if actual in [drawn for _, drawn in counts]:
            log.warning("--shots %s draws the same images as a smaller count: left out", count)
            continue
        counts.append((count, actual))
    return counts


def _supervised_record(record, backbone: list[FeatureSet], encoded: list[FeatureSet], fit: np.ndarray,
                       held: np.ndarray, classes: int, supervised: Any, common: dict[str, Any]) -> dict[str, Any]:
    """The supervised backbone's linear probe on the same drawn images, scored on the same test images."""
    train_items, test_items = (e.valid.nonzero().flatten() for e in encoded)
    probe = LinearProbeClassifier(classes, device=supervised.device).fit(
        backbone[0].features[train_items], encoded[0].labels[train_items], fit, held)
    return record(RESNET_METHOD, probe.logits(backbone[1].features[test_items]), encoded[1].labels[test_items],
                  **common, **probe.chosen,
                  probe_features=f"{supervised.info.name} {supervised.info.pretrained}")


def summary(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and spread over draws of each (method, shots): the table `probe` prints and the report plots."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault((r["method"], r["shots"]), []).append(r)
    rows = []
    for (method, shots), members in groups.items():
        mean, deviation = spread([m["score"] for m in members])
        rows.append({"method": method, "shots": shots, "draws": len(members), "score %": round(100 * mean, 2),
                     "± %": round(100 * deviation, 2), "metric": members[0]["metric"]})
    return rows


def zero_shot_sentence(rows: Sequence[dict[str, Any]], method: str = "linear") -> str | None:
    """What the few-shot curve says of zero-shot, from the summary: the fewest shots at which `method`'s mean
    reaches zero-shot."""
    zero = next((r for r in rows if r["method"] == "zero-shot"), None)
    probe = sorted((r for r in rows if r["method"] == method and r["shots"] != "all"), key=lambda r: r["shots"])
    if zero is None or not probe:
        return None
    reached = next((r for r in probe if r["score %"] >= zero["score %"]), None)
    if reached is None:
        return (f"Zero-shot ({zero['score %']:.1f}%) beats the {method} probe at every shot count tried, up to "
                f"{probe[-1]['shots']} per class ({probe[-1]['score %']:.1f}%).")
    if reached is probe[0] and reached["shots"] == 1:
        return (f"A 1-shot {method} probe ({reached['score %']:.1f}%) already reaches zero-shot "
                f"({zero['score %']:.1f}%) here.")
    return (f"Zero-shot ({zero['score %']:.1f}%) matches a {reached['shots']}-shot {method} probe "
            f"({reached['score %']:.1f}%) here.")
