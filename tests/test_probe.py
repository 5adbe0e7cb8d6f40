"""`pixprompt probe`: the linear probe against scikit-learn, Tip-Adapter against its formula, the draws, the CLI."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch

from cli_runner import model_args, run_cli
from pixprompt.evaluation.probing import summary, zero_shot_sentence
from pixprompt.methods import logistic, shots, tip_adapter


def clusters(seed: int, per_class: int, classes: int = 4, dim: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Overlapping Gaussian clusters: a probe gets some, not all, right."""
    rng = np.random.default_rng(seed)
    centres = np.random.default_rng(99).normal(size=(classes, dim))
    labels = np.repeat(np.arange(classes), per_class)
    points = centres[labels] + rng.normal(scale=1.6, size=(len(labels), dim))
    return torch.tensor(points), torch.tensor(labels)


@pytest.mark.parametrize("c", [0.05, 1.0, 30.0])
def test_linear_probe_equals_scikit_learn_at_the_same_c(c):
    from sklearn.linear_model import LogisticRegression

    train_x, train_y = clusters(0, 40)
    test_x, test_y = clusters(1, 200)
    x, tx = logistic.normalised(train_x), logistic.normalised(test_x)
    ours = logistic.fit_logistic(x, train_y, 4, c)
    theirs = LogisticRegression(C=c, max_iter=5000, tol=1e-10).fit(x.numpy(), train_y.numpy())
    ours_accuracy = logistic.accuracy(ours.logits(tx), test_y)
    theirs_accuracy = float((theirs.predict(tx.numpy()) == test_y.numpy()).mean())
    assert abs(ours_accuracy - theirs_accuracy) <= 0.005
    # the same optimum: sklearn's multinomial weights are ours up to a shift shared by every class
    centred = ours.weight.numpy() - ours.weight.numpy().mean(0)
    assert np.allclose(centred, theirs.coef_ - theirs.coef_.mean(0), atol=2e-3 * max(1, np.abs(centred).max()))


def sklearn_objective(model, x: torch.Tensor, y: torch.Tensor, c: float) -> float:
    probe = logistic.LinearProbe(torch.tensor(model.coef_), torch.tensor(model.intercept_))
    return float(logistic.probe_objective(probe, x, y, c))


def converged_sklearn(x: torch.Tensor, y: torch.Tensor, c: float):
    from sklearn.linear_model import LogisticRegression

    return LogisticRegression(C=c, max_iter=100_000, tol=1e-12).fit(x.numpy(), y.numpy())


@pytest.mark.parametrize("c", [1e-6, 1e-4, 1e4, 1e6])  # both ends of the grid, where a lax stop shows
def test_the_probe_reaches_scikit_learns_converged_objective_at_every_c(c):
    train_x, train_y = clusters(0, 40)
    x = logistic.normalised(train_x)
    ours = logistic.fit_logistic(x, train_y, 4, c)
    reference = sklearn_objective(converged_sklearn(x, train_y, c), x, train_y, c)
    assert ours.converged
    # never worse than the reference by more than 1e-6 (at C = 1e-6 scikit-learn's own stop is the laxer one)
    assert float(logistic.probe_objective(ours, x, train_y, c)) <= reference * (1 + 1e-6)


@pytest.mark.parametrize("c", [1e-2, 1.0, 30.0])
def test_a_small_gradient_alone_does_not_stop_a_fit_the_certificate_does(c, monkeypatch):
    """With a lax gradient bound (1e-3 of the objective) a fit would stop short of the optimum; the distance bound
    (strong convexity in W, the Hessian's diagonal for the bias) keeps it going until within CERTIFIED_GAP."""
    train_x, train_y = clusters(0, 40)
    x = logistic.normalised(train_x)
    reference = sklearn_objective(converged_sklearn(x, train_y, c), x, train_y, c)
    monkeypatch.setattr(logistic, "GRADIENT_TOLERANCE", 1e-3)
    ours = logistic.fit_logistic(x, train_y, 4, c)
    assert ours.converged and ours.objective == pytest.approx(float(logistic.probe_objective(ours, x, train_y, c)))
    assert ours.objective - reference <= logistic.CERTIFIED_GAP * reference
    monkeypatch.setattr(logistic, "CERTIFIED_GAP", 1e30)  # the certificate off: the lax bound stops it short
    far = logistic.LinearProbe(torch.randn(4, x.shape[1], generator=torch.Generator().manual_seed(0)).double() * 3,
                              torch.zeros(4, dtype=torch.float64))
    assert logistic.fit_logistic(x, train_y, 4, c, far).objective - reference > 1e-6 * reference


@pytest.fixture
def matmul_precision():
    """Sets `torch.set_float32_matmul_precision` for one test and puts the default back."""
    before = torch.get_float32_matmul_precision()
    yield torch.set_float32_matmul_precision
    torch.set_float32_matmul_precision(before)


@pytest.mark.parametrize("c", [1e-4, 1.0, 1e4])
def test_float32_products_leave_the_certified_optimum_where_float64_puts_it(c, matmul_precision):
    """Between certificates the fit's products run in float32; where float32 matmuls may round coarser (TF32,
    bfloat16) they stay in float64. Either way the certified objective is scikit-learn's converged one."""
    train_x, train_y = clusters(0, 40)
    x = logistic.normalised(train_x)
    reference = sklearn_objective(converged_sklearn(x, train_y, c), x, train_y, c)
    assert logistic.product_dtype() == torch.float32
    fast = logistic.fit_logistic(x, train_y, 4, c)
    matmul_precision("high")
    assert logistic.product_dtype() == torch.float64
    exact = logistic.fit_logistic(x, train_y, 4, c)
    for fit in (fast, exact):
        assert fit.converged
        assert fit.objective == float(logistic.probe_objective(fit, x, train_y, c))  # re-evaluated in float64
        assert fit.objective <= reference * (1 + 1e-6)
    assert fast.objective == pytest.approx(exact.objective, rel=1e-6)


def test_only_a_float64_evaluation_certifies_a_fit():
    """A point whose products ran in float32 (the fit's start) is never taken as converged, however small its
    gradient; the same point evaluated in float64 is."""
    train_x, train_y = clusters(0, 40)
    x = logistic.normalised(train_x)
    optimum = logistic.fit_logistic(x, train_y, 4, 1.0)
    problem = logistic._Objective.of(x, train_y, 1.0, 1.0, None, workspace_classes=4)
    theta = torch.cat([optimum.weight, optimum.bias[:, None]], dim=1)
    assert logistic.certified(problem.evaluate(theta), problem.rho, logistic.GRADIENT_TOLERANCE)
    assert not logistic.certified(problem.evaluate(theta, exact=False), problem.rho, 1.0)


def test_the_sweep_is_the_clip_papers_search_and_chooses_the_references_c():
    """The seven starting values, then halved intervals down to 1/8 decade; the chosen C equals the one a sweep of
    converged scikit-learn fits chooses by the same protocol."""
    train_x, train_y = clusters(0, 20)
    held_x, held_y = clusters(2, 20)
    x, hx = logistic.normalised(train_x), logistic.normalised(held_x)
    sweep = logistic.sweep_c((x, train_y), (hx, held_y), 4)
    assert set(logistic.C_START) <= set(sweep.scores) and not sweep.unconverged
    assert len(sweep.scores) <= 7 + 2 * 4
    reference: dict[float, float] = {}

    def score(c: float) -> None:
        model = converged_sklearn(x, train_y, c)
        reference.setdefault(c, float((model.predict(hx.numpy()) == held_y.numpy()).mean()))

    def best() -> float:
        return max(reference, key=lambda c: (reference[c], -c))

    for c in logistic.C_START:
        score(c)
    for decades in (1, 0.5, 0.25, 0.125):
        peak = best()
        for c in (peak / 10 ** decades, peak * 10 ** decades):
            if 1e-6 <= c <= 1e6:
                score(c)
    assert sweep.c == pytest.approx(best(), rel=1e-12)
    # at C = 1e-6 the weights are ~1e-7 and scikit-learn stops after two iterations whatever its tol: only our
    # converged fit is compared there through the objective (the test above)
    assert {c: sweep.scores[c] for c in reference if c > 1e-6} == {c: v for c, v in reference.items() if c > 1e-6}


def test_the_fit_score_objects_run_the_sweep_then_refit_on_the_whole_draw():
    """LinearProbeClassifier: C from the sweep on (fit, held), then a converged fit on both, on the device asked;
    TipAdapter: the paper's defaults without a held-out image, every drawn image a key."""
    x, y = clusters(0, 20)
    fit, held = shots.carve_validation(np.arange(len(y)), y.numpy(), seed=0)
    probe = logistic.LinearProbeClassifier(4, device="cpu").fit(x, y, fit, held)
    xn = logistic.normalised(x)
    sweep = logistic.sweep_c((xn[fit], y[fit]), (xn[held], y[held]), 4)
    assert probe.chosen["C"] == sweep.c and probe.chosen["converged"]
    test_x, _ = clusters(1, 50)
    reference = converged_sklearn(xn, y, sweep.c)
    expected = torch.tensor(reference.decision_function(logistic.normalised(test_x).numpy()))
    assert torch.allclose(probe.logits(test_x), expected, atol=1e-4)
    zero_shot = torch.randn(len(y), 4, generator=torch.Generator().manual_seed(1))
    adapter = tip_adapter.TipAdapter(4).fit(x, y, np.arange(len(y)), np.array([], dtype=int), zero_shot)
    assert (adapter.chosen["alpha"], adapter.chosen["beta"]) == tip_adapter.TIP_DEFAULTS
    assert torch.equal(adapter.logits(test_x[:3], zero_shot[:3]), tip_adapter.tip_adapter_logits(
        zero_shot[:3], test_x[:3], x, tip_adapter.one_hot(y, 4), *tip_adapter.TIP_DEFAULTS))


def loaded_scale(model_dir) -> float:
    from pixprompt import load_model

    return load_model(str(model_dir), device="cpu").logit_scale


def test_tip_adapter_is_its_formula():
    generator = torch.Generator().manual_seed(0)
    zero_shot = torch.randn(5, 3, generator=generator)
    features, keys = torch.randn(5, 8, generator=generator), torch.randn(6, 8, generator=generator)
    values = tip_adapter.one_hot(torch.tensor([0, 1, 2, 0, 1, 2]), 3)
    got = tip_adapter.tip_adapter_logits(zero_shot, features, keys, values, alpha=2.0, beta=5.5)
    f = features / features.norm(dim=1, keepdim=True)
    k = keys / keys.norm(dim=1, keepdim=True)
    expected = zero_shot.double() + 2.0 * torch.exp(-5.5 * (1 - f.double() @ k.double().T)) @ values
    assert torch.allclose(got, expected)


def test_draws_are_per_class_seeded_and_validation_is_carved_from_them():
    labels = np.repeat(np.arange(3), 10)
    drawn = shots.draw_shots(labels, 4, seed=7)
    assert np.bincount(labels[drawn]).tolist() == [4, 4, 4]
    assert np.array_equal(drawn, shots.draw_shots(labels, 4, seed=7))
    assert not np.array_equal(drawn, shots.draw_shots(labels, 4, seed=8))
    fit, held = shots.carve_validation(drawn, labels, seed=7)
    assert np.bincount(labels[held]).tolist() == [2, 2, 2] and set(fit) | set(held) == set(drawn)
    one = shots.draw_shots(labels, 1, seed=0)
    assert len(shots.carve_validation(one, labels, 0)[1]) == 0
    assert len(shots.draw_shots(labels, None, 0)) == 30
    assert shots.shots_list("1, 2,all") == [1, 2, None]
    with pytest.raises(ValueError):
        shots.shots_list("0")


def test_zs_init_probe_stays_near_zero_shot_with_strong_regularisation():
    train_x, train_y = clusters(0, 2)
    text = torch.randn(4, 16, dtype=torch.float64)
    probe = logistic.fit_logistic(logistic.normalised(train_x), train_y, 4, 1e-6, centre=text,
                                 start=logistic.LinearProbe(text, torch.zeros(4, dtype=torch.float64)))
    assert torch.allclose(probe.weight, text, atol=1e-3)


def test_sentence_says_where_zero_shot_is_matched():
    rows = [{"method": "zero-shot", "shots": 0, "score %": 50.0}, {"method": "linear", "shots": 1, "score %": 30.0},
            {"method": "linear", "shots": 4, "score %": 52.0}, {"method": "linear", "shots": 2, "score %": 45.0}]
    assert zero_shot_sentence(rows) == "Zero-shot (50.0%) matches a 4-shot linear probe (52.0%) here."
    assert "beats the linear probe at every shot count" in zero_shot_sentence(rows[:2])


def test_probe_cli_records_every_method_shot_and_draw(tiny_model_dirs, colours, colours_train, tmp_path, capsys,
                                                      monkeypatch):
    import torchvision

    original = torchvision.models.resnet50
    monkeypatch.setattr(torchvision.models, "resnet50", lambda weights=None: original(weights=None))  # offline
    output = tmp_path / "probe.json"
    code, out, err = run_cli(capsys, "probe", *model_args(tiny_model_dirs["open_clip_clip"]),
                             "--dataset", f"folder:{colours}", "--train-dataset", f"folder:{colours_train}",
                             "--shots", "1,2", "--seeds", "2", "--templates", "standard", "--resnet50",
                             "IMAGENET1K_V1", "--output", output, "--report", tmp_path / "probe.html")
    assert code == 0, err
    records = json.loads(output.read_text())
    methods = ["linear", "linear-zs-init", "tip-adapter", "resnet50-linear"]
    assert [(r["method"], r["shots"], r["seed"]) for r in records[1:]] == [
        (m, shots, seed) for shots in (1, 2) for seed in (0, 1) for m in methods]
    assert records[0]["method"] == "zero-shot"
    one_shot = [r for r in records if r["shots"] == 1]
    assert all(r["train_images"] == 3 for r in one_shot)
    assert {r.get("C_chosen_by") for r in one_shot if r["method"] == "linear"} == {
        "default (no image to spare for validation)"}
    two_shot = [r for r in records if r["shots"] == 2 and r["method"] == "tip-adapter"]
    assert all(r["chosen_by"] == "validation search" and r["alpha"] > 0 for r in two_shot)
    scale = loaded_scale(tiny_model_dirs["open_clip_clip"])
    assert [r["logit_scale"] for r in two_shot] == [pytest.approx(scale)] * len(two_shot)  # the model's own
    rows = {(r["method"], r["shots"]): r for r in summary(records)}
    linear = [r["score"] for r in records if r["method"] == "linear" and r["shots"] == 2]
    assert rows[("linear", 2)]["score %"] == round(100 * float(np.mean(linear)), 2)
    assert "mean over draws" in out
    assert (tmp_path / "probe_figures" / "few-shot.png").stat().st_size > 1000
    html = (tmp_path / "probe.html").read_text()
    assert "Few-shot learners (mean over draws" in html and "linear-zs-init" in html and "resnet50-linear" in html
    assert "<h2>Results</h2>" not in html  # probe records are never shown as zero-shot rows
    from pixprompt.reports import figures

    assert figures.zero_shot(records) == [records[0]]  # nor plotted as zero-shot accuracies


def test_probe_refuses_training_sets_with_other_classes(tiny_model_dirs, colours, tmp_path, capsys):
    other = tmp_path / "other"
    for name in ("cat", "dog"):
        (other / name).mkdir(parents=True)
        (other / name / "a.png").write_bytes((colours / "red" / "photo-000.png").read_bytes())
    code, _, err = run_cli(capsys, "probe", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset",
                           f"folder:{colours}", "--train-dataset", f"folder:{other}", "--no-cache")
    assert code != 0 and "same classes" in err


def test_probe_on_real_cifar_images(shared_data, tiny_model_dirs, capsys):
    """The README's few-shot run on real images: CIFAR-10's first 200 training images, 300 test images."""
    code, out, err = run_cli(capsys, "probe", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset", "cifar10",
                             "--data-dir", shared_data / "cifar10-test", "--max-images", "300",
                             "--train-dataset", "cifar10", "--train-data-dir", shared_data / "cifar10-train-200",
                             "--shots", "1,4", "--seeds", "2", "--methods", "linear,tip-adapter", "--json")
    assert code == 0, err
    records = json.loads(out)
    assert {r["images"] for r in records} == {300}
    assert {r["train_images"] for r in records if r["shots"] == 4} == {40}
    assert all(0 <= r["top1"] <= 1 for r in records)


def test_shots_beyond_the_training_set_are_recorded_as_drawn(tiny_model_dirs, colours, tmp_path, capsys):
    train = tmp_path / "one-each"
    for folder in colours.iterdir():
        (train / folder.name).mkdir(parents=True)
        shutil.copy(next(folder.iterdir()), train / folder.name / "only.png")  # the same pixels, another file
    code, out, err = run_cli(capsys, "probe", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset",
                             f"folder:{colours}", "--train-dataset", f"folder:{train}", "--shots", "4,16",
                             "--methods", "linear", "--json")
    assert code == 0, err
    probes = [r for r in json.loads(out) if r["method"] == "linear"]
    assert [(r["shots"], r["shots_requested"], r["train_images"]) for r in probes] == [(1, 4, 3)] * 3  # 3 seeds
    assert "--shots 4: the training set has at most 1 image(s) per class" in err
    assert "--shots 16 draws the same images as a smaller count: left out" in err
    assert "probe 3/3: linear, 1 shot(s), draw 2 done in" in err and "s left" in err  # one line per fit
    assert "4-shot" not in out and "16-shot" not in out


def test_an_absurd_shot_count_is_a_usage_error(colours, capsys):
    code, _, err = run_cli(capsys, "probe", "--model", "x", "--dataset", f"folder:{colours}", "--train-dataset",
                           f"folder:{colours}", "--shots", "99999999999999999999")
    assert code == 2 and "shots must be whole numbers from 1 to 100,000" in err
