"""Few-shot learners on cached image features, beside zero-shot: the CLIP paper's linear probe, a probe pulled
towards the zero-shot classifier, and Tip-Adapter.

- **Linear probe** (Radford et al., 2021, appendix A.3): L2-normalised features, multinomial logistic regression
  fitted by L-BFGS; the inverse regularisation strength C swept on a validation split carved from the training
  images, then the probe refitted on all of them. The objective is scikit-learn's `LogisticRegression`'s
  (C · Σ cross-entropy + ½‖W‖², the bias not penalised), divided by the number of images.
- **Zero-shot-initialised probe** (`linear-zs-init`): the same, started from the text classifier's weights (the
  logit scale times the class embeddings) and penalised by ‖W − W_text‖² instead of ‖W‖²: the problem is
  convex, so a start alone would reach the same optimum; the pull keeps a probe fitted on few images near
  zero-shot.
- **Tip-Adapter** (Zhang et al., ECCV 2022, eq. 6): training-free; the few-shot features are keys F, their
  one-hot labels values L, and a test feature f gets logits = zero-shot logits + α · exp(−β (1 − f Fᵀ)) L.
  α and β are searched on the validation split (the paper's defaults α = 1, β = 5.5 with one image per class).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

#: The CLIP paper's search (appendix A.3): C = 1/λ at the seven values one every two decades of 10⁻⁶…10⁶, then
#: the interval around the best halved, down to eight steps per decade (steps of 1, ½, ¼ and ⅛ decade).
C_START = tuple(10.0 ** e for e in range(-6, 7, 2))
C_REFINEMENTS = (1.0, 0.5, 0.25, 0.125)
#: A fit is converged when the largest entry of its objective's gradient is below GRADIENT_TOLERANCE times the
#: objective and its distance to the minimum is below CERTIFIED_GAP times the objective: the penalty makes the
#: objective at least 1/(C N)-strongly convex in W, so W's part is at most ‖∇_W‖² C N / 2; the unpenalised bias's
#: is estimated from its Hessian's diagonal. A small gradient alone is no proof: from a warm start it can be small
#: while the fit lies far along directions of little curvature. Where the bound stays too loose (large C), a
#: gradient below GRADIENT_FLOOR times the objective stands for it.
GRADIENT_TOLERANCE = 1e-7
CERTIFIED_GAP = 3e-7
GRADIENT_FLOOR = 1e-9
#: L-BFGS iterations per fit at most. The CLIP paper caps 1,000; at large C (nearly separable data) a converged
#: answer needs more, so pixprompt goes on to convergence and says so when a fit still stops short.
MAX_ITERATIONS = 20_000
#: Images per class a probe may ask for (more than any dataset holds; `all` takes every image).
MAX_SHOTS = 100_000
TIP_ALPHAS = tuple(np.round(np.geomspace(0.1, 10, 9), 4))
TIP_BETAS = tuple(np.round(np.linspace(0.5, 10, 9), 4))
TIP_DEFAULTS = (1.0, 5.5)


@dataclass
class LinearProbe:
    weight: torch.Tensor  # (C, D)
    bias: torch.Tensor  # (C,)
    iterations: int = 0
    converged: bool = True
    objective: float = math.nan  # probe_objective where the fit stopped

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        return features.double() @ self.weight.T + self.bias


def normalised(features: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(features.double(), dim=-1)


def probe_objective(probe: LinearProbe, features: torch.Tensor, labels: torch.Tensor, c: float,
                    centre: torch.Tensor | None = None) -> torch.Tensor:
    """Mean cross-entropy + ‖W − centre‖² / (2 C N): scikit-learn's `LogisticRegression` objective
    (C · Σ cross-entropy + ½‖W‖², the bias not penalised) divided by C N."""
    return objective_and_gradient(features.double(), labels.long(), c, probe.weight.double(), probe.bias.double(),
                                  None if centre is None else centre.double())[0]


def fit_logistic(features: torch.Tensor, labels: torch.Tensor, classes: int, c: float,
                 start: LinearProbe | None = None, centre: torch.Tensor | None = None,
                 max_iter: int = MAX_ITERATIONS) -> LinearProbe:
    """Multinomial logistic regression by L-BFGS (float64) to convergence: minimise `probe_objective` from `start`
    (zeros unless given) until converged (see GRADIENT_TOLERANCE), or `max_iter` iterations, or no lower point can
    be found (then `converged` is False)."""
    x, y = features.double(), labels.long()
    anchor = None if centre is None else centre.double()
    # At small C the penalty's curvature 1/(C N) dwarfs the data's: L-BFGS then crawls. Fitting W / s with
    # s = √(C N) (up to 1) makes the penalty's curvature 1: the same minimum, reached in a few iterations.
    scale = min(1.0, math.sqrt(c * len(y)))
    weight = (start.weight.double() / scale if start else torch.zeros(classes, x.shape[1], dtype=torch.float64))
    bias = start.bias.double() if start else torch.zeros(classes, dtype=torch.float64)
    weight, bias = weight.clone(), bias.clone()
    optimiser = torch.optim.LBFGS([weight, bias], lr=1, max_iter=min(1000, max_iter),
                                  tolerance_grad=GRADIENT_TOLERANCE, tolerance_change=0, history_size=20,
                                  line_search_fn="strong_wolfe")

    def loss(curvature: bool = False) -> torch.Tensor:
        value, weight.grad, bias.grad, bias_curvature = objective_and_gradient(x, y, c, weight * scale, bias, anchor,
                                                                               curvature)
        weight.grad.mul_(scale)
        return (value, bias_curvature) if curvature else value

    def measure() -> tuple[float, float, float]:
        """The objective, the gradient's largest entry and the estimated distance to the minimum (see
        CERTIFIED_GAP): ‖∇_W‖² C N / 2, a bound for the weights, plus Σ ∂_b² / (2 ∂²_bb) for the unpenalised
        bias (its Hessian's diagonal)."""
        value, bias_curvature = loss(curvature=True)
        largest = float(max(weight.grad.abs().max(), bias.grad.abs().max()))
        weights_gap = float((weight.grad / scale).square().sum()) * c * len(y) / 2
        bias_gap = float((bias.grad.square() / bias_curvature.clamp_min(1e-300)).sum()) / 2
        return float(value), largest, weights_gap + bias_gap

    def converged(value: float, largest: float, gap: float) -> bool:
        return largest <= GRADIENT_TOLERANCE * value and (gap <= CERTIFIED_GAP * value
                                                          or largest <= GRADIENT_FLOOR * value)

    # L-BFGS's own bound is relative to the objective (near a separable optimum the objective itself is tiny, and
    # an absolute bound would stop far from it); tightened tenfold while the fit is not yet certified
    tolerance = GRADIENT_TOLERANCE
    value, largest, gap = measure()
    while not converged(value, largest, gap) and optimiser.state[weight].get("n_iter", 0) < max_iter:
        if largest <= tolerance * value:
            tolerance = max(tolerance / 10, GRADIENT_FLOOR)
        optimiser.param_groups[0]["tolerance_grad"] = tolerance * value
        optimiser.step(loss)
        previous = value
        value, largest, gap = measure()
        if not value < previous:  # no lower point found: flat to float64
            break
    return LinearProbe(weight * scale, bias, optimiser.state[weight].get("n_iter", 0),
                       converged(value, largest, gap), value)


def objective_and_gradient(x: torch.Tensor, y: torch.Tensor, c: float, weight: torch.Tensor, bias: torch.Tensor,
                           centre: torch.Tensor | None, bias_curvature: bool = False
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """`probe_objective` and its gradient with respect to the weight and the bias, in closed form: one
    matrix product each way and one pass of exponentials over the (images × classes) logits, in place; with
    `bias_curvature`, also the diagonal of the objective's Hessian in the bias, (1/N) Σ p (1 − p)."""
    n = len(y)
    rows = torch.arange(n)
    logits = torch.addmm(bias, x, weight.T)
    logits -= logits.max(dim=1, keepdim=True).values
    true_logit = logits[rows, y]
    probabilities = logits.exp_()
    totals = probabilities.sum(dim=1)
    offset = weight if centre is None else weight - centre
    value = (totals.log() - true_logit).mean() + (offset ** 2).sum() / (2 * c * n)
    probabilities /= totals[:, None]
    curvature = (probabilities * (1 - probabilities)).mean(dim=0) if bias_curvature else None
    probabilities[rows, y] -= 1
    probabilities /= n
    return value, torch.addmm(offset, probabilities.T, x, beta=1 / (c * n)), probabilities.sum(dim=0), curvature


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(dim=1) == labels).double().mean()) if len(labels) else float("nan")


@dataclass
class Sweep:
    """The chosen C, the validation accuracy and the converged objective (on the fitting images) of every C
    visited, and the fits that did not converge."""

    c: float
    scores: dict[float, float]
    objectives: dict[float, float]
    unconverged: list[float]


def sweep_c(train: tuple[torch.Tensor, torch.Tensor], validation: tuple[torch.Tensor, torch.Tensor], classes: int,
            start: LinearProbe | None = None, centre: torch.Tensor | None = None) -> Sweep:
    """The CLIP paper's parametric binary search for C (see C_START, C_REFINEMENTS): the best validation
    accuracy (ties: the smaller C, the stronger regularisation). Each fit starts from `warm_start` over the
    fits already made (the problem is convex: a start changes the speed, never the answer)."""
    fits: dict[float, LinearProbe] = {}
    scores: dict[float, float] = {}

    def score(c: float) -> None:
        if c not in scores:
            fits[c] = fit_logistic(*train, classes, c, warm_start(c, fits) or start, centre)
            scores[c] = accuracy(fits[c].logits(validation[0]), validation[1])

    def best() -> float:
        return max(scores, key=lambda c: (scores[c], -c))

    for c in C_START:
        score(c)
    for decades in C_REFINEMENTS:
        peak = best()
        for c in (peak / 10 ** decades, peak * 10 ** decades):
            if C_START[0] <= c <= C_START[-1]:
                score(c)
    return Sweep(best(), scores, {c: fit.objective for c, fit in fits.items()},
                 sorted(c for c, fit in fits.items() if not fit.converged))


def warm_start(c: float, fits: dict[float, LinearProbe]) -> LinearProbe | None:
    """A start for the fit at `c`: between two visited C, their fits interpolated linearly in log C (the
    solution path is smooth in log C, so this lies nearer than either); beyond them all, the nearest fit."""
    below, above = [k for k in fits if k < c], [k for k in fits if k > c]
    if not (below and above):
        return fits[min(fits, key=lambda k: abs(math.log(c / k)))] if fits else None
    low, high = max(below), min(above)
    share = math.log(c / low) / math.log(high / low)  # 0 at `low`, 1 at `high`
    return LinearProbe(torch.lerp(fits[low].weight, fits[high].weight, share),
                       torch.lerp(fits[low].bias, fits[high].bias, share))


def draw_shots(labels: np.ndarray, shots: int | None, seed: int) -> np.ndarray:
    """Indices of `shots` images per class drawn without replacement (all of a class's when it has fewer, or when
    `shots` is None), in index order."""
    rng = np.random.default_rng(seed)
    chosen = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        chosen.append(members if shots is None or len(members) <= shots else rng.choice(members, shots, False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=int)


def carve_validation(indices: np.ndarray, labels: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split drawn images into (fit, validation): half of each class's images (rounded down) go to validation;
    a class with a single image keeps it for fitting. Empty validation when every class has one image."""
    rng = np.random.default_rng(seed + 1_000_003)
    fit, validation = [], []
    for label in np.unique(labels[indices]):
        members = rng.permutation(indices[labels[indices] == label])
        held = len(members) // 2
        validation.append(members[:held])
        fit.append(members[held:])
    return np.sort(np.concatenate(fit)), np.sort(np.concatenate(validation))


def tip_adapter_logits(zero_shot: torch.Tensor, features: torch.Tensor, keys: torch.Tensor, values: torch.Tensor,
                       alpha: float, beta: float) -> torch.Tensor:
    """Tip-Adapter's logits: zero-shot + α · exp(−β (1 − f·keysᵀ)) · values (features and keys L2-normalised)."""
    affinity = torch.exp(-beta * (1 - normalised(features) @ normalised(keys).T))
    return zero_shot.double() + alpha * affinity @ values.double()


def search_tip(zero_shot: torch.Tensor, features: torch.Tensor, labels: torch.Tensor, keys: torch.Tensor,
               values: torch.Tensor) -> tuple[float, float]:
    """The (α, β) of the grid with the best accuracy on held-out images (ties: the first)."""
    best, chosen = -1.0, TIP_DEFAULTS
    for alpha in TIP_ALPHAS:
        for beta in TIP_BETAS:
            score = accuracy(tip_adapter_logits(zero_shot, features, keys, values, alpha, beta), labels)
            if score > best:
                best, chosen = score, (float(alpha), float(beta))
    return chosen


def one_hot(labels: torch.Tensor, classes: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels.long(), classes).double()


@dataclass
class FewShotResult:
    """One learner's logits on the test images and the hyper-parameters it chose."""

    logits: torch.Tensor
    chosen: dict[str, float | str | int | bool]


def linear_probe(train_x: torch.Tensor, train_y: torch.Tensor, fit: np.ndarray, held: np.ndarray,
                 test_x: torch.Tensor, classes: int, text_weights: torch.Tensor | None = None) -> FewShotResult:
    """The CLIP paper's probe (or, given `text_weights`, the zero-shot-initialised one) on the drawn images
    `fit ∪ held`: C swept with `held` as validation, then refitted on both."""
    x, test = normalised(train_x), normalised(test_x)
    start = LinearProbe(text_weights.double(), torch.zeros(classes, dtype=torch.float64)) \
        if text_weights is not None else None
    drawn = np.sort(np.concatenate([fit, held]))
    unconverged: list[float] = []
    if len(held):
        sweep = sweep_c((x[fit], train_y[fit]), (x[held], train_y[held]), classes, start, text_weights)
        c, how, unconverged = sweep.c, "validation sweep (the CLIP paper's parametric search)", sweep.unconverged
    else:
        c, how = 1.0, "default (no image to spare for validation)"
    probe = fit_logistic(x[drawn], train_y[drawn], classes, c, start, text_weights)
    if not probe.converged:
        unconverged.append(c)
    if unconverged:
        log.warning("the linear probe did not converge within %d L-BFGS iterations at C = %s: its answer there "
                    "may differ from a converged one", MAX_ITERATIONS, ", ".join(f"{u:.3g}" for u in unconverged))
    return FewShotResult(probe.logits(test), {"C": c, "C_chosen_by": how, "iterations": probe.iterations,
                                              "converged": not unconverged})


def tip_adapter(train_x: torch.Tensor, train_y: torch.Tensor, fit: np.ndarray, held: np.ndarray,
                test_x: torch.Tensor, zero_shot_train: torch.Tensor, zero_shot_test: torch.Tensor,
                classes: int) -> FewShotResult:
    """Tip-Adapter with (α, β) searched on `held` (keys from `fit`), then every drawn image as a key."""
    if len(held):
        alpha, beta = search_tip(zero_shot_train[held], train_x[held], train_y[held], train_x[fit],
                                 one_hot(train_y[fit], classes))
        how = "validation search"
    else:
        (alpha, beta), how = TIP_DEFAULTS, "the paper's defaults (no image to spare for validation)"
    drawn = np.sort(np.concatenate([fit, held]))
    logits = tip_adapter_logits(zero_shot_test, test_x, train_x[drawn], one_hot(train_y[drawn], classes), alpha, beta)
    return FewShotResult(logits, {"alpha": alpha, "beta": beta, "chosen_by": how})


def shots_list(text: str) -> list[int | None]:
    """`1,2,4,all` → [1, 2, 4, None] (None: every training image)."""
    values: list[int | None] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        if part == "all":
            values.append(None)
        elif part.isdigit() and 0 < int(part) <= MAX_SHOTS:
            values.append(int(part))
        else:
            raise ValueError(f"shots must be whole numbers from 1 to {MAX_SHOTS:,} or `all`, not {part[:30]!r}")
    if not values:
        raise ValueError("no shot count given")
    return values


def spread(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, 0.0
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
