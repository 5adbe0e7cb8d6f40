"""Classify image files: encode → score with a zero-shot classifier → top-k rows."""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from pixprompt import distributed
from pixprompt.data.datasets import FileImages, files_identity
from pixprompt.data.images import DEFAULT_MAX_PIXELS, path_text
from pixprompt.evaluation.label_free import METHODS, PLAIN, MethodContext, method_scores
from pixprompt.features.cache import (
    FeatureStore,
    ShardEncoder,
    ShardFeatures,
    feature_facts,
    refuse_broken_model,
)
from pixprompt.models.base import VisionLanguageModel
from pixprompt.paths import resolve_cache
from pixprompt.progress import announce, counted, progress_bar
from pixprompt.prompts.classifier import ZeroShotClassifier

#: What an image is called when no class is probable enough (`classify --min-probability`).
UNKNOWN = "unknown"


@dataclass(frozen=True)
class Prediction:
    """The top-k classes of one image, or the error that kept it from being classified."""

    path: str
    labels: tuple[str, ...] = ()
    probabilities: tuple[float, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def row(self, templates: str, min_probability: float | None = None) -> dict[str, Any]:
        """The row `classify` writes: image, template set, then its top classes or its error; with
        `min_probability`, also its `prediction`: the top class, or `unknown` when its probability is below."""
        if self.error:
            return {"image": self.path, "templates": templates, "error": self.error}
        row: dict[str, Any] = {"image": self.path, "templates": templates}
        if min_probability is not None:
            known = bool(self.probabilities) and self.probabilities[0] >= min_probability
            row["prediction"] = self.labels[0] if known else UNKNOWN
        row["top"] = [{"label": label, "probability": p} for label, p in zip(self.labels, self.probabilities)]
        return row


def iter_predictions(model: VisionLanguageModel, classifiers: Sequence[ZeroShotClassifier], paths: Iterable[Path],
                     top_k: int = 5, ensemble: str = "embedding", batch_size: int | None = None,
                     workers: int | None = None, jpeg_draft: bool = False,
                     max_pixels: int | None = DEFAULT_MAX_PIXELS, cache_root: Path | str | bool | None = True,
                     threshold: float | None = None, method: str = PLAIN, context: MethodContext | None = None,
                     ) -> Iterator[tuple[int, list[Path], list[list[Prediction]]]]:
    """Predictions shard by shard, in input order: (shard number, its paths, one list per classifier).

    `paths` may be a stream (`iter_images`): it is read one shard (`distributed.shard_size()` images) at a
    time, so memory does not grow with the number of images. Image features go through the same cache
    as `evaluate` (`cache_root`: True for the default folder, a folder, or None for none), so trying
    other class names or templates on the same photos encodes no image again. Files that cannot be read,
    or that are over `max_pixels`, get an error row under every classifier. `jpeg_draft` decodes JPEGs at
    reduced scale (faster, approximate; see `decode_rgb`). With `threshold`, an image's predictions are every
    class whose probability reaches it (multi-label), not the top k. Under several processes (torchrun, srun) each
    rank encodes its shards and rank 0 yields every shard's predictions; the other ranks yield nothing.
    `method`: a label-free scoring method (see `label_free.METHODS`; `context` what it needs) instead of the
    ensemble; a transductive one takes each shard's images as its unlabeled set.
    """
    root = resolve_cache(cache_root)
    ranks = distributed.current()
    store = FeatureStore(root, model) if root else None
    draft = model.decode_size if jpeg_draft else None
    distributed.agree(feature_facts(model, FileImages([], draft, max_pixels)), ranks)
    totals = [0, 0, 0]  # encoded, from the cache, failed
    finite_seen = 0  # images with a finite embedding so far: a model that gives none stops at its first shard
    with progress_bar(None, "classify", "img", show=ranks.is_main) as bar:
        encoder = ShardEncoder(model, store, batch_size, workers, bar)

        def features(_: int, shard: list[Path]) -> ShardFeatures:
            return encoder.features(FileImages(shard, draft, max_pixels), range(len(shard)))

        try:
            for number, shard, part in distributed.sharded(distributed.batched(paths), features, ranks,
                                                           lambda shard: files_identity(shard, draft)):
                if number % ranks.world:  # another rank's images count here once received
                    bar.update(part.encoded)
                totals = [total + count for total, count in zip(totals, part.counts)]
                finite_seen += int(part.valid.sum())
                refuse_broken_model(model, part.failures, finite_seen, "the inputs read so far")
                yield number, shard, [shard_predictions(c, part, shard, top_k, ensemble, threshold, method,
                                                        context or MethodContext(model, cache_root=root))
                                      for c in classifiers]
        except KeyboardInterrupt:
            encoder.say_interrupted()
            raise
    if ranks.is_main:
        encoded, cached, failed = totals
        announce(f"{counted(sum(totals), 'image')}: {encoded:,} encoded, {cached:,} from the cache"
                 + (f", {failed:,} could not be read" if failed else ""))


def method_probabilities(classifier: ZeroShotClassifier, features: torch.Tensor, ensemble: str, method: str,
                         context: MethodContext) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores, probabilities) of the images under the ensemble (`plain`) or a label-free method: the model's own
    probabilities of a method's logits, else each score's share of the image's total (ZLaP, CHiLS; equal shares
    where every score is 0, as when no class reaches the image in ZLaP's graph)."""
    if method == PLAIN:
        scores = classifier.scores(features, ensemble)
        return scores, classifier.probabilities(scores, ensemble)
    scores, _ = method_scores(method, classifier, features, context)
    if METHODS[method].logits:
        return scores, classifier.probabilities(scores)
    positive = scores.clamp_min(0)
    total = positive.sum(dim=1, keepdim=True)
    return scores, torch.where(total > 0, positive / total.clamp_min(1e-30), 1 / scores.shape[1])


def shard_predictions(classifier: ZeroShotClassifier, part: ShardFeatures, paths: Sequence[Path], top_k: int,
                      ensemble: str, threshold: float | None = None, method: str = PLAIN,
                      context: MethodContext | None = None) -> list[Prediction]:
    """The top-k classes of each image of a shard (with `threshold`: every class whose probability reaches it,
    most probable first), or its error."""
    predictions: list[Prediction | None] = [None] * len(paths)
    for row, message in part.failures.items():
        predictions[row] = Prediction(path_text(paths[row]), error=message)
    valid = part.valid.nonzero().flatten()
    if len(valid):
        k = classifier.num_classes if threshold is not None else max(1, min(top_k, classifier.num_classes))
        scores, probabilities = method_probabilities(classifier, part.features[valid], ensemble, method,
                                                     context or MethodContext())
        top = scores.topk(k, dim=1).indices.tolist()
        if threshold is not None:
            top = [[c for c in ranked if float(probabilities[position, c]) >= threshold]
                   for position, ranked in enumerate(top)]
        for position, row in enumerate(valid.tolist()):
            predictions[row] = Prediction(
                path_text(paths[row]), labels=tuple(classifier.classnames[c] for c in top[position]),
                probabilities=tuple(float(probabilities[position, c]) for c in top[position]))
    return predictions  # type: ignore[return-value]  (every row is set: valid or failed)


def classify_many(model: VisionLanguageModel, classifiers: Sequence[ZeroShotClassifier], paths: Sequence[Path],
                  top_k: int = 5, ensemble: str = "embedding", batch_size: int | None = None,
                  workers: int | None = None, jpeg_draft: bool = False,
                  max_pixels: int | None = DEFAULT_MAX_PIXELS,
                  cache_root: Path | str | bool | None = True) -> list[list[Prediction]]:
    """Predictions of each classifier for each path (input order), from one pass over the images, held in
    memory (see `iter_predictions` for a stream, and for the arguments)."""
    predictions: list[list[Prediction]] = [[] for _ in classifiers]
    for _, _, shard in iter_predictions(model, classifiers, [Path(p) for p in paths], top_k, ensemble, batch_size,
                                        workers, jpeg_draft, max_pixels, cache_root):
        for kept, new in zip(predictions, shard):
            kept.extend(new)
    return predictions


def classify(model: VisionLanguageModel, classifier: ZeroShotClassifier, paths: Sequence[Path],
             top_k: int = 5, ensemble: str = "embedding", batch_size: int | None = None,
             workers: int | None = None, cache_root: Path | str | bool | None = True) -> list[Prediction]:
    """Predictions for each path in input order; files that cannot be read get an error row."""
    return classify_many(model, [classifier], paths, top_k, ensemble, batch_size, workers, cache_root=cache_root)[0]
