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
from collections import deque
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
#: L-BFGS's memory (pairs of steps and gradient changes) and its line search's strong Wolfe constants.
HISTORY = 20
ARMIJO, WOLFE = 1e-4, 0.9
LINE_SEARCH_TRIALS = 40
#: The logits are carried from step to step (Z + α·ΔZ) and recomputed exactly at least this often, so the
#: products' float32 rounding accumulates over no more iterations than these.
REFRESH_ITERATIONS = 50
#: Between exact evaluations the logits and the gradient are carried as the last exact ones plus float32
#: products of the changes since, so their rounding shrinks with those changes; the exact evaluation is redone
#: once the gradient has fallen to this share of the last exact one's, well before that rounding matters.
REFINEMENT = 1e-2


def product_dtype() -> torch.dtype:
    """The dtype of a fit's matrix products between certificates: float32, unless float32 matmuls may round
    coarser (TF32, bfloat16: `torch.set_float32_matmul_precision`), then float64."""
    return torch.float32 if torch.get_float32_matmul_precision() == "highest" else torch.float64


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
                    centre: torch.Tensor | None = None) -> float:
    """Mean cross-entropy + ‖W − centre‖² / (2 C N): scikit-learn's `LogisticRegression` objective
    (C · Σ cross-entropy + ½‖W‖², the bias not penalised) divided by C N, in float64."""
    problem = _Objective.of(features, labels, c, 1.0, centre)
    return problem.evaluate(torch.cat([probe.weight.double(), probe.bias.double()[:, None]], dim=1)).value


def fit_logistic(features: torch.Tensor, labels: torch.Tensor, classes: int, c: float,
                 start: LinearProbe | None = None, centre: torch.Tensor | None = None,
                 max_iter: int = MAX_ITERATIONS) -> LinearProbe:
    """Multinomial logistic regression by L-BFGS to a certified optimum: minimise `probe_objective` from `start`
    (zeros unless given) until converged (see GRADIENT_TOLERANCE), or `max_iter` iterations, or no lower point can
    be found (then `converged` is False).

    The logits are carried along the iterations (Z + α·ΔZ), so an iteration costs two matrix products, ΔZ and
    the gradient's change, however many points its line search tries; those two are in `product_dtype()` (float32
    on a CPU: twice as fast) and carried from the last exact evaluation (see REFINEMENT). Every convergence test
    recomputes the objective and gradient exactly, in float64, and only that certifies a fit."""
    # At small C the penalty's curvature 1/(C N) dwarfs the data's: L-BFGS then crawls. Fitting W / s with
    # s = √(C N) (up to 1) makes the penalty's curvature 1: the same minimum, reached in a few iterations.
    scale = min(1.0, math.sqrt(c * len(labels)))
    problem = _Objective.of(features, labels, c, scale, centre, workspace_classes=classes)
    theta = (torch.cat([start.weight.double() / scale, start.bias.double()[:, None]], dim=1) if start else
             torch.zeros(classes, features.shape[1] + 1, dtype=torch.float64, device=features.device))
    point = reference = problem.evaluate(theta, exact=False)  # the first certificate comes once nearer
    tolerance = GRADIENT_TOLERANCE
    converged = False
    memory: deque[tuple[torch.Tensor, torch.Tensor, float]] = deque(maxlen=HISTORY)
    iterations, carried = 0, 0  # carried: iterations since the reference (the last exact evaluation)
    while not converged and iterations < max_iter:
        direction = lbfgs_direction(point.gradient, memory)
        slope = dot(direction, point.gradient)
        if not slope < 0:  # the memory's curvature went stale: start it again
            memory.clear()
            direction = -point.gradient
            slope = -dot(direction, direction)
        change = problem.change(direction)
        found = line_search(problem, point, direction, change,
                            1.0 if memory else first_step(problem, point, direction, change), slope)
        iterations += 1
        if found is None:  # no lower point: recompute exactly, then give up where even that finds none
            if carried == 0 and reference.exact and not memory:
                break
            point = reference = problem.evaluate(point.theta)
            carried = 0
            memory.clear()
            continue
        alpha, value = found
        step = direction.mul_(alpha)
        theta = point.theta + step
        logits, gradient = problem.accept(reference, theta)
        # the memory in float32: it only shapes the directions (halving the two-loop's memory traffic)
        step, difference = step.float(), (gradient - point.gradient).float()
        inner = dot(step, difference)
        if inner > 1e-10 * (dot(difference, difference) * dot(step, step)) ** 0.5:
            memory.append((step, difference, 1 / inner))
        point, carried = _Point(theta, logits, value, gradient), carried + 1
        if largest(point) <= max(tolerance * value, REFINEMENT * largest(reference)) \
                or carried >= REFRESH_ITERATIONS:
            point = reference = problem.evaluate(theta)
            carried = 0
            converged = certified(point, problem.rho, tolerance)
            if not converged and largest(point) <= tolerance * point.value:
                tolerance = max(tolerance / 10, GRADIENT_FLOOR)
    if carried or not point.exact:
        point = problem.evaluate(point.theta)
        converged = certified(point, problem.rho, tolerance)
    return LinearProbe(point.theta[:, :-1] * scale, point.theta[:, -1].clone(), iterations, converged, point.value)


def largest(point: _Point) -> float:
    return float(point.gradient.abs().max())


def certified(point: _Point, rho: float, tolerance: float) -> bool:
    """Whether an exactly evaluated point (`_Point.exact`) is converged: the gradient's largest entry below
    `tolerance` times the objective, and the estimated distance to the minimum (see CERTIFIED_GAP) small too —
    ‖∇_W‖² / (2ρ), a bound for the weights (ρ: the penalty's curvature), plus Σ ∂_b² / (2 ∂²_bb) for the
    unpenalised bias (its Hessian's diagonal) —, or the gradient below the floor."""
    value, gradient = point.value, point.gradient
    if not point.exact or largest(point) > tolerance * value:
        return False
    if largest(point) <= GRADIENT_FLOOR * value:
        return True
    weights_gap = float(gradient[:, :-1].square().sum()) / (2 * rho)
    bias_gap = float((gradient[:, -1].square() / point.curvature.clamp_min(1e-300)).sum()) / 2
    return weights_gap + bias_gap <= CERTIFIED_GAP * value


def lbfgs_direction(gradient: torch.Tensor, memory: deque[tuple[torch.Tensor, torch.Tensor, float]]
                    ) -> torch.Tensor:
    """−H∇ by L-BFGS's two-loop recursion over `memory` (step, gradient change, 1 / their inner product; in
    float32); −∇ when it is empty."""
    if not memory:
        return -gradient
    direction = -gradient.float()
    coefficients = []
    for step, difference, inverse in reversed(memory):
        coefficient = inverse * dot(step, direction)
        direction.sub_(difference, alpha=coefficient)
        coefficients.append(coefficient)
    step, difference, inverse = memory[-1]
    direction.div_(inverse * dot(difference, difference))
    for (step, difference, inverse), coefficient in zip(memory, reversed(coefficients)):
        direction.add_(step, alpha=coefficient - inverse * dot(difference, direction))
    return direction.double()


def dot(a: torch.Tensor, b: torch.Tensor) -> float:
    """The inner product of two same-shaped tensors, without a temporary where both are contiguous."""
    return float(torch.dot(a.reshape(-1), b.reshape(-1)))


def first_step(problem: _Objective, point: _Point, direction: torch.Tensor, change: torch.Tensor) -> float:
    """A first step without memory: to the minimum of the objective's quadratic model along `direction`
    (L-BFGS's own 1/‖∇‖₁ is far too short from a warm start) — its curvature in closed form, (1/N) Σ_i Var_{p_i}
    of the logits' change plus the penalty's —, but no longer than moves any image's logits LOGIT_CHANGE further
    apart."""
    _, probabilities = problem.data_terms(point.logits, problem.workspace.probabilities)
    mean = (probabilities * change).sum(dim=1)
    curvature = float(((probabilities * change.square()).sum(dim=1) - mean.square()).mean()) \
        + problem.rho * float(direction[:, :-1].square().sum())
    spread = float((change.amax(dim=1) - change.amin(dim=1)).max())
    return min(-dot(direction, point.gradient) / max(curvature, 1e-300), LOGIT_CHANGE / max(spread, 1e-300))


def line_search(problem: _Objective, point: _Point, direction: torch.Tensor, change: torch.Tensor, alpha: float,
                slope: float) -> tuple[float, float] | None:
    """A step satisfying the strong Wolfe conditions (ARMIJO, WOLFE) along `direction`, from `alpha`: the
    objective is convex along it, so the root of φ′ is bracketed and closed in on by secants. Returns the step and
    the objective there (the lowest point found, if no step satisfied them), its logits and softmax left in the
    workspace's trial arrays; None if no point was lower."""
    low, low_slope, high, high_slope = 0.0, slope, math.inf, math.nan
    best = None
    for _ in range(LINE_SEARCH_TRIALS):
        value, derivative = problem.step(point, direction, change, alpha)
        sufficient = value <= point.value + ARMIJO * alpha * slope
        if sufficient and abs(derivative) <= -WOLFE * slope:
            return alpha, value
        if value < point.value and (best is None or value < best[1]):
            best = alpha, value
        if not sufficient or derivative > 0:
            high, high_slope = alpha, derivative
        else:
            low, low_slope = alpha, derivative
        if math.isinf(high):  # still descending: extrapolate φ′'s secant through 0 and `low`, 2–10 times further
            root = low * slope / (slope - low_slope) if low_slope > slope else math.inf
            alpha = min(max(root, 2 * low), 10 * low)
        else:
            width = high - low
            root = low - low_slope * width / (high_slope - low_slope) if high_slope > low_slope else low + width / 2
            alpha = min(max(root, low + 0.1 * width), high - 0.1 * width)
    if best is not None:
        problem.step(point, direction, change, best[0])  # its arrays again
    return best


@dataclass
class _Point:
    theta: torch.Tensor  # (K, D + 1): the weights in the fit's coordinates and the bias
    logits: torch.Tensor  # (N, K) float64
    value: float
    gradient: torch.Tensor
    # where evaluated (not carried): the bias's Hessian diagonal, P − Y and the cross-entropy's gradient
    curvature: torch.Tensor | None = None
    residual: torch.Tensor | None = None
    data_gradient: torch.Tensor | None = None
    exact: bool = False  # evaluated with float64 products: only such a point is certified


class _Workspace:
    """The (N, K) arrays a fit reuses from iteration to iteration: a fresh array that size costs a pass's worth of
    page faults each time it is made."""

    def __init__(self, n: int, k: int, device: torch.device, fast: torch.dtype):
        def array(dtype: torch.dtype = torch.float64) -> torch.Tensor:
            return torch.empty(n, k, dtype=dtype, device=device)

        self.point_logits, self.trial_logits = array(), array()
        self.probabilities, self.reference_residual, self.change, self.fast = array(), array(), array(), array(fast)

    def swap(self) -> torch.Tensor:
        """The trial's logits become the point's."""
        self.point_logits, self.trial_logits = self.trial_logits, self.point_logits
        return self.point_logits


@dataclass
class _Objective:
    """One fit's problem in its coordinates θ = [W / s | b] over the features [s·x | 1] (s: see `fit_logistic`):
    mean cross-entropy + ρ‖θ_W − anchor‖² / 2 with ρ = s² / (C N) — `probe_objective`, unchanged."""

    features: torch.Tensor  # (N, D + 1) float64
    fast: torch.Tensor  # the same in `product_dtype()`
    labels: torch.Tensor
    rho: float
    anchor: torch.Tensor | None  # the centre / s
    workspace: _Workspace | None = None

    @classmethod
    def of(cls, features: torch.Tensor, labels: torch.Tensor, c: float, scale: float,
           centre: torch.Tensor | None, workspace_classes: int | None = None) -> _Objective:
        """The problem at C with the features scaled by `scale`; with `workspace_classes`, the arrays a fit over
        that many classes reuses."""
        x = features.double()
        augmented = torch.cat([x * scale, torch.ones(len(x), 1, dtype=x.dtype, device=x.device)], dim=1)
        fast = augmented.to(product_dtype())
        return cls(augmented, fast, labels.long().to(x.device), scale ** 2 / (c * len(x)),
                   None if centre is None else centre.double() / scale,
                   None if workspace_classes is None else _Workspace(len(x), workspace_classes, x.device, fast.dtype))

    def offset(self, theta: torch.Tensor) -> torch.Tensor:
        weights = theta[:, :-1]
        return weights if self.anchor is None else weights - self.anchor

    def penalty_gradient(self, theta: torch.Tensor) -> torch.Tensor:
        gradient = torch.zeros_like(theta)
        gradient[:, :-1] = self.offset(theta) * self.rho
        return gradient

    def data_terms(self, logits: torch.Tensor, out: torch.Tensor | None = None) -> tuple[float, torch.Tensor]:
        """The mean cross-entropy of (N, K) logits, and their softmax (in `out`, or a new array)."""
        rows = torch.arange(len(self.labels), device=logits.device)
        top = logits.amax(dim=1, keepdim=True)
        probabilities = torch.sub(logits, top, out=out).exp_() if out is not None else (logits - top).exp_()
        totals = probabilities.sum(dim=1)
        loss = float((top.squeeze(1) + totals.log() - logits[rows, self.labels]).mean())
        return loss, probabilities.div_(totals[:, None])

    def residual(self, probabilities: torch.Tensor) -> torch.Tensor:
        """P − Y, in place: N times the cross-entropy's gradient in the logits."""
        probabilities[torch.arange(len(self.labels), device=probabilities.device), self.labels] -= 1
        return probabilities

    def evaluate(self, theta: torch.Tensor, exact: bool = True) -> _Point:
        """The objective, its gradient and the bias's curvature at θ; `exact`: every product in float64, else in
        `product_dtype()` (a start to carry from, never certified)."""
        space = self.workspace
        if exact:
            logits = torch.matmul(self.features, theta.T, out=space.point_logits) if space else self.features @ theta.T
        else:
            logits = space.point_logits.copy_(torch.matmul(self.fast, theta.to(self.fast.dtype).T, out=space.fast))
        loss, probabilities = self.data_terms(logits, space.reference_residual if space else None)
        squares = torch.mul(probabilities, probabilities, out=space.trial_logits) if space else probabilities.square()
        curvature = (probabilities.sum(dim=0) - squares.sum(dim=0)) / len(self.labels)
        value = loss + self.rho * dot(self.offset(theta), self.offset(theta)) / 2
        residual = self.residual(probabilities)
        if exact:
            data_gradient = (residual.T @ self.features).div_(len(self.labels))
        else:
            data_gradient = (space.fast.copy_(residual).T @ self.fast).double().div_(len(self.labels))
        return _Point(theta, logits, value, data_gradient + self.penalty_gradient(theta), curvature, residual,
                      data_gradient, exact)

    def change(self, direction: torch.Tensor) -> torch.Tensor:
        """The logits' change along `direction`, features · directionᵀ, its product in `product_dtype()`."""
        space = self.workspace
        return space.change.copy_(torch.matmul(self.fast, direction.to(self.fast.dtype).T, out=space.fast))

    def step(self, point: _Point, direction: torch.Tensor, change: torch.Tensor, alpha: float) -> tuple[float, float]:
        """φ(α) = objective(θ + α·direction) and φ′(α) from the logits' change (`change`) without a matrix
        product; the logits and the softmax there are left in the workspace's trial arrays."""
        space = self.workspace
        logits = torch.add(point.logits, change, alpha=alpha, out=space.trial_logits)
        loss, probabilities = self.data_terms(logits, space.probabilities)
        rows = torch.arange(len(self.labels), device=logits.device)
        slope = (dot(probabilities, change) - float(change[rows, self.labels].sum())) / len(self.labels)
        offset, weights = self.offset(point.theta), direction[:, :-1]
        along, squared = dot(offset, weights), dot(weights, weights)
        value = loss + self.rho * (dot(offset, offset) + 2 * alpha * along + alpha ** 2 * squared) / 2
        return value, slope + self.rho * (along + alpha * squared)

    def accept(self, reference: _Point, theta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The trial's logits made the point's, and the gradient at θ from the trial's softmax: the exact
        `reference`'s plus the change since, its product in `product_dtype()`."""
        space = self.workspace
        change = space.fast.copy_(self.residual(space.probabilities).sub_(reference.residual))
        gradient = (change.T @ self.fast).double().div_(len(self.labels)).add_(reference.data_gradient) \
            .add_(self.penalty_gradient(theta))
        return space.swap(), gradient


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
