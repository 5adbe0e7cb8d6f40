"""Is the difference real? (#37): intervals and paired tests equal to statsmodels' own functions, the bootstraps
equal to plain loops over the same resamples, and records of a run that carry them."""
from __future__ import annotations

import numpy as np
import pytest

from cli_runner import eval_args, model_args, run_cli, strict_json
from pixprompt.evaluation import intervals
from pixprompt.evaluation.intervals import BootstrapSettings
from pixprompt.evaluation.metrics import expected_calibration_error


@pytest.mark.parametrize(("successes", "total"), [(0, 10), (10, 10), (1, 2), (631, 1000), (37_500, 50_000), (3, 7)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_equals_statsmodels(successes, total, confidence):
    from statsmodels.stats.proportion import proportion_confint

    expected = proportion_confint(successes, total, alpha=1 - confidence, method="wilson")
    assert intervals.wilson_interval(successes, total, confidence) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize(("only_first", "only_second"), [(0, 0), (0, 5), (5, 0), (3, 9), (40, 61), (500, 560)])
def test_exact_mcnemar_equals_statsmodels(only_first, only_second):
    from statsmodels.stats.contingency_tables import mcnemar

    table = [[100, only_first], [only_second, 50]]
    assert intervals.mcnemar_exact(only_first, only_second) == pytest.approx(mcnemar(table, exact=True).pvalue,
                                                                              rel=1e-9, abs=1e-15)


def test_holm_equals_statsmodels():
    from statsmodels.stats.multitest import multipletests

    p_values = [0.01, 0.04, 0.03, 0.5, 0.0001, 0.2]
    assert intervals.holm(p_values) == pytest.approx(list(multipletests(p_values, method="holm")[1]), abs=1e-15)


def reference_resamples(count: int, settings: BootstrapSettings) -> list[np.ndarray]:
    """The same resamples as `intervals`, one at a time (its generator, its block size)."""
    generator = np.random.default_rng(settings.seed)
    block = max(1, intervals.BLOCK_VALUES // count)
    drawn = []
    for start in range(0, settings.resamples, block):
        drawn += list(generator.integers(0, count, size=(min(block, settings.resamples - start), count),
                                         dtype=np.int32))
    return drawn


def percentile_interval(values: list[float], confidence: float) -> tuple[float, float]:
    tail = (1 - confidence) / 2 * 100
    return tuple(np.percentile(values, [tail, 100 - tail]))


def test_the_vectorised_ece_bootstrap_equals_a_loop_over_the_same_resamples():
    generator = np.random.default_rng(5)
    confidence = generator.uniform(0.05, 1, 3000)
    correct = generator.uniform(size=3000) < confidence ** 1.5
    settings = BootstrapSettings(0.95, 200, seed=3)
    expected = percentile_interval([expected_calibration_error(confidence[i], correct[i])
                                    for i in reference_resamples(3000, settings)], 0.95)
    assert intervals.ece_interval(confidence, correct, settings) == pytest.approx(expected, abs=1e-12)
    point = expected_calibration_error(confidence, correct)
    low, high = expected
    assert low < point < high


def test_class_means_are_resampled_over_classes_and_paired_differences_over_images():
    settings = BootstrapSettings(0.9, 300, seed=1)
    per_class = [0.2, 0.9, None, 0.55, 0.7, 0.4]  # a class without images is left out, as the mean leaves it
    present = np.array([v for v in per_class if v is not None])
    expected = percentile_interval([present[i].mean() for i in reference_resamples(5, settings)], 0.9)
    assert intervals.class_mean_interval(per_class, settings) == pytest.approx(expected, abs=1e-12)
    generator = np.random.default_rng(2)
    baseline = generator.uniform(size=500) < 0.6
    better = baseline | (generator.uniform(size=500) < 0.1)
    found = intervals.paired_difference(better, baseline, settings)
    change = better.astype(float) - baseline.astype(float)
    assert found["difference"] == pytest.approx(change.mean(), abs=1e-15)
    by_images = percentile_interval([change[i].mean() for i in reference_resamples(500, settings)], 0.9)
    assert (found["low"], found["high"]) == pytest.approx(by_images, abs=0.01)  # the same distribution
    assert found["only_baseline"] == 0 and found["only_this"] == int((better & ~baseline).sum())


def test_correctness_is_kept_at_a_bit_per_image():
    correct = np.random.default_rng(0).uniform(size=50_001) < 0.5
    text = intervals.pack_correct(correct)
    assert (intervals.unpack_correct(text, len(correct)) == correct).all()
    assert len(text) <= len(correct) / 8 * 4 / 3 + 4  # ≤ 1 byte per image


def test_eval_records_carry_intervals_and_paired_comparisons(tiny_model_dirs, colours, capsys):
    argv = eval_args(tiny_model_dirs["open_clip_clip"], colours, "--no-cache", "--templates", "raw,standard,clip7",
                     "--method", "plain,zpe")
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    records = strict_json(out)
    first = records[0]
    low, high = first["ci"]["top1"]
    assert low <= first["top1"] <= high and first["ci_method"]["top1"] == "wilson"
    assert first["ci_method"] == {"top1": "wilson", "top5": "wilson", "mean_per_class_recall": "bootstrap over classes",
                                  "ece": "bootstrap over images"}
    assert first["ci_settings"] == {"confidence": 0.95, "resamples": 1000, "seed": 0}
    hits = intervals.unpack_correct(first["correct_bits"], first["images"])
    assert hits.sum() == round(first["top1"] * first["images"]) and "vs_baseline" not in first
    others = [r for r in records[1:]]
    assert all(r["vs_baseline"]["baseline"] == "raw (embedding, plain)" for r in others)
    for record in others:
        mine = intervals.unpack_correct(record["correct_bits"], record["images"])
        assert record["vs_baseline"]["difference"] == pytest.approx(record["top1"] - first["top1"], abs=1e-12)
        assert record["vs_baseline"]["only_this"] == int((mine & ~hits).sum())
        assert record["vs_baseline"]["holm_p"] >= record["vs_baseline"]["mcnemar_p"]
    assert len({r["items_digest"] for r in records}) == 1
    code, out, _ = run_cli(capsys, *argv, "--confidence", "0.99", "--baseline", "standard")
    wider = strict_json(out)
    assert wider[0]["ci"]["top1"][0] <= low and wider[0]["ci"]["top1"][1] >= high
    assert wider[0]["vs_baseline"]["baseline"] == "standard (embedding, plain)"
    code, _, err = run_cli(capsys, *argv, "--baseline", "clip80")
    assert code == 2 and "--baseline clip80: no template set of this run is called so" in err


def test_compare_pairs_runs_on_the_same_images_and_refuses_other_ones(tiny_model_dirs, colours, tmp_path, capsys):
    files = {}
    for name, extra in (("raw", ["--templates", "raw"]), ("clip7", ["--templates", "clip7"]),
                        ("fewer", ["--templates", "raw", "--max-images", "12"])):
        files[name] = tmp_path / f"{name}.json"
        code, _, err = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset",
                               f"folder:{colours}", "--no-cache", "--json", *extra, "--output", files[name])
        assert code == 0, err
    code, out, err = run_cli(capsys, "compare", files["raw"], files["clip7"], "--json")
    assert code == 0, err
    (row,) = strict_json(out)
    raw, clip7 = (strict_json(files[n].read_text())[0] for n in ("raw", "clip7"))
    assert row["difference"] == pytest.approx(clip7["top1"] - raw["top1"], abs=1e-12)
    assert row["low"] <= row["difference"] <= row["high"] and row["holm_p"] == row["mcnemar_p"]
    code, _, err = run_cli(capsys, "compare", files["raw"], files["fewer"])
    assert code == 2 and "were scored on other images (24 images there, 12 here" in err
