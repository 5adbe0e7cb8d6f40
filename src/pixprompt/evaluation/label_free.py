"""The label-free scoring methods as `eval`, `bench` and `classify` offer them (`--method`): each a small entry
naming what it needs and the paper it follows, with a function from a classifier and the images' cached features
to (N, C) scores and the hyper-parameters it used. The computations themselves are in `pixprompt.methods`."""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixprompt.errors import UsageError

if TYPE_CHECKING:  # the names are checked (before the model loads) without importing torch
    import torch

    from pixprompt.models.base import VisionLanguageModel
    from pixprompt.prompts.classifier import ZeroShotClassifier

#: The method that is CLIP's own: the classifier's scores under the chosen `--ensemble`.
PLAIN = "plain"


@dataclass(frozen=True)
class MethodContext:
    """What a method may need beyond the classifier and the features: the model (CHiLS encodes subclasses), the
    dataset's name (TDA's per-dataset settings), the cache, a class hierarchy and the seed of a stream order."""

    model: VisionLanguageModel | None = None
    dataset: str = ""
    cache_root: Path | None = None
    hierarchy: Mapping[str, Sequence[str]] | None = None
    seed: int = 1
    #: Text classifiers a method built, by what they were built from, kept for the context's later calls (classify
    #: scores shard after shard with one context).
    built: dict = field(default_factory=dict, compare=False, repr=False)


Scorer = Callable[["ZeroShotClassifier", "torch.Tensor", MethodContext], tuple["torch.Tensor", dict[str, Any]]]


@dataclass(frozen=True)
class ScoringMethod:
    """`logits`: the scores are logits (probabilities, calibration and open-set thresholds apply); `ensemble`: the
    plain ensemble the method generalises (recorded as the record's `ensemble`); `templated`: it needs the same
    templates for every class."""

    name: str
    needs: str
    transductive: bool
    logits: bool
    ensemble: str
    templated: bool
    citation: str
    published_gain: str
    score: Scorer


def _zpe(classifier: ZeroShotClassifier, features: torch.Tensor, _: MethodContext):
    import torch

    from pixprompt.evaluation.scoring import row_blocks
    from pixprompt.methods import zpe

    def logits_of(class_embeddings: torch.Tensor) -> torch.Tensor:
        return torch.cat([classifier.scale_logits(features[rows].float() @ class_embeddings.T)
                          for rows in row_blocks(len(features))])

    by_template = classifier.by_template()
    weights = zpe.zpe_weights(logits_of(embeddings) for embeddings in by_template.unbind(1))  # one at a time
    logits = logits_of(zpe.weighted_class_embeddings(by_template, weights))
    return logits, {"temperature": 1.0, "template_weights": [round(float(w), 6) for w in weights]}


def _autoclip(classifier: ZeroShotClassifier, features: torch.Tensor, _: MethodContext, beta: float = 0.85):
    import torch

    from pixprompt.evaluation.scoring import BLOCK_ROWS
    from pixprompt.methods import autoclip

    by_template = classifier.by_template()
    rows_at_once = max(1, BLOCK_ROWS * 64 // max(1, by_template.shape[0] * by_template.shape[1]))
    parts = [classifier.scale_logits(autoclip.autoclip_similarities(
        torch.einsum("nd,ctd->nct", features[start:start + rows_at_once].float(), by_template), beta))
        for start in range(0, len(features), rows_at_once)]
    return torch.cat(parts) if parts else torch.zeros(0, classifier.num_classes), {"beta": beta}


def _tda(classifier: ZeroShotClassifier, features: torch.Tensor, context: MethodContext):
    from pixprompt.evaluation.scoring import scores
    from pixprompt.methods import tda

    settings = tda.for_dataset(context.dataset)
    order = tda.stream_order(len(features), context.seed)
    logits = tda.tda_logits(features.float(), scores(classifier, features, "embedding"), order, settings)
    return logits, {**settings.to_dict(), "stream": "shuffled", "stream_seed": context.seed}


def _zlap(classifier: ZeroShotClassifier, features: torch.Tensor, _: MethodContext):
    from pixprompt.methods import zlap

    settings = {"k": 5, "gamma": 5.0, "alpha": 0.3}
    return zlap.zlap_scores(features.float(), classifier.weights, **settings), settings


def _frolic(classifier: ZeroShotClassifier, features: torch.Tensor, _: MethodContext):
    from pixprompt.methods import frolic

    logits = frolic.frolic_logits(features, classifier.weights, classifier.prompt_embeddings, classifier.prompt_class)
    return logits, {"shrinkage": frolic.SHRINKAGE, "inmap_iterations": frolic.INMAP_ITERATIONS,
                    "correction_rounds": frolic.CORRECTION_ROUNDS}


def _chils(classifier: ZeroShotClassifier, features: torch.Tensor, context: MethodContext):
    import torch

    from pixprompt.evaluation.scoring import scores, text_classifier
    from pixprompt.methods import chils

    hierarchy = context.hierarchy or {}
    missing = [name for name in classifier.classnames if not hierarchy.get(name)]
    if missing:
        raise UsageError(f"--hierarchy has no subclasses for {len(missing)} class(es), e.g. "
                         f"{', '.join(map(repr, missing[:5]))}: give each class a list of subclasses")
    subclasses = [sub for name in classifier.classnames for sub in hierarchy[name]]
    parent = torch.tensor([c for c, name in enumerate(classifier.classnames) for _ in hierarchy[name]])
    prompt_set = classifier.prompt_set
    key = (classifier.model_identity, prompt_set.name, prompt_set.templates,
           tuple(sorted(prompt_set.descriptions.items())), tuple(subclasses))
    if key not in context.built:
        context.built[key] = text_classifier(context.model, subclasses, prompt_set, context.cache_root,
                                             f"building the subclass classifier: {len(subclasses)} subclasses")
    sub_classifier = context.built[key]
    combined = chils.chils_scores(scores(classifier, features, "embedding"), scores(sub_classifier, features,
                                                                                     "embedding"), parent)
    return combined, {"subclasses": len(subclasses), "reweighting": "superclass probability"}


METHODS: dict[str, ScoringMethod] = {method.name: method for method in (
    ScoringMethod("zpe", "unlabeled images", transductive=True, logits=True, ensemble="logits", templated=True,
                  citation="Allingham et al., ICML 2023 (zero-shot prompt ensembling)",
                  published_gain="beats the equal-weight ensemble on ImageNet, 4 of its variants and 11 fine-grained "
                                 "sets (abstract)", score=_zpe),
    ScoringMethod("autoclip", "nothing", transductive=False, logits=True, ensemble="logits", templated=True,
                  citation="Metzen et al., TMLR 2024 (AutoCLIP)",
                  published_gain="up to +3 points of accuracy over the templates' mean (abstract)", score=_autoclip),
    ScoringMethod("tda", "unlabeled images (a stream)", transductive=True, logits=True, ensemble="embedding",
                  templated=False, citation="Karmanov et al., CVPR 2024 (TDA)",
                  published_gain="beats earlier test-time adaptation in accuracy and time on the OOD and "
                                 "cross-domain benchmarks (abstract)", score=_tda),
    ScoringMethod("zlap", "unlabeled images", transductive=True, logits=False, ensemble="embedding", templated=False,
                  citation="Stojnić et al., CVPR 2024 (ZLaP)",
                  published_gain="beats the latest related work on 14 datasets (abstract)", score=_zlap),
    ScoringMethod("frolic", "unlabeled images", transductive=True, logits=True, ensemble="embedding",
                  templated=False, citation="Zhu et al., NeurIPS 2024 (Frolic)",
                  published_gain="+2.6 over the state of the art on 10 datasets, +1.5 on ImageNet and its 5 shifts, "
                                 "ViT-B/16 (abstract)", score=_frolic),
    ScoringMethod("chils", "a class hierarchy (--hierarchy)", transductive=False, logits=False, ensemble="embedding",
                  templated=False, citation="Novack et al., ICML 2023 (CHiLS)",
                  published_gain="over +30 points where a true hierarchy is known, less with GPT-3 subclasses "
                                 "(abstract)", score=_chils),
)}


def parse_methods(spec: str) -> list[str]:
    """The methods of a comma-separated `--method` spec (`plain` is CLIP's own), a usage error for an unknown one."""
    names = [part.strip() for part in spec.split(",") if part.strip()] or [PLAIN]
    unknown = [name for name in names if name != PLAIN and name not in METHODS]
    if unknown:
        raise UsageError(f"unknown method {unknown[0]!r}: use {PLAIN} or one of {', '.join(METHODS)}")
    return list(dict.fromkeys(names))


def load_hierarchy(path: str | Path) -> dict[str, list[str]]:
    """A class hierarchy file: JSON mapping each class name to a non-empty list of subclass names (CHiLS)."""
    from pixprompt.readers import read_json_mapping

    shape = "each class name to a non-empty list of subclass names"
    data = read_json_mapping(Path(path).expanduser(), "hierarchy file", shape)
    if not all(isinstance(subs, list) and subs and all(isinstance(s, str) and s.strip() for s in subs)
               for subs in data.values()):
        raise UsageError(f"hierarchy file {path} must map {shape}")
    return {name: [s.strip() for s in subs] for name, subs in data.items()}


def checked_methods(names: Sequence[str], hierarchy: Mapping[str, Sequence[str]] | None) -> list[str]:
    """`names` as `parse_methods` reads them, refused before any image is encoded where a method lacks its input."""
    methods = parse_methods(",".join(names))
    if "chils" in methods and not hierarchy:
        raise UsageError("--method chils needs a class hierarchy: --hierarchy FILE, a JSON mapping each class to "
                         "its subclasses")
    return methods


def method_scores(name: str, classifier: ZeroShotClassifier, features: torch.Tensor,
                  context: MethodContext) -> tuple[torch.Tensor, dict[str, Any]]:
    """(N, C) scores of the images under the method `name`, and the hyper-parameters it used."""
    method = METHODS[name]
    if method.templated and not classifier.prompt_set.is_templated:
        raise UsageError(f"--method {name} weights templates: give it a template set, not per-class descriptions")
    scores, parameters = method.score(classifier, features, context)
    import torch

    finite = torch.isfinite(scores).all(dim=1)
    if not bool(finite.all()):
        from pixprompt.errors import InputFailedError

        raise InputFailedError(f"--method {name} gave non-finite scores (NaN or inf) for {int((~finite).sum()):,} "
                               f"of {len(scores):,} images: its result is not used; run without it or report it")
    return scores, parameters


def method_facts(name: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """What a record says of the method that made it."""
    method = METHODS[name]
    return {"method": name, "method_params": parameters, "transductive": method.transductive,
            "method_citation": method.citation}


def is_label_free(record: Mapping[str, Any]) -> bool:
    """Whether a record is a label-free method's (not the plain ensemble's, a probe's or a baseline's)."""
    return record.get("method") in METHODS


def is_plain(record: Mapping[str, Any]) -> bool:
    """Whether a record is the plain ensemble's (records written before label-free methods name none)."""
    return record.get("method", PLAIN) == PLAIN


def methods_beside_plain(records: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """One row per (model, dataset, template set) that a label-free method ran on: the main metric (%) of the plain
    ensemble (its first ensembling mode) and of each method, a transductive one marked *."""
    from pixprompt.models.info import display_model

    rows: dict[tuple, dict[str, Any]] = {}
    methods: list[str] = []
    for record in records:
        if "shots" in record or record.get("method") not in (PLAIN, *METHODS) or "score" not in record:
            continue
        key = (display_model(record["model"]), record.get("pretrained"), record["dataset"], record.get("templates"))
        row = rows.setdefault(key, {"model": key[0], "pretrained": key[1], "dataset": key[2], "templates": key[3]})
        column = f"{record['method']}{'*' if record.get('transductive') else ''} %"
        if column not in row:
            row[column] = round(100 * record["score"], 2)
            if record["method"] != PLAIN and column not in methods:
                methods.append(column)
    kept = [row for row in rows.values() if any(column in row for column in methods)]
    return kept, ["model", "pretrained", "dataset", "templates", f"{PLAIN} %", *methods]


def method_table() -> list[dict[str, Any]]:
    """One row per method: what it needs, whether it reads the test images, its source and published gain."""
    return [{"method": m.name, "needs": m.needs, "transductive": m.transductive, "source": m.citation,
             "published gain": m.published_gain} for m in METHODS.values()]

