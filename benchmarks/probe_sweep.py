"""The linear probe's C sweep against scikit-learn's on the same features: time and objectives.

The real use is ImageNet 16-shot: 16,000 training features × 1,000 classes (512-d for ViT-B/32). The features
here are synthetic (overlapping Gaussian clusters on the unit sphere, as L2-normalised CLIP features are), cut
into the probe's fit and validation halves. pixprompt runs the CLIP paper's search (`logistic.sweep_c`); then
scikit-learn's `LogisticRegression(lbfgs)` is fitted, converged, at every C pixprompt visited. Printed: both
times, their ratio and the largest relative objective difference.

    python benchmarks/probe_sweep.py                       # 100 classes × 16 shots × 512-d (minutes)
    python benchmarks/probe_sweep.py --classes 1000        # ImageNet's size
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from pixprompt.methods import logistic


def synthetic(classes: int, per_class: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping clusters, L2-normalised: a probe gets many, not all, right."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(12345).normal(size=(classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    points = centres[labels] + rng.normal(scale=2.5, size=(len(labels), dim))
    return logistic.normalised(torch.tensor(points)), torch.tensor(labels)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--classes", type=int, default=100)
    parser.add_argument("--shots", type=int, default=16)
    parser.add_argument("--dim", type=int, default=512)
    args = parser.parse_args()
    half = args.shots // 2
    fit = synthetic(args.classes, args.shots - half, args.dim, 0)
    held = synthetic(args.classes, half, args.dim, 1)
    started = time.perf_counter()
    sweep = logistic.sweep_c(fit, held, args.classes)
    ours = time.perf_counter() - started

    from sklearn.linear_model import LogisticRegression

    print(f"pixprompt's sweep: {ours:.1f} s over {len(sweep.scores)} C values", flush=True)
    theirs, worst = 0.0, 0.0
    for c in sorted(sweep.scores):
        started = time.perf_counter()
        model = LogisticRegression(C=c, max_iter=100_000, tol=1e-10).fit(fit[0].numpy(), fit[1].numpy())
        theirs += time.perf_counter() - started
        reference = float(logistic.probe_objective(logistic.LinearProbe(torch.tensor(model.coef_),
                                                                      torch.tensor(model.intercept_)), *fit, c))
        difference = (sweep.objectives[c] - reference) / reference
        worst = max(worst, difference)
        print(f"  C = {c:<9.3g} scikit-learn {time.perf_counter() - started:7.1f} s, {model.n_iter_[0]:5d} "
              f"iterations; objective {difference:+.1e} relative to its", flush=True)
    print(f"{len(fit[1]):,} training features × {args.classes} classes × {args.dim}-d, "
          f"{len(sweep.scores)} C values (chosen C = {sweep.c:.3g}, unconverged: {sweep.unconverged or 'none'})")
    print(f"pixprompt sweep {ours:.1f} s, scikit-learn at the same C values {theirs:.1f} s: "
          f"{theirs / ours:.2f}× faster; objective at most {worst:+.1e} relative to scikit-learn's")


if __name__ == "__main__":
    main()
