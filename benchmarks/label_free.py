"""Every label-free method on the shared images with the test model: its top-1 and its cost beside the plain ensemble.

The images are encoded once (the feature cache, in a temporary folder); each method then runs on the cached
features, as `eval --method` does, and is timed alone: the plain ensemble's scoring, and each method's scores.
Printed: one row per method with its top-1, its seconds and the ratio to the plain ensemble's seconds. The test
model has random weights, so the accuracies say nothing of the methods' value (the papers' figures do, README);
the costs are real.

    python benchmarks/label_free.py                                   # imagenette val (3,925 images), clip7
    python benchmarks/label_free.py --dataset folder:../shared/data/cifar10-test --templates clip80
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import tiny_models  # noqa: E402  (the test model, built as the tests build it)
from pixprompt import load_model  # noqa: E402
from pixprompt.data.datasets import DatasetOptions, load_dataset  # noqa: E402
from pixprompt.evaluation.label_free import METHODS, MethodContext, method_scores  # noqa: E402
from pixprompt.evaluation.scoring import scores, text_classifier  # noqa: E402
from pixprompt.features.cache import extract_features  # noqa: E402
from pixprompt.prompts import resolve_templates  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="imagenette")
    parser.add_argument("--data-dir", default=str(Path(__file__).resolve().parents[2] / "shared/data/imagenette-val"))
    parser.add_argument("--templates", default="clip7")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        model = load_model(str(tiny_models.make_open_clip_clip(root / "model")), device="cpu")
        dataset = load_dataset(args.dataset, DatasetOptions(args.data_dir))
        features = extract_features(model, dataset, root / "cache")
        x, y = features.features[features.valid], features.labels[features.valid]
        (prompt_set,) = resolve_templates(args.templates)
        classifier = text_classifier(model, dataset.classnames, prompt_set, root / "cache")
        hierarchy = {name: [name, f"a small {name}", f"a large {name}"] for name in dataset.classnames}
        context = MethodContext(model, dataset.name, root / "cache", hierarchy)
        text_classifier(model, [s for n in dataset.classnames for s in hierarchy[n]], prompt_set, root / "cache")
        started = time.perf_counter()
        plain = scores(classifier, x, "embedding")
        plain_seconds = time.perf_counter() - started
        rows = [{"method": "plain", "top1 %": round(100 * float((plain.argmax(1) == y).float().mean()), 2),
                 "seconds": round(plain_seconds, 4), "× plain": 1.0}]
        for name in METHODS:
            started = time.perf_counter()
            result, _ = method_scores(name, classifier, x, context)
            seconds = time.perf_counter() - started
            rows.append({"method": name, "top1 %": round(100 * float((result.argmax(1) == y).float().mean()), 2),
                         "seconds": round(seconds, 4), "× plain": round(seconds / plain_seconds, 1)})
    print(f"{len(y):,} images × {len(dataset.classnames)} classes × {len(prompt_set.templates)} templates "
          f"({dataset.name}, {prompt_set.name}), features cached")
    print(f"{'method':<10}{'top1 %':>8}{'seconds':>10}{'× plain':>10}")
    for row in rows:
        print(f"{row['method']:<10}{row['top1 %']:>8.2f}{row['seconds']:>10.4f}{row['× plain']:>10.1f}")


if __name__ == "__main__":
    main()
