"""One evaluation run: dataset → cached image features → one classifier per template set → metrics records."""
from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch

from pixprompt.data.datasets import ImageDataset, shared_items
from pixprompt.errors import InputFailedError, UnavailableError, UsageError
from pixprompt.evaluation.calibration import temperature_on
from pixprompt.evaluation.examples import Thumbnails, example_predictions
from pixprompt.evaluation.intervals import (
    BootstrapSettings,
    class_mean_interval,
    ece_interval,
    pack_correct,
    paired_difference,
    wilson_interval,
    with_holm,
)
from pixprompt.evaluation.label_free import (
    METHODS,
    PLAIN,
    MethodContext,
    ScoringMethod,
    checked_methods,
    method_facts,
    method_scores,
)
from pixprompt.evaluation.metrics import (
    calibration_metrics,
    group_metrics,
    multilabel_metrics,
    ranking_metrics,
    selective_accuracy,
)
from pixprompt.evaluation.scoring import row_blocks, scores, text_classifier
from pixprompt.evaluation.settings import RunSettings, run_settings
from pixprompt.features.cache import FeatureSet, feature_facts, refuse_broken_model
from pixprompt.models.base import VisionLanguageModel
from pixprompt.models.device import precision_name
from pixprompt.prompts.classifier import ZeroShotClassifier
from pixprompt.prompts.templates import PromptSet
from pixprompt.storage import identity_digest

log = logging.getLogger(__name__)


def per_template_accuracy(classifier: ZeroShotClassifier, features: torch.Tensor,
                          labels: torch.Tensor) -> dict[str, float]:
    """Top-1 of each template used alone (templated sets only), scored block by block."""
    if not classifier.prompt_set.is_templated:
        return {}
    hits = [0] * len(classifier.templates)
    for rows in row_blocks(len(labels)):
        for number, logits in enumerate(classifier.per_template_logits(features[rows])):
            hits[number] += int((logits.topk(1, dim=1).indices[:, 0] == labels[rows]).sum())
    return {template: hit / len(labels) if len(labels) else float("nan")
            for template, hit in zip(classifier.templates, hits)}


@dataclass
class Scored:
    """What metrics need of every image's scores, gathered block by block: its top classes (best first) and,
    from its probabilities, the top-1 probability, the label's negative log-likelihood, and the squared error
    against the one-hot label."""

    ranking: torch.Tensor
    labels: torch.Tensor
    confidence: np.ndarray
    nll: np.ndarray
    squared_error: np.ndarray

    @property
    def correct(self) -> np.ndarray:
        return (self.ranking[:, 0] == self.labels).numpy()


def score_images(classifier: ZeroShotClassifier, features: torch.Tensor, labels: torch.Tensor, ensemble: str,
                 k: int = 5, given: torch.Tensor | None = None) -> Scored:
    """Each image's top min(k, C) classes and probabilities (`Scored`), block by block; `given`: every image's
    scores already computed (a label-free method's logits), instead of the classifier's under `ensemble`."""
    k = min(k, classifier.num_classes)
    rankings, confidence, nll, squared_error = [], [], [], []
    for rows in row_blocks(len(features)):
        block = classifier.scores(features[rows], ensemble) if given is None else given[rows]
        rankings.append(block.topk(k, dim=1).indices)
        probabilities = classifier.probabilities(block, ensemble).double()
        truth = labels[rows]
        confidence.append(probabilities.gather(1, rankings[-1][:, :1])[:, 0].numpy())
        nll.append(classifier.negative_log_likelihood(block.double(), truth, ensemble).numpy())
        one_hot = torch.nn.functional.one_hot(truth, classifier.num_classes).double()
        squared_error.append(((probabilities - one_hot) ** 2).sum(dim=1).numpy())
    if not rankings:
        empty = np.zeros(0)
        return Scored(torch.zeros(0, k, dtype=torch.long), labels, empty, empty, empty)
    return Scored(torch.cat(rankings), labels, np.concatenate(confidence), np.concatenate(nll),
                  np.concatenate(squared_error))


def label_matrix(label_sets: Sequence[tuple[int, ...]], rows: torch.Tensor, num_classes: int) -> torch.Tensor:
    """(len(rows), C) 0/1: the classes present in each of the dataset's items `rows`."""
    targets = torch.zeros(len(rows), num_classes, dtype=torch.bool)
    for row, item in enumerate(rows.tolist()):
        targets[row, list(label_sets[item])] = True
    return targets


def main_metric(dataset_name: str, multi_label: bool = False) -> str:
    """The metric a dataset is summed up by: its catalog entry's (the CLIP paper's choice), else mean average
    precision for a multi-label dataset and top-1 for the others."""
    from pixprompt.data.catalog import catalog

    entry = catalog().get(dataset_name)
    return entry.metric if entry else "mean_average_precision" if multi_label else "top1"


def dataset_groups(dataset: ImageDataset, rows: torch.Tensor) -> tuple[list[str], torch.Tensor, list] | None:
    """(field names, the `rows`' metadata, the metrics to compute) for a dataset whose catalog entry names group
    metrics (DataComp's WILDS and fairness tasks), else None."""
    from pixprompt.data.catalog import catalog

    entry = catalog().get(dataset.name)
    specs = entry.read.get("group_metrics") if entry else None
    if not specs or dataset.metadata is None:
        return None
    fields, values = dataset.metadata
    return fields, torch.tensor([values[int(row)] for row in rows], dtype=torch.long).reshape(len(rows), -1), specs


def run_facts(model: Any, dataset: ImageDataset, features: FeatureSet) -> dict[str, Any]:
    """What every result record says about the model, the data and the image pass; `run_digest` names everything that
    shaped the images' features (model, weights, precision, preprocessing, image options) and the dataset, so that
    records of other runs are told apart (with `templates`, `ensemble` and `method`, which the record names)."""
    from pixprompt import __version__
    from pixprompt.distributed import facts_digest

    info = model.info
    digest = facts_digest({**feature_facts(model, dataset.images), "dataset": dataset.name, "split": dataset.split,
                           "classes": "\x1f".join(dataset.classnames), "language": str(dataset.language)})

    return {
        "model": info.name, "pretrained": info.pretrained, "backend": info.backend, "params": info.params,
        "precision": precision_name(model.dtype),
        "precision_reason": getattr(model, "precision_reason", ""),
        "quick_gelu": info.quick_gelu, **({"image_tokens": info.image_tokens} if info.image_tokens else {}),
        "dataset": dataset.name, "split": dataset.split, "classes": len(dataset.classnames),
        "language": dataset.language,
        "images": int(features.valid.sum()), "skipped": len(features.failures),
        "skipped_files": [dataset.images.describe(i) for i in sorted(features.failures)],
        "jpeg_draft_size": getattr(dataset.images, "draft_size", None),
        "encoded_images": features.encoded, "cached_images": features.from_cache, "pixprompt_version": __version__,
        "run_digest": digest,
    }


def method_metrics(method: ScoringMethod, classifier: ZeroShotClassifier, given: torch.Tensor, labels: torch.Tensor,
                   targets: torch.Tensor | None, groups: tuple | None, dataset: ImageDataset,
                   min_probability: float | None) -> tuple[dict[str, Any], Scored | None]:
    """A label-free method's metrics from its scores: as the plain ensemble's, with the calibration and open-set
    figures only where its scores are logits; and each image's scores where it has a top-1 (not multi-label)."""
    if targets is not None:
        return multilabel_metrics(given, targets, dataset.classnames), None
    scored = score_images(classifier, given, labels, "embedding", given=given)
    metrics = ranking_metrics(scored.ranking, labels, dataset.classnames)
    if method.logits:
        metrics.update(calibration_metrics(scored.confidence, scored.correct, scored.nll, scored.squared_error))
        if min_probability is not None:
            metrics["open_set"] = selective_accuracy(scored.confidence, scored.correct, min_probability)
    if groups is not None:
        metrics.update(group_metrics(scored.ranking, labels, *groups))
    return metrics, scored


def figure_intervals(scored: Scored, metrics: dict[str, Any], intervals: BootstrapSettings) -> dict[str, Any]:
    """The record's intervals (`evaluation.intervals`): Wilson's for top-1 and top-5, a bootstrap over classes for
    mean per-class recall, over images for ECE; each with its method, and the settings they were drawn with."""
    labels, count = scored.labels, len(scored.labels)
    hits5 = int((scored.ranking[:, :5] == labels[:, None]).any(dim=1).sum())
    ci = {"top1": wilson_interval(int(scored.correct.sum()), count, intervals.confidence),
          "top5": wilson_interval(hits5, count, intervals.confidence),
          "mean_per_class_recall": class_mean_interval(list(metrics["per_class_accuracy"].values()), intervals)}
    how = {"top1": "wilson", "top5": "wilson", "mean_per_class_recall": "bootstrap over classes"}
    if "ece" in metrics:
        ci["ece"], how["ece"] = ece_interval(scored.confidence, scored.correct, intervals), "bootstrap over images"
    return {"ci": {name: list(bounds) for name, bounds in ci.items()}, "ci_method": how,
            "ci_settings": intervals.to_dict(), "correct_bits": pack_correct(scored.correct)}


def compare_with_baseline(records: list[dict[str, Any]], correct: dict[int, np.ndarray], baseline: str | None,
                          intervals: BootstrapSettings) -> None:
    """Each single-label record of one run compared with the run's baseline on the same images (`vs_baseline`: the
    top-1 difference, its paired bootstrap interval, the exact McNemar p-value, Holm-corrected across the run, and
    `real`: the corrected p below 1 − confidence and the interval clear of 0)."""
    plain = [i for i in correct if records[i].get("method") == PLAIN]
    chosen = [i for i in plain if records[i]["templates"] == baseline] if baseline else plain[:1]
    if baseline and not chosen:
        raise UsageError(f"--baseline {baseline}: no template set of this run is called so (the run has "
                         f"{', '.join(dict.fromkeys(records[i]['templates'] for i in plain))})")
    if not chosen:
        return
    base = chosen[0]
    others = [i for i in correct if i != base]
    name = f"{records[base]['templates']} ({records[base]['ensemble']}, {PLAIN})"
    found = with_holm([{"baseline": name, **paired_difference(correct[i], correct[base], intervals)} for i in others],
                      intervals.confidence)
    for i, comparison in zip(others, found):
        records[i]["vs_baseline"] = comparison


def evaluate(model: VisionLanguageModel, dataset: ImageDataset, prompt_sets: Sequence[PromptSet],
             ensembles: Sequence[str] = ("embedding",), settings: RunSettings | None = None,
             methods: Sequence[str] = (PLAIN,), **options: Any) -> list[dict[str, Any]]:
    """Evaluate every template set × ensembling mode on one pass over the images; one record each (a retrieval
    dataset, whose images have captions instead of classes, gets one retrieval record: see `retrieval_records`).

    `settings` (see `RunSettings`), or its fields as keywords (`cache_root=`, `workers=`, …), say how.
    Image features and text classifiers are cached as the CLI caches them: by default (`cache_root=True`)
    in `pixprompt.paths.cache_root()` ($PIXPROMPT_CACHE, else the user cache folder), or in the folder
    given; `cache_root=None` or `False` encodes everything afresh and writes nothing.
    Under torchrun or srun with several processes, every rank encodes its share of the images and rank 0
    returns the records; the other ranks return an empty list.
    With `examples_per_class`, each record also keeps that many images of up to 12 classes with the
    model's top-3 and a thumbnail (`examples`), for the visual report. Every single-label record has the
    calibration of the model's own probabilities (`ece`, `nll`, `brier`, `reliability` bins); with
    `min_probability`, `open_set` gives the share of images whose top-1 probability reaches it and their accuracy.
    With a `calibration` dataset, each classifier's probabilities are temperature-scaled, the temperature fitted
    on that dataset (its own classes, the same templates); the record keeps `temperature` and the calibration
    before it (`ece_uncalibrated`, `nll_uncalibrated`).
    `methods`: `plain` (the classifier under each of `ensembles`) and/or label-free methods (`METHODS`: ZPE, AutoCLIP,
    TDA, ZLaP, Frolic, CHiLS with `settings.hierarchy`), one record each per template set, with its `method`,
    `method_params` and whether it read the test images (`transductive`).
    """
    settings = run_settings(settings, options)
    methods = checked_methods(methods, settings.hierarchy)
    if methods != [PLAIN] and (dataset.retrieval or dataset.association):
        raise UsageError(f"{dataset.name} has no classes to score (it is a "
                         f"{'retrieval' if dataset.retrieval else 'association'} dataset): leave --method out")
    cache_root, calibration, min_probability = settings.cache, settings.calibration, settings.min_probability
    started = time.perf_counter()
    if calibration is not None and (shared := shared_items(calibration.images, dataset.images)):
        log.warning("the --calibrate set %s shares %d of its %d images with %s: the temperature is fitted on the "
                    "images it is scored on, so the calibrated ECE and NLL look better than on new images",
                    calibration.name, len(shared), len(calibration.images), dataset.name)
    calibration_features = settings.features(model, calibration) if calibration else None
    features = settings.features(model, dataset)
    if features is None:  # another rank's: rank 0 scores and reports
        return []
    for name, got, source in ((dataset.name, features, dataset), (calibration and calibration.name,
                                                                   calibration_features, calibration)):
        if got is not None and not got.valid.any():
            refuse_broken_model(model, got.failures, 0, name)
            first = min(got.failures) if got.failures else None
            example = f", e.g. {source.images.describe(first)}: {got.failures[first]}" if first is not None else ""
            raise UnavailableError(f"no image of {name} could be read: {len(got.failures)} skipped{example}")
    if features.failures and settings.strict:
        first = min(features.failures)
        raise InputFailedError(f"{len(features.failures)} image(s) could not be read (--strict), first: "
                               f"{dataset.images.describe(first)}: {features.failures[first]}")
    image_seconds = time.perf_counter() - started
    if dataset.retrieval:
        from pixprompt.evaluation.retrieval import retrieval_records

        return retrieval_records(model, dataset, features, cache_root, run_facts(model, dataset, features),
                                 image_seconds)
    if dataset.association:
        from pixprompt.evaluation.association import association_records

        return association_records(model, dataset, features, cache_root, run_facts(model, dataset, features),
                                   image_seconds)
    # the matrix itself when every image was read (no copy of the largest thing in memory)
    every = bool(features.valid.all())
    x = features.features if every else features.features[features.valid]
    y = features.labels if every else features.labels[features.valid]
    item_indices = features.valid.nonzero().flatten()
    thumbnails = Thumbnails(dataset)
    facts = run_facts(model, dataset, features)
    metric = main_metric(dataset.name, dataset.multi_label)
    targets = label_matrix(dataset.label_sets, item_indices, len(dataset.classnames)) if dataset.multi_label else None
    groups = dataset_groups(dataset, item_indices)
    records: list[dict[str, Any]] = []
    correct: dict[int, np.ndarray] = {}  # each single-label record's per-image correctness, by its position
    facts["items_digest"] = identity_digest(dataset.images.item_id(int(i)) for i in item_indices)
    context = MethodContext(model, dataset.name, cache_root, settings.hierarchy, settings.method_seed)
    for prompt_set in prompt_sets:
        set_started = time.perf_counter()
        classifier = text_classifier(model, dataset.classnames, prompt_set, cache_root)
        template_accuracy = {} if dataset.multi_label else per_template_accuracy(classifier, x, y)
        set_facts = {**facts, "templates": prompt_set.name, "num_prompts": len(classifier.prompt_class)}
        for ensemble in ensembles if PLAIN in methods else ():
            if dataset.multi_label:
                metrics = multilabel_metrics(scores(classifier, x, ensemble), targets, dataset.classnames)
            else:
                scored = score_images(classifier, x, y, ensemble)
                metrics = ranking_metrics(scored.ranking, y, dataset.classnames)
                metrics.update(calibration_metrics(scored.confidence, scored.correct, scored.nll,
                                                   scored.squared_error))
                if calibration_features is not None:
                    temperature = temperature_on(model, calibration, calibration_features, prompt_set, cache_root,
                                                 ensemble)
                    scored = score_images(replace(classifier, temperature=temperature), x, y, ensemble)
                    metrics.update({"temperature": temperature, "calibrated_on": calibration.name,
                                    "ece_uncalibrated": metrics["ece"], "nll_uncalibrated": metrics["nll"],
                                    **calibration_metrics(scored.confidence, scored.correct, scored.nll,
                                                          scored.squared_error)})
                if min_probability is not None:
                    metrics["open_set"] = selective_accuracy(scored.confidence, scored.correct, min_probability)
                if groups is not None:
                    metrics.update(group_metrics(scored.ranking, y, *groups))
                metrics.update(figure_intervals(scored, metrics, settings.intervals))
                correct[len(records)] = scored.correct
            if settings.examples_per_class and not dataset.multi_label:
                shown = replace(classifier, temperature=metrics.get("temperature", 1.0))
                metrics["examples"] = example_predictions(
                    thumbnails, item_indices, y,
                    lambda rows, c=shown, e=ensemble: c.probabilities(c.scores(x[rows], e), e),
                    dataset.classnames, settings.examples_per_class)
            records.append({
                **set_facts, "ensemble": ensemble, "method": PLAIN, **metrics, "metric": metric,
                "score": metrics[metric],
                "per_template_accuracy": template_accuracy,
                "elapsed_s": round(image_seconds + time.perf_counter() - set_started, 3),
            })
        for name in methods:
            if name == PLAIN:
                continue
            method_started = time.perf_counter()
            given, parameters = method_scores(name, classifier, x, context)
            metrics, scored = method_metrics(METHODS[name], classifier, given, y, targets, groups, dataset,
                                             min_probability)
            if scored is not None:
                metrics.update(figure_intervals(scored, metrics, settings.intervals))
                correct[len(records)] = scored.correct
            records.append({**set_facts, "ensemble": METHODS[name].ensemble, **method_facts(name, parameters),
                            **metrics, "metric": metric, "score": metrics[metric],
                            "per_template_accuracy": template_accuracy,
                            "method_seconds": round(time.perf_counter() - method_started, 3),
                            "elapsed_s": round(image_seconds + time.perf_counter() - method_started, 3)})
    compare_with_baseline(records, correct, settings.baseline, settings.intervals)
    if features.failures:
        log.warning("%d image(s) skipped (recorded in the results as skipped_files)", len(features.failures))
    return records
