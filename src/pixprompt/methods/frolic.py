"""Frolic (Zhu et al., "Enhancing Zero-Shot Vision Models by Label-Free Prompt Distribution Learning and Bias
Correcting", NeurIPS 2024, the authors' `main_zeroshot.py`), transductive:

1. Prompt distribution: each class is a Gaussian around its mean prompt embedding with a shared covariance — the
   diagonal of the covariance of the test features and every prompt embedding, shrunk as 0.1 Σ + 0.9 I — whose
   discriminant gives logits (LDA).
2. Two classifiers adapted to the unlabeled images (InMaP's `image_opt`, Qian et al., NeurIPS 2023), started
   from the class embeddings and fitted to Sinkhorn-balanced pseudo-labels: those of the mean-prompt classifier and
   those of the LDA logits; their logits, × 100, are summed.
3. Bias correction, 11 rounds: the label distribution is estimated label-free — the power iteration's fixed point
   of the confusion matrix of the confident images' (top-2 margin > 1/C) softmax by their own predictions — and
   its log is subtracted from the logits.

The authors pair a template classifier (step 2's start) with LLM descriptions (steps 1 and 2's pseudo-labels);
pixprompt takes both from the one prompt set it is given."""
from __future__ import annotations

import torch

#: The authors' constants: shrinkage of the covariance, InMaP's step size, iterations, temperature and confidence
#: threshold, Sinkhorn's temperature and iterations, the logit scale and the bias-correction rounds.
SHRINKAGE = 0.9
INMAP_RATE, INMAP_ITERATIONS, INMAP_TEMPERATURE, INMAP_CONFIDENT = 10.0, 2000, 0.04, 0.6
SINKHORN_TEMPERATURE, SINKHORN_ITERATIONS = 0.01, 20
LOGIT_SCALE, CORRECTION_ROUNDS = 100.0, 11


def lda_logits(features: torch.Tensor, prompt_embeddings: torch.Tensor, class_means: torch.Tensor) -> torch.Tensor:
    """(N, C) the Gaussian discriminant of step 1 (features, prompts and class means L2-normalised)."""
    samples = torch.cat([features, prompt_embeddings])
    variance = samples.T.cov().diagonal()
    precision = 1 / ((1 - SHRINKAGE) * variance + SHRINKAGE)
    cross = (features * precision) @ class_means.T
    return cross - (class_means ** 2 * precision).sum(1)[None, :] / 2 - (features ** 2 * precision).sum(1)[:, None] / 2


def sinkhorn(scores: torch.Tensor) -> torch.Tensor:
    """(N, C) pseudo-labels: softmax(scores / τ) balanced by Sinkhorn towards the column marginal the softmax
    itself gives (InMaP's `sinkhorn` with γ = 1), each row summing to 1."""
    rows = scores.shape[0]
    plan = torch.softmax(scores / SINKHORN_TEMPERATURE, dim=1) / rows
    marginal = plan.sum(dim=0, keepdim=True)
    marginal = marginal / marginal.sum()
    for _ in range(SINKHORN_ITERATIONS):
        plan = plan / plan.sum(dim=0, keepdim=True) * marginal
        plan = plan / plan.sum(dim=1, keepdim=True) / rows
    return plan * rows


def inmap_classifier(features: torch.Tensor, start: torch.Tensor, pseudo_labels: torch.Tensor) -> torch.Tensor:
    """(D, C) InMaP's classifier: from `start` (D, C), gradient steps on the cross-entropy of softmax(f W / τ)
    against the pseudo-labels (made one-hot where their top value exceeds 0.6), each column renormalised, the step
    halved whenever the gradient's norm grew."""
    count = features.shape[0]
    top, label = pseudo_labels.max(dim=1)
    targets = pseudo_labels.clone()
    confident = top > INMAP_CONFIDENT
    targets[confident] = 0
    targets[confident, label[confident]] = 1
    base = features.T @ targets
    classifier, rate, previous = start.clone(), INMAP_RATE, float("inf")
    for _ in range(INMAP_ITERATIONS):
        gradient = features.T @ torch.softmax(features @ classifier / INMAP_TEMPERATURE, dim=1) - base
        norm = float(gradient.norm())
        if norm > previous:
            rate /= 2
        previous = norm
        classifier = torch.nn.functional.normalize(classifier - rate / (count * INMAP_TEMPERATURE) * gradient, dim=0)
    return classifier


def label_distribution(logits: torch.Tensor, tolerance: float = 1e-3, max_iterations: int = 100) -> torch.Tensor:
    """(C,) the label distribution estimated from unlabeled logits: the power iteration (from uniform, L1-normalised,
    stopping when a step moves less than `tolerance`) on the transposed matrix whose row k is the mean softmax of
    the images predicted k."""
    probabilities = logits.softmax(dim=1)
    classes = logits.shape[1]
    predicted = logits.argmax(dim=1)
    sums = torch.zeros(classes, classes, dtype=probabilities.dtype).index_add_(0, predicted, probabilities)
    counts = torch.bincount(predicted, minlength=classes).to(probabilities.dtype)
    confusion = (sums / counts.clamp_min(1)[:, None]).T
    estimate = torch.full((classes,), 1 / classes, dtype=probabilities.dtype)
    for _ in range(max_iterations):
        following = confusion @ estimate
        following = (following / following.abs().sum()).clamp_min(0)
        if float((following - estimate).abs().sum()) < tolerance:
            break  # the authors keep the iterate before the step that met the tolerance
        estimate = following
    return estimate


def debiased(logits: torch.Tensor) -> torch.Tensor:
    """Step 3: the logits less the log of the label distribution, re-estimated each round on the images whose
    top-2 margin exceeds 1/C."""
    margin = 1 / logits.shape[1]
    for _ in range(CORRECTION_ROUNDS):
        top = logits.topk(2, dim=1).values
        confident = logits[(top[:, 0] - top[:, 1]).abs() > margin]
        if not len(confident):  # nothing to estimate the distribution from (the authors' code would give NaN)
            break
        logits = logits - torch.log(label_distribution(confident) + 1e-12)
    return logits


def frolic_logits(features: torch.Tensor, class_weights: torch.Tensor, prompt_embeddings: torch.Tensor,
                  prompt_class: torch.Tensor) -> torch.Tensor:
    """(N, C) Frolic's logits from L2-normalised features, class embeddings (C, D; the classifier InMaP starts
    from) and every prompt's normalised embedding with its class."""
    # float64: in float32 the 2,000 InMaP steps drift by several logits from the answer
    features, class_weights, prompts = features.double(), class_weights.double(), prompt_embeddings.double()
    classes = len(class_weights)
    sums = torch.zeros(classes, prompts.shape[1], dtype=torch.float64).index_add_(0, prompt_class, prompts)
    means = torch.nn.functional.normalize(sums / torch.bincount(prompt_class, minlength=classes)[:, None], dim=1)
    discriminant = lda_logits(features, prompts, means)
    from_prompts = features @ inmap_classifier(features, class_weights.T, sinkhorn(features @ means.T))
    from_lda = features @ inmap_classifier(features, class_weights.T, sinkhorn(discriminant))
    return debiased(LOGIT_SCALE * from_lda + LOGIT_SCALE * from_prompts).float()
