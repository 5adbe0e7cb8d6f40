"""The CLIP paper's linear probe (Radford et al., 2021, appendix A.3) on arrays: L2-normalised features,
multinomial logistic regression fitted by L-BFGS to a certified optimum, and the parametric search for its C.

The objective is scikit-learn's `LogisticRegression`'s (C · Σ cross-entropy + ½‖W‖², the bias not penalised),
divided by the number of images; with a `centre` (the zero-shot-initialised probe), ‖W − centre‖² is penalised
instead: the problem is convex, so a start alone would reach the same optimum; the pull keeps a probe fitted on
few images near zero-shot.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field

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
#: A fit's first step along −∇ goes to the minimum of the objective's quadratic model there, but moves no
#: image's logits further apart than this (the log-sum-exp is near quadratic only over changes of about one).
LOGIT_CHANGE = 2.0
#: L-BFGS iterations per fit at most. The CLIP paper caps 1,000; at large C (nearly separable data) a converged
#: answer needs more, so pixprompt goes on to convergence and says so when a fit still stops short.
MAX_ITERATIONS = 20_000
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
    weight = (start.weight.double() / scale if start else torch.zeros(classes, x.shape[1], dtype=torch.float64,
                                                                                device=x.device))
    bias = start.bias.double() if start else torch.zeros(classes, dtype=torch.float64, device=x.device)
    weight, bias = weight.clone(), bias.clone()
    optimiser = torch.optim.LBFGS([weight, bias], lr=1, max_iter=min(1000, max_iter),
                                  tolerance_grad=GRADIENT_TOLERANCE, tolerance_change=0, history_size=20,
                                  line_search_fn="strong_wolfe")

    evaluated: dict[str, tuple] = {}  # the last point's values: L-BFGS and the checks below ask for it again

    def evaluate(curvature: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        last = evaluated.get("point")
        if last is not None and torch.equal(last[0], weight) and torch.equal(last[1], bias) \
                and (last[2][3] is not None or not curvature):
            return last[2]
        value, weight_grad, bias_grad, bias_curvature = objective_and_gradient(x, y, c, weight * scale, bias, anchor,
                                                                               curvature)
        evaluated["point"] = (weight.clone(), bias.clone(), (value, weight_grad.mul_(scale), bias_grad, bias_curvature))
        return evaluated["point"][2]

    def loss() -> torch.Tensor:
        value, weight_grad, bias_grad, _ = evaluate()
        weight.grad, bias.grad = weight_grad.clone(), bias_grad.clone()
        return value

    def measure() -> tuple[float, float, bool]:
        """The objective, the gradient's largest entry and whether the fit is converged: the gradient small and the
        estimated distance to the minimum (see CERTIFIED_GAP) small too — ‖∇_W‖² C N / 2, a bound for the weights,
        plus Σ ∂_b² / (2 ∂²_bb) for the unpenalised bias (its Hessian's diagonal) —, or the gradient below the
        floor. The distance (which needs the bias's curvature) is computed only once the gradient is small."""
        value, weight_grad, bias_grad, _ = evaluate()
        value, largest = float(value), float(max(weight_grad.abs().max(), bias_grad.abs().max()))
        if largest > GRADIENT_TOLERANCE * value:
            return value, largest, False
        if largest <= GRADIENT_FLOOR * value:
            return value, largest, True
        bias_curvature = evaluate(curvature=True)[3]
        weights_gap = float((weight_grad / scale).square().sum()) * c * len(y) / 2
        bias_gap = float((bias_grad.square() / bias_curvature.clamp_min(1e-300)).sum()) / 2
        return value, largest, weights_gap + bias_gap <= CERTIFIED_GAP * value

    # L-BFGS's own bound is relative to the objective (near a separable optimum the objective itself is tiny, and
    # an absolute bound would stop far from it); tightened tenfold while the fit is not yet certified
    tolerance = GRADIENT_TOLERANCE
    value, largest, converged = measure()
    if not converged:
        # L-BFGS's first step along −∇ is 1/‖∇‖₁ long, often far too short from a warm start, and its line search
        # then widens it tenfold per evaluation: start at the quadratic model's minimum instead
        _, weight_grad, bias_grad, _ = evaluate()
        step = steepest_descent_step(x, c, weight * scale, bias, weight_grad, bias_grad, scale)
        first = min(1.0, 1.0 / float(weight_grad.abs().sum() + bias_grad.abs().sum()))
        optimiser.param_groups[0].update(lr=step / first, max_iter=1, tolerance_grad=tolerance * value)
        optimiser.step(loss)
        optimiser.param_groups[0].update(lr=1, max_iter=min(1000, max_iter))
        value, largest, converged = measure()
    while not converged and optimiser.state[weight].get("n_iter", 0) < max_iter:
        if largest <= tolerance * value:
            tolerance = max(tolerance / 10, GRADIENT_FLOOR)
        optimiser.param_groups[0]["tolerance_grad"] = tolerance * value
        optimiser.step(loss)
        previous = value
        value, largest, converged = measure()
        if not value < previous:  # no lower point found: flat to float64
            break
    return LinearProbe(weight * scale, bias, optimiser.state[weight].get("n_iter", 0), converged, value)


def steepest_descent_step(x: torch.Tensor, c: float, weight: torch.Tensor, bias: torch.Tensor,
                          weight_grad: torch.Tensor, bias_grad: torch.Tensor, scale: float) -> float:
    """The step t minimising the objective's quadratic model along −∇ (in the fit's coordinates, W / `scale`):
    ‖∇‖² / ∇ᵀH∇, the curvature in closed form — (1/N) Σ_i Var_{p_i}(a_i) over the logits' change a_i, plus the
    penalty's ‖ΔW‖² / (C N) —, but no longer than moves any image's logits LOGIT_CHANGE further apart."""
    n = len(x)
    delta_weight, delta_bias = weight_grad * scale, bias_grad
    probabilities = torch.softmax(torch.addmm(bias, x, weight.T), dim=1)
    change = torch.addmm(delta_bias, x, delta_weight.T)
    mean = (probabilities * change).sum(dim=1)
    spread = float((change.amax(dim=1) - change.amin(dim=1)).max())
    curvature = float(((probabilities * change.square_()).sum(dim=1) - mean.square()).mean()
                      + delta_weight.square().sum() / (c * n))
    squared = float(weight_grad.square().sum() + bias_grad.square().sum())
    return min(squared / max(curvature, 1e-300), LOGIT_CHANGE / max(spread, 1e-300))


def objective_and_gradient(x: torch.Tensor, y: torch.Tensor, c: float, weight: torch.Tensor, bias: torch.Tensor,
                           centre: torch.Tensor | None, bias_curvature: bool = False
                           ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """`probe_objective` and its gradient with respect to the weight and the bias, in closed form: one
    matrix product each way and one pass of exponentials over the (images × classes) logits, in place; with
    `bias_curvature`, also the diagonal of the objective's Hessian in the bias, (1/N) Σ p (1 − p)."""
    n = len(y)
    rows = torch.arange(n, device=x.device)
    logits = torch.addmm(bias, x, weight.T)
    logits -= logits.max(dim=1, keepdim=True).values
    true_logit = logits[rows, y]
    probabilities = logits.exp_()
    totals = probabilities.sum(dim=1)
    offset = weight if centre is None else weight - centre
    value = (totals.log() - true_logit).mean() + (offset ** 2).sum() / (2 * c * n)
    probabilities /= totals[:, None]
    curvature = (probabilities.sum(dim=0) - probabilities.pow(2).sum(dim=0)) / n if bias_curvature else None
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


@dataclass
class LinearProbeClassifier:
    """The CLIP paper's probe as a fit/score object on feature arrays. `fit` sweeps C with the `held` images as
    validation (`sweep_c`), then refits on `fit ∪ held`; with `text_weights` it is the zero-shot-initialised probe
    (started from, and pulled towards, the text classifier). The fits run on `device` (a GPU when given one)."""

    classes: int
    text_weights: torch.Tensor | None = None
    device: torch.device | str | None = None
    probe: LinearProbe | None = None
    chosen: dict[str, float | str | int | bool] = field(default_factory=dict)

    def fit(self, features: torch.Tensor, labels: torch.Tensor, fit: np.ndarray, held: np.ndarray
            ) -> LinearProbeClassifier:
        x, y = normalised(features).to(self.device), labels.to(self.device)
        centre = None if self.text_weights is None else self.text_weights.double().to(x.device)
        start = None if centre is None else LinearProbe(centre, torch.zeros(self.classes, dtype=torch.float64,
                                                                            device=x.device))
        unconverged: list[float] = []
        if len(held):
            sweep = sweep_c((x[fit], y[fit]), (x[held], y[held]), self.classes, start, centre)
            c, how, unconverged = sweep.c, "validation sweep (the CLIP paper's parametric search)", sweep.unconverged
        else:
            c, how = 1.0, "default (no image to spare for validation)"
        drawn = np.sort(np.concatenate([fit, held]))
        self.probe = fit_logistic(x[drawn], y[drawn], self.classes, c, start, centre)
        if not self.probe.converged:
            unconverged.append(c)
        if unconverged:
            log.warning("the linear probe did not converge within %d L-BFGS iterations at C = %s: its answer there "
                        "may differ from a converged one", MAX_ITERATIONS, ", ".join(f"{u:.3g}" for u in unconverged))
        self.chosen = {"C": c, "C_chosen_by": how, "iterations": self.probe.iterations, "converged": not unconverged}
        return self

    def logits(self, features: torch.Tensor) -> torch.Tensor:
        """(N, classes) logits of the fitted probe, on the CPU."""
        if self.probe is None:
            raise RuntimeError("fit the probe first")
        return self.probe.logits(normalised(features).to(self.probe.weight.device)).cpu()
