"""The accuracies the CLIP and SigLIP papers report (and a public reproduction), shipped as a cited data file."""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any


@lru_cache(maxsize=1)
def reported() -> dict[str, Any]:
    """The parsed `reported_accuracy.json` (sources, per-model figures, supervised baselines)."""
    return json.loads(resources.files("pixprompt.resources").joinpath("reported_accuracy.json").read_text())


def reported_for(model: str, pretrained: str | None, dataset: str) -> dict[str, Any]:
    """Reported figures (%) for a model on a dataset: keys clip_table11, siglip_table3, clip80, standard, raw.

    Imagenette evaluated with the 1000 ImageNet classes is not ImageNet, so only exact dataset names match.
    """
    alias = f"{model}/{pretrained}" if pretrained else model
    for entry in reported()["models"]:
        if alias in entry["aliases"]:
            return {"label": entry["label"], **entry.get(dataset, {})}
    return {}
