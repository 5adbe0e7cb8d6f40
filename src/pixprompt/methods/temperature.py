"""Temperature scaling (Guo et al., On Calibration of Modern Neural Networks, ICML 2017) on score arrays: one
scalar T > 0 dividing the scores before softmax (or sigmoid), fitted on a validation set by minimising the labels'
negative log-likelihood. It changes no prediction, only the probabilities shown."""
from __future__ import annotations

import dataclasses
import logging

import torch

from pixprompt.errors import UsageError
from pixprompt.prompts.classifier import ZeroShotClassifier

log = logging.getLogger(__name__)


#: Fewer readable validation images than this fit a temperature to noise: refused.
MIN_CALIBRATION_IMAGES = 10
#: A fitted temperature outside this range means the set cannot calibrate the model (see `fit_temperature`).
TEMPERATURE_RANGE = (1e-2, 1e2)
#: The fit stops when |dNLL/d log T| is below this (the mean NLL's gradient; converged, not merely slowed).
GRADIENT_TOLERANCE = 1e-9


def fit_temperature(classifier: ZeroShotClassifier, scores: torch.Tensor, labels: torch.Tensor,
                    ensemble: str = "embedding") -> float:
    """The T minimising the mean negative log-likelihood of `labels` under `classifier`'s probabilities of
    `scores` / T (L-BFGS on log T, so T stays positive), converged to |dNLL/d log T| < GRADIENT_TOLERANCE.

    Sets that cannot calibrate are refused with the reason rather than given a meaningless T: fewer than
    MIN_CALIBRATION_IMAGES images, images of one class only, a set whose every image the model already ranks
    right (the likelihood then rises without end as T → 0, and every probability would read 100 %), or a fit
    that runs below TEMPERATURE_RANGE (above it, the model ranks no better than chance: the top of the
    range is used, with a warning).
    """
    if ensemble == "vote":
        raise UsageError("vote ensembling gives vote shares, not probabilities: calibrate embedding or logits")
    if not len(labels):
        raise UsageError("the calibration set has no readable image")
    if len(labels) < MIN_CALIBRATION_IMAGES:
        raise UsageError(f"the calibration set has {len(labels)} readable image(s): a temperature fitted on fewer "
                         f"than {MIN_CALIBRATION_IMAGES} is noise; give a larger validation set")
    present = labels.unique()
    if len(present) < 2:
        only = classifier.classnames[int(present[0])]
        raise UsageError(f"the calibration set holds images of one class only ({only})"
                         ": a temperature fitted on it only learns to favour that class; give several classes")
    scores = scores.double()
    if bool((scores.argmax(dim=1) == labels).all()):
        raise UsageError(f"the model already ranks every one of the {len(labels)} calibration images right: the "
                         "likelihood grows without end as the temperature falls, so no temperature can be fitted "
                         "(every probability would read 100 %); give a harder or larger validation set")
    log_temperature = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    optimiser = torch.optim.LBFGS([log_temperature], lr=1, max_iter=100, tolerance_grad=GRADIENT_TOLERANCE,
                                  tolerance_change=0, line_search_fn="strong_wolfe")

    def loss() -> torch.Tensor:
        optimiser.zero_grad()
        scaled = dataclasses.replace(classifier, temperature=log_temperature.exp())
        value = scaled.negative_log_likelihood(scores, labels, ensemble).mean()
        value.backward()
        return value

    for _ in range(10):  # L-BFGS stops at max_iter; go on until the gradient is flat
        optimiser.step(loss)
        if abs(float(log_temperature.grad)) < GRADIENT_TOLERANCE:
            break
    temperature = float(log_temperature.detach().exp())
    low, high = TEMPERATURE_RANGE
    if temperature < low:
        raise UsageError(f"the temperature fit runs to T = {temperature:.3g}, below {low:g}: the calibration set "
                         f"({len(labels)} images) is nearly separated by the model and would make every "
                         "probability read 100 %; give a harder or larger validation set")
    if temperature > high:
        log.warning("the temperature fit runs to T = %.3g: on the calibration set the model ranks no better than "
                    "chance, so the likelihood is best with flat probabilities; T = %g is used (probabilities "
                    "near uniform)", temperature, high)
        return high
    return temperature
