"""What the intervals cost beside the evaluation they qualify, at ImageNet's size, from cached features.

    python benchmarks/intervals.py [--images 50000] [--classes 1000] [--resamples 1000]

Times, on synthetic L2-normalised features (512-d) and a random classifier: scoring every image (`score_images`:
the top-5 and probabilities, block by block), then the record's intervals (`figure_intervals`: Wilson's, the bootstrap
over classes and over images for ECE) and one paired comparison (bootstrap + McNemar). Prints each and their ratio
to the scoring time (the target: ≤ 5 %).
"""
from __future__ import annotations

import argparse
import time

import torch

from pixprompt.evaluation.intervals import BootstrapSettings, paired_difference
from pixprompt.evaluation.metrics import calibration_metrics, ranking_metrics
from pixprompt.evaluation.runs import figure_intervals, score_images
from pixprompt.prompts.classifier import ZeroShotClassifier
from pixprompt.prompts.templates import PromptSet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--classes", type=int, default=1000)
    parser.add_argument("--resamples", type=int, default=1000)
    args = parser.parse_args()
    generator = torch.Generator().manual_seed(0)
    weights = torch.nn.functional.normalize(torch.randn(args.classes, 512, generator=generator), dim=-1)
    labels = torch.randint(0, args.classes, (args.images,), generator=generator)
    features = torch.nn.functional.normalize(weights[labels] + 1.5 * torch.randn(args.images, 512,
                                                                                  generator=generator), dim=-1)
    classifier = ZeroShotClassifier([f"class {c}" for c in range(args.classes)], PromptSet("raw", ("{}",)), weights,
                                    torch.arange(args.classes), "synthetic", 100.0, 0.0, "softmax")
    started = time.perf_counter()
    scored = score_images(classifier, features, labels, "embedding")
    metrics = ranking_metrics(scored.ranking, labels, classifier.classnames)
    metrics.update(calibration_metrics(scored.confidence, scored.correct, scored.nll, scored.squared_error))
    scoring = time.perf_counter() - started
    settings = BootstrapSettings(resamples=args.resamples)
    started = time.perf_counter()
    figure_intervals(scored, metrics, settings)
    interval_seconds = time.perf_counter() - started
    other = scored.correct.copy()
    other[: args.images // 50] = ~other[: args.images // 50]
    started = time.perf_counter()
    paired_difference(other, scored.correct, settings)
    paired = time.perf_counter() - started
    print(f"{args.images:,} images × {args.classes:,} classes, {args.resamples:,} resamples")
    share = 100 * interval_seconds / scoring
    print(f"scoring + metrics {scoring:.2f} s; intervals {interval_seconds:.3f} s ({share:.1f} %); one paired "
          f"comparison {paired:.3f} s ({100 * paired / scoring:.1f} %)")


if __name__ == "__main__":
    main()
