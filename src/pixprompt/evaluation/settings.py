"""How a job runs: one value the CLI builds once from its options and every job in `evaluation/` takes, instead of
the same long list of arguments passed down each call."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pixprompt.evaluation.intervals import BootstrapSettings
from pixprompt.paths import resolve_cache

if TYPE_CHECKING:
    from pixprompt.data.datasets import ImageDataset
    from pixprompt.features.cache import FeatureSet


@dataclass(frozen=True)
class RunSettings:
    """`cache_root`: True (the default) caches where the CLI does (`pixprompt.paths.cache_root()`), a folder caches
    there, None or False neither reads nor writes a cache. `batch_size` and `workers` (image-decoding processes):
    None picks them for the device. `strict`: refuse a run in which any image could not be read. `evaluate` alone
    reads the rest: `examples_per_class` (images kept with their top-3 for the visual report), `min_probability`
    (open-set coverage at that top-1 probability), `calibration` (a dataset to fit a temperature on), `hierarchy`
    (each class's subclasses, for CHiLS), `method_seed` (the order TDA streams the images in), `intervals` and
    `baseline` (see `evaluation.intervals`)."""

    cache_root: Path | str | bool | None = True
    batch_size: int | None = None
    workers: int | None = None
    strict: bool = False
    examples_per_class: int = 0
    min_probability: float | None = None
    calibration: ImageDataset | None = None
    hierarchy: Mapping[str, Sequence[str]] | None = None
    method_seed: int = 1
    #: The intervals' confidence, resamples and seed (`--confidence`, `--bootstrap`), and the record every other one
    #: of a run is compared with (`--baseline`: a template set's name; None: the first template set, `plain`).
    intervals: BootstrapSettings = field(default_factory=BootstrapSettings)
    baseline: str | None = None

    @property
    def cache(self) -> Path | None:
        """The cache folder, resolved (None: no cache)."""
        return resolve_cache(self.cache_root)

    def features(self, model: Any, dataset: ImageDataset) -> FeatureSet | None:
        """`dataset`'s features under `model` (see `extract_features`), cached and batched as these settings say;
        None on ranks other than 0 of a multi-process job."""
        from pixprompt.features.cache import extract_features

        return extract_features(model, dataset, self.cache, batch_size=self.batch_size, workers=self.workers)


def run_settings(settings: RunSettings | None, options: dict[str, Any]) -> RunSettings:
    """`settings` (the defaults when None) with the keyword `options` a Python caller gave instead (a misspelt one
    is a TypeError naming it)."""
    return replace(settings or RunSettings(), **options)

