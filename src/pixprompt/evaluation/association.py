"""`eval` on association games (WinoGAViL): every candidate image encoded (cached as any image is), every cue's
text encoded (cached as classifiers are), each game scored by `methods.association`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pixprompt.data.datasets import ImageDataset
from pixprompt.evaluation.scoring import text_classifier
from pixprompt.features.cache import FeatureSet
from pixprompt.methods.association import association_metrics, cue_prompt, game_jaccard
from pixprompt.models.base import VisionLanguageModel
from pixprompt.progress import counted
from pixprompt.prompts.templates import PromptSet

#: The metric an association record is summed up by (DataComp's).
ASSOCIATION_METRIC = "jaccard_score_10-12"


def association_records(model: VisionLanguageModel, dataset: ImageDataset, features: FeatureSet,
                        cache_root: Path | None, facts: dict[str, Any], image_seconds: float) -> list[dict[str, Any]]:
    """`evaluate`'s one record for an association dataset whose images are encoded (`features`), with the run's
    `facts`. A game with a candidate image that could not be read is left out (counted in `games_skipped`)."""
    started = time.perf_counter()
    prompts = [cue_prompt(game.cue) for game in dataset.games]
    cues = text_classifier(model, prompts, PromptSet("cues", ("{}",)), cache_root,
                           f"encoding {counted(len(prompts), 'cue')}").prompt_embeddings
    kept = [(row, game, slice(game.first, game.first + len(game.associated)))
            for row, game in enumerate(dataset.games)]
    kept = [(row, game, images) for row, game, images in kept if bool(features.valid[images].all())]
    if not kept:
        from pixprompt.errors import UnavailableError

        first = min(features.failures) if features.failures else None
        example = f", e.g. {dataset.images.describe(first)}: {features.failures[first]}" if first is not None else ""
        raise UnavailableError(f"no game of {dataset.name} could be scored: each of its {len(dataset.games):,} "
                               f"games has a candidate image that could not be read{example}")
    jaccards = [game_jaccard(features.features[images] @ cues[row], game.associated) for row, game, images in kept]
    metrics = association_metrics(jaccards, [len(game.associated) for _, game, _ in kept])
    return [{**facts, "task": "association", "templates": None, "ensemble": None, "games": len(kept),
             "games_skipped": len(dataset.games) - len(kept), **metrics, "metric": ASSOCIATION_METRIC,
             "score": metrics[ASSOCIATION_METRIC],
             "elapsed_s": round(image_seconds + time.perf_counter() - started, 3)}]
