"""Calibration of the model's own probabilities (ECE, NLL, Brier), temperature scaling and open-set predictions."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from cli_runner import model_args, run_cli
from pixprompt.data.datasets import load_dataset
from pixprompt.evaluation import evaluate
from pixprompt.evaluation.metrics import calibration_metrics, expected_calibration_error, selective_accuracy
from pixprompt.features.cache import extract_features
from pixprompt.methods.temperature import fit_temperature
from pixprompt.prompts import build_classifier, resolve_templates
from pixprompt.reports.tables import finite


def direct_ece(confidence: np.ndarray, correct: np.ndarray, bins: int = 15) -> float:
    """ECE written out: bins (b/15, (b+1)/15], the first one also holding 0."""
    total = 0.0
    for b in range(bins):
        low, high = b / bins, (b + 1) / bins
        members = [(c, k) for c, k in zip(confidence, correct) if (low < c <= high) or (b == 0 and c == 0)]
        if members:
            gap = abs(np.mean([k for _, k in members]) - np.mean([c for c, _ in members]))
            total += len(members) / len(confidence) * gap
    return total


def test_ece_equals_its_definition():
    rng = np.random.default_rng(0)
    confidence = rng.uniform(0.05, 1, 500)
    confidence[:5] = [1 / 15, 2 / 15, 1.0, 0.5, 14 / 15]  # on bin edges
    correct = rng.uniform(size=500) < confidence
    assert expected_calibration_error(confidence, correct) == pytest.approx(direct_ece(confidence, correct), abs=1e-12)
    assert expected_calibration_error(np.ones(4), np.ones(4, dtype=bool)) == 0


def test_nll_and_brier_equal_scikit_learn_on_softmax_probabilities(loaded_models, colours):
    from sklearn.metrics import log_loss

    from pixprompt.evaluation.runs import score_images

    model = loaded_models["open_clip_clip"]
    dataset = load_dataset(f"folder:{colours}")
    features = extract_features(model, dataset, None, workers=0)
    classifier = build_classifier(model, dataset.classnames, resolve_templates("standard")[0])
    scored = score_images(classifier, features.features, features.labels, "embedding")
    probabilities = classifier.probabilities(classifier.scores(features.features)).double().numpy()
    labels = features.labels.numpy()
    metrics = calibration_metrics(scored.confidence, scored.correct, scored.nll, scored.squared_error)
    assert metrics["nll"] == pytest.approx(log_loss(labels, probabilities, labels=[0, 1, 2]), abs=1e-6)
    one_hot = np.eye(3)[labels]
    assert metrics["brier"] == pytest.approx(((probabilities - one_hot) ** 2).sum(1).mean(), abs=1e-9)
    assert metrics["ece"] == pytest.approx(direct_ece(probabilities.max(1), probabilities.argmax(1) == labels))
    assert sum(b["count"] for b in metrics["reliability"]) == len(labels)


def test_temperature_recovers_a_known_sharpening_and_lowers_nll():
    """Labels drawn from softmax(z); the scores given are 4·z, so the NLL is lowest at T = 4."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4000, 5, generator=generator) * 1.5
    labels = torch.multinomial(logits.softmax(dim=1), 1, generator=generator)[:, 0]
    classifier = build_stub_classifier(5)
    temperature = fit_temperature(classifier, 4 * logits, labels)
    assert temperature == pytest.approx(4, rel=0.1)
    before = classifier.negative_log_likelihood(4 * logits.double(), labels).mean()
    after = replace(classifier, temperature=temperature).negative_log_likelihood(4 * logits.double(), labels).mean()
    assert after < before


def build_stub_classifier(classes: int):
    from pixprompt.prompts.classifier import ZeroShotClassifier
    from pixprompt.prompts.templates import PromptSet

    return ZeroShotClassifier([str(c) for c in range(classes)], PromptSet("standard", ("a photo of a {}.",)),
                              torch.eye(classes), torch.arange(classes), "stub", logit_scale=1.0)


def test_sigmoid_nll_is_the_one_hot_vectors(loaded_models):
    classifier = replace(build_stub_classifier(3), scoring="sigmoid")
    scores = torch.tensor([[2.0, -1.0, 0.5]], dtype=torch.float64)
    p = torch.sigmoid(scores[0])
    expected = -(torch.log(p[0]) + torch.log(1 - p[1]) + torch.log(1 - p[2]))
    assert classifier.negative_log_likelihood(scores, torch.tensor([0]))[0] == pytest.approx(float(expected))


def test_eval_records_calibration_temperature_and_open_set(tiny_model_dirs, loaded_models, colours, tmp_path,
                                                          capsys):
    output = tmp_path / "records.json"
    code, _, err = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset",
                           f"folder:{colours}", "--templates", "standard", "--calibrate", f"folder:{colours}",
                           "--min-probability", "0.34", "--output", output, "--no-cache")
    assert code == 0, err
    record = json.loads(output.read_text())[0]
    model = loaded_models["open_clip_clip"]
    dataset = load_dataset(f"folder:{colours}")
    features = extract_features(model, dataset, None, workers=0)
    classifier = build_classifier(model, dataset.classnames, resolve_templates("standard")[0])
    scores = classifier.scores(features.features)
    assert record["temperature"] == pytest.approx(fit_temperature(classifier, scores, features.labels), rel=1e-6)
    assert record["nll"] <= record["nll_uncalibrated"] + 1e-9  # fitted on these very images
    calibrated = replace(classifier, temperature=record["temperature"]).probabilities(scores).numpy()
    correct = calibrated.argmax(1) == features.labels.numpy()
    assert record["ece"] == pytest.approx(direct_ece(calibrated.max(1), correct), abs=1e-6)
    expected = finite(selective_accuracy(calibrated.max(1), correct, 0.34))  # strict JSON: NaN is written null
    assert record["open_set"] == {key: None if value is None else pytest.approx(value)
                                  for key, value in expected.items()}
    plain = evaluate(model, dataset, resolve_templates("standard"), cache_root=None, workers=0)[0]
    assert record["ece_uncalibrated"] == pytest.approx(plain["ece"]) and "temperature" not in plain
    assert record["top1"] == plain["top1"]  # temperature changes no prediction


def test_classify_min_probability_labels_the_unsure_unknown(tiny_model_dirs, colours, capsys):
    args = ["classify", colours, *model_args(tiny_model_dirs["open_clip_clip"]), "--labels", "red,green,blue",
            "--quiet", "--json"]
    _, out, _ = run_cli(capsys, *args)
    top = {row["image"]: row["top"][0] for row in json.loads(out)}
    threshold = float(np.median([t["probability"] for t in top.values()]))
    _, out, _ = run_cli(capsys, *args, "--min-probability", str(threshold))
    for row in json.loads(out):
        best = top[row["image"]]
        assert row["prediction"] == (best["label"] if best["probability"] >= threshold else "unknown")
    assert {row["prediction"] for row in json.loads(out)} >= {"unknown"}
    code, _, err = run_cli(capsys, *args, "--min-probability", "0.5", "--multi-label")
    assert code != 0 and "--min-probability" in err


def test_serve_shows_probabilities_at_the_fitted_temperature(loaded_models, colours):
    from fastapi.testclient import TestClient

    from pixprompt.web import create_app

    model = loaded_models["open_clip_clip"]
    image = colours / "red" / "photo-000.png"
    answers = {}
    for temperature in (1.0, 3.0):
        client = TestClient(create_app(model, temperature=temperature, allow_hosts=["testserver"]))
        response = client.post("/api/classify", data={"labels": "red,green,blue", "templates": "standard"},
                               files=[("files", (image.name, image.read_bytes(), "image/png"))])
        answers[temperature] = {r["label"]: r["probability"] for r in response.json()["results"][0]["ranked"]}
    classifier = build_classifier(model, ["red", "green", "blue"], resolve_templates("standard")[0])
    features = extract_features(model, load_dataset(f"folder:{colours}"), None, workers=0)
    row = [str(p) for p in load_dataset(f"folder:{colours}").images.paths].index(str(image))
    scores = classifier.scores(features.features[row:row + 1])
    expected = (scores / 3.0).softmax(dim=1)[0].tolist()  # the page shows 4 decimals
    assert [answers[3.0][name] for name in ("red", "green", "blue")] == pytest.approx(expected, abs=1e-4)
    assert answers[1.0] != answers[3.0]


def test_calibrating_vote_ensembles_is_refused_before_the_model_loads(colours, capsys):
    code, _, err = run_cli(capsys, "eval", "--model", "no-such-model-is-loaded", "--dataset", f"folder:{colours}",
                           "--ensemble", "embedding,vote", "--calibrate", f"folder:{colours}")
    assert code == 2 and "vote ensembling gives vote shares" in err
