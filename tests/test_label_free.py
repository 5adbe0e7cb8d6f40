"""The label-free methods equal their authors' algorithms on the same features.

Each reference below is written from the authors' released code (named in each test), in its own structure — per
image loops, dictionaries of cached items, SciPy's solvers — so that a changed sign, temperature, normalisation or
update rule in pixprompt's vectorised version makes the comparison fail. None of the authors' code is needed here.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.optimize import bisect
from scipy.sparse import csr_matrix, diags, identity
from scipy.sparse.linalg import cg

from pixprompt.methods import autoclip, chils, frolic, tda, zlap, zpe


def unit(rows: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(rows, dim=-1)


@pytest.fixture()
def scene():
    """Images near noisy class centres, and class × template text embeddings around the same centres."""
    generator = torch.Generator().manual_seed(0)
    classes, templates, dim, count = 5, 4, 16, 60
    centres = torch.randn(classes, dim, generator=generator)
    labels = torch.arange(count) % classes
    images = unit(centres[labels] + 1.2 * torch.randn(count, dim, generator=generator))
    by_template = unit(centres[:, None] + 0.8 * torch.randn(classes, templates, dim, generator=generator))
    return images, by_template, labels


# -- ZPE --------------------------------------------------------------------------------------------------------
def zpe_reference(logits_per_template: np.ndarray) -> np.ndarray:
    """Allingham et al. 2023, Algorithm 2 (no public code): score_t = mean over images of max over classes of the
    logit less that class's mean logit over the images; weights = softmax(scores)."""
    scores = []
    for logits in logits_per_template:
        bias = logits.mean(axis=0)
        scores.append(np.mean([np.max(row - bias) for row in logits]))
    scores = np.array(scores)
    return np.exp(scores - scores.max()) / np.exp(scores - scores.max()).sum()


def test_zpe_weights_and_logits_equal_the_papers_algorithm(scene):
    images, by_template, _ = scene
    logits = [100 * images @ by_template[:, t].T for t in range(by_template.shape[1])]
    weights = zpe.zpe_weights(logits)
    expected = zpe_reference(np.stack([lg.numpy().astype(np.float64) for lg in logits]))
    np.testing.assert_allclose(weights.numpy(), expected, rtol=1e-9)
    combined = 100 * images @ zpe.weighted_class_embeddings(by_template, weights).T
    np.testing.assert_allclose(combined.numpy(), np.tensordot(expected, np.stack([lg.numpy() for lg in logits]), 1),
                               rtol=1e-4, atol=1e-4)
    assert not np.allclose(expected, 1 / len(expected), atol=1e-3)  # the weights are not the plain mean


# -- AutoCLIP ---------------------------------------------------------------------------------------------------
def autoclip_reference(similarities: np.ndarray, beta: float = 0.85) -> np.ndarray:
    """Metzen et al.'s `autoclip_aggregation` (boschresearch/autoclip), image by image: autograd of the
    log-sum-exp of the uniformly weighted class scores with respect to the weights' logits, the step that gives
    the target entropy by SciPy's bisection, one ascent step. (Their simulation code broadcasts the weights over
    the class axis when taking the gradient, `weights[:, None]`; this is the per-image reading of their Section 3.)"""
    out = []
    for image in similarities:  # (C, T)
        logits_of_weights = torch.zeros(image.shape[1], dtype=torch.float64, requires_grad=True)
        scores = (torch.softmax(logits_of_weights, 0) * torch.from_numpy(image)).sum(-1)
        gradient = torch.autograd.grad(torch.logsumexp(scores, 0), logits_of_weights)[0].numpy()
        target = beta * math.log2(image.shape[1])

        def excess(step, gradient=gradient, target=target):
            weights = np.exp(step * gradient - np.max(step * gradient))
            weights /= weights.sum()
            return -(weights * np.log2(weights + 1e-10)).sum() - target

        step = bisect(excess, 0.0, 1e7, xtol=1e-12, rtol=1e-14, maxiter=500)
        weights = np.exp(step * gradient - np.max(step * gradient))
        out.append(image @ (weights / weights.sum()))
    return np.array(out)


def test_autoclip_equals_the_authors_per_image_ascent(scene):
    images, by_template, _ = scene
    similarities = torch.einsum("nd,ctd->nct", images, by_template).double()
    expected = autoclip_reference(similarities.numpy())
    np.testing.assert_allclose(autoclip.autoclip_similarities(similarities).numpy(), expected, atol=2e-6)
    weights = autoclip.autoclip_weights(similarities)
    entropy = -(weights * torch.log2(weights + 1e-10)).sum(1)
    np.testing.assert_allclose(entropy.numpy(), 0.85 * math.log2(by_template.shape[1]), atol=1e-6)


# -- TDA --------------------------------------------------------------------------------------------------------
def tda_reference(features: torch.Tensor, logits: torch.Tensor, order: list[int], settings: tda.TdaSettings):
    """Karmanov et al.'s `run_test_tda` (kdiAAA/TDA, tda_runner.py) on single views: dictionaries of sorted
    [feature, entropy(, probabilities)] lists per predicted class, updated before the image is scored."""
    positive, negative, out = {}, {}, {}
    classes = logits.shape[1]

    def update(cache, label, item, capacity):
        if label in cache:
            if len(cache[label]) < capacity:
                cache[label].append(item)
            elif item[1] < cache[label][-1][1]:
                cache[label][-1] = item
            cache[label] = sorted(cache[label], key=lambda entry: entry[1])
        else:
            cache[label] = [item]

    def cache_logits(feature, cache, alpha, beta, masks=None):
        keys, values = [], []
        for label in sorted(cache):
            for item in cache[label]:
                keys.append(item[0])
                values.append(((item[2] > masks[0]) & (item[2] < masks[1])).float() if masks
                              else torch.nn.functional.one_hot(torch.tensor(label), classes).float())
        affinity = feature @ torch.stack(keys).T
        return alpha * (-1 * (beta - beta * affinity)).exp() @ torch.stack(values)

    for index in order:
        feature, image_logits = features[index], logits[index]
        loss = float(-(image_logits.softmax(0) * image_logits.log_softmax(0)).sum())
        label = int(image_logits.argmax())
        update(positive, label, [feature, loss], settings.positive_capacity)
        if settings.entropy_low < loss / math.log2(classes) < settings.entropy_high:
            update(negative, label, [feature, loss, image_logits.softmax(0)], settings.negative_capacity)
        final = image_logits + cache_logits(feature, positive, settings.positive_alpha, settings.positive_beta)
        if negative:
            final = final - cache_logits(feature, negative, settings.negative_alpha, settings.negative_beta,
                                         (settings.mask_low, settings.mask_high))
        out[index] = final
    return torch.stack([out[i] for i in range(len(order))])


def test_tda_equals_the_authors_cache_updates_in_the_stream_order(scene):
    images, by_template, _ = scene
    weights = unit(by_template.mean(1))
    logits = 30 * images @ weights.T  # entropies across the negative cache's window
    settings = tda.TdaSettings()
    order = tda.stream_order(len(images), seed=1)
    result = tda.tda_logits(images, logits, order, settings)
    expected = tda_reference(images, logits, order.tolist(), settings)
    np.testing.assert_allclose(result.numpy(), expected.numpy(), rtol=1e-5, atol=1e-5)
    proportion = -(logits.softmax(1) * logits.log_softmax(1)).sum(1) / math.log2(5)
    assert ((proportion > 0.2) & (proportion < 0.5)).any()  # the negative cache took part
    other = tda.tda_logits(images, logits, tda.stream_order(len(images), seed=2), settings)
    assert not torch.allclose(other, result)  # the order matters: it is recorded


def test_tda_takes_the_authors_settings_for_the_datasets_they_configured():
    assert (tda.for_dataset("dtd").positive_alpha, tda.for_dataset("dtd").positive_beta) == (2.0, 3.0)
    assert tda.for_dataset("imagenet-r").positive_beta == 8.0
    assert tda.for_dataset("my-photos") == tda.TdaSettings()


# -- ZLaP -------------------------------------------------------------------------------------------------------
def zlap_reference(features: np.ndarray, classifier: np.ndarray, k=5, gamma=5.0, alpha=0.3) -> np.ndarray:
    """Stojnić et al.'s `do_transductive_lp` (vladan-stojnic/ZLaP): k-NN lists (an image's own index first),
    text rows with no neighbours (-1), W from the lists, W + Wᵀ, diagonal removed, D^-½ W D^-½, and conjugate
    gradients on (I − αW) z = e_c for each class, with SciPy in place of CuPy and exact search in place of FAISS."""
    classes, count = len(classifier), len(features)
    image_sim = features @ features.T
    image_knn = np.argsort(-image_sim, axis=1, kind="stable")[:, :k]
    text_sim = features @ classifier.T
    text_knn = np.argsort(-text_sim, axis=1, kind="stable")[:, :min(k, classes)]
    knn = np.concatenate([image_knn + classes, text_knn], axis=1)
    sim = np.concatenate([np.take_along_axis(image_sim, image_knn, 1), np.take_along_axis(text_sim, text_knn, 1)], 1)
    knn = np.concatenate([-np.ones((classes, knn.shape[1]), dtype=knn.dtype), knn])
    sim = np.concatenate([np.zeros((classes, sim.shape[1])), sim])
    sim[sim < 0] = 0
    sim[knn < classes] = sim[knn < classes] ** gamma
    rows = np.repeat(np.arange(len(knn)), knn.shape[1])
    valid = knn.flatten() != -1
    weights = csr_matrix((sim.flatten()[valid], (rows[valid], knn.flatten()[valid])), shape=(len(knn),) * 2)
    weights = weights + weights.T
    weights = weights - diags(weights.diagonal())
    degree = np.asarray(weights.sum(axis=1)).flatten()
    degree[degree == 0] = 1
    scale = diags(1 / np.sqrt(degree))
    laplacian = identity(len(knn)) - alpha * (scale @ weights @ scale)
    scores = np.zeros((count, classes))
    for c in range(classes):
        seed = np.zeros(len(knn))
        seed[c] = 1
        solution, info = cg(laplacian, seed, rtol=1e-12, maxiter=1000)
        assert info == 0
        scores[:, c] = solution[classes:]
    return scores


def test_zlap_equals_the_authors_label_propagation(scene):
    images, by_template, _ = scene
    weights = unit(by_template.mean(1))
    expected = zlap_reference(images.double().numpy(), weights.double().numpy())
    np.testing.assert_allclose(zlap.zlap_scores(images, weights).numpy(), expected, rtol=1e-4, atol=1e-7)


# -- CHiLS ------------------------------------------------------------------------------------------------------
def chils_reference(super_logits: np.ndarray, sub_logits: np.ndarray, parent: list[int]) -> np.ndarray:
    """Novack et al.'s `conf_pred` (acmi-lab/CHILS): each superclass's subclasses' softmax probabilities times the
    superclass's, the prediction the superclass of the most probable subclass."""
    def softmax(x):
        e = np.exp(x - x.max(1, keepdims=True))
        return e / e.sum(1, keepdims=True)

    raw, top = softmax(sub_logits), softmax(super_logits)
    for superclass in set(parent):
        members = [i for i, p in enumerate(parent) if p == superclass]
        raw[:, members] = raw[:, members] * top[:, superclass].reshape(-1, 1)
    return np.array([parent[i] for i in raw.argmax(1)])


def test_chils_predicts_the_superclass_of_the_reweighted_best_subclass():
    generator = torch.Generator().manual_seed(3)
    super_logits, sub_logits = 5 * torch.randn(40, 3, generator=generator), 5 * torch.randn(40, 7, generator=generator)
    parent = [0, 0, 1, 1, 1, 2, 2]
    result = chils.chils_scores(super_logits, sub_logits, torch.tensor(parent))
    expected = chils_reference(super_logits.double().numpy(), sub_logits.double().numpy(), parent)
    assert result.argmax(1).tolist() == expected.tolist()
    assert result.argmax(1).tolist() != super_logits.argmax(1).tolist()  # the subclasses changed some answers


# -- Frolic -----------------------------------------------------------------------------------------------------
def frolic_reference(features: np.ndarray, weights: np.ndarray, prompts: np.ndarray, prompt_class: np.ndarray):
    """Zhu et al.'s `run` (zhuhsingyuu/Frolic, main_zeroshot.py) with InMaP's `image_opt` and `sinkhorn`
    (idstcv/InMaP), in NumPy: the diagonal shrunk-covariance LDA, two InMaP classifiers from Sinkhorn pseudo-labels
    (γ = 1), their summed logits × 100, and 11 rounds of label-distribution correction by power iteration."""
    def softmax(x, axis=1):
        e = np.exp(x - x.max(axis, keepdims=True))
        return e / e.sum(axis, keepdims=True)

    def sinkhorn(scores, temperature=0.01, rounds=20):
        rows = scores.shape[0]
        plan = softmax(scores / temperature) / rows
        target = plan.sum(0, keepdims=True)
        target = target / target.sum()
        for _ in range(rounds):
            plan = plan / plan.sum(0, keepdims=True) * target
            plan = plan / plan.sum(1, keepdims=True) / rows
        return plan * rows

    def image_opt(feat, classifier, plabel, lr=10.0, iterations=2000, tau=0.04, alpha=0.6):
        plabel = plabel.copy()
        top, index = plabel.max(1), plabel.argmax(1)
        mask = top > alpha
        plabel[mask] = 0
        plabel[mask, index[mask]] = 1
        base = feat.T @ plabel
        classifier, previous = classifier.copy(), np.inf
        for _ in range(iterations):
            gradient = feat.T @ softmax(feat @ classifier / tau) - base
            norm = np.linalg.norm(gradient)
            if norm > previous:
                lr /= 2
            previous = norm
            classifier = classifier - lr / (len(feat) * tau) * gradient
            classifier = classifier / np.linalg.norm(classifier, axis=0, keepdims=True)
        return classifier

    def power_iteration(matrix, tolerance=1e-3, iterations=100):
        x = np.full(len(matrix), 1 / len(matrix))
        for _ in range(iterations):
            following = matrix @ x
            following = np.clip(following / np.abs(following).sum(), 0, None)
            if np.abs(following - x).sum() < tolerance:
                break
            x = following
        return x

    def label_distribution(logits):
        probabilities, predicted = softmax(logits), logits.argmax(1)
        matrix = np.zeros((logits.shape[1],) * 2)
        for k in range(logits.shape[1]):
            if (predicted == k).any():
                matrix[k] = probabilities[predicted == k].mean(0)
        return power_iteration(matrix.T)

    classes = weights.shape[0]
    means = np.stack([prompts[prompt_class == c].mean(0) for c in range(classes)])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    samples = np.concatenate([features, prompts])
    precision = np.diag(1 / (0.1 * np.cov(samples.T).diagonal() + 0.9))
    lda = (means @ precision @ features.T - np.diag(means @ precision @ means.T)[:, None] / 2
           - np.diag(features @ precision @ features.T)[None, :] / 2).T
    from_prompts = features @ image_opt(features, weights.T, sinkhorn(features @ means.T))
    from_lda = features @ image_opt(features, weights.T, sinkhorn(lda))
    logits = 100 * from_lda + 100 * from_prompts
    for _ in range(11):
        top = np.sort(logits, axis=1)[:, ::-1]
        confident = logits[np.abs(top[:, 0] - top[:, 1]) > 1 / classes]
        logits = logits - np.log(label_distribution(confident) + 1e-12)
    return logits


def test_frolic_equals_the_authors_pipeline(scene):
    images, by_template, _ = scene
    prompts = by_template.reshape(-1, by_template.shape[-1])
    prompt_class = torch.arange(by_template.shape[0]).repeat_interleave(by_template.shape[1])
    weights = unit(by_template.mean(1))
    result = frolic.frolic_logits(images, weights, prompts, prompt_class)
    expected = frolic_reference(images.double().numpy(), weights.double().numpy(), prompts.double().numpy(),
                                prompt_class.numpy())
    np.testing.assert_allclose(result.numpy(), expected, rtol=1e-5, atol=1e-4)
    assert result.argmax(1).tolist() == expected.argmax(1).tolist()
