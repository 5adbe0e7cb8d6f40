"""`bench` with named suites: each dataset's main metric, group means, and robustness on ImageNet's shifts."""
from __future__ import annotations

import json
import math

import pytest

from cli_runner import model_args, run_cli
from fake_datasets import FAKES, image
from pixprompt.data.classnames import IMAGENETTE_WNIDS, imagenet_wnids, shifted_wnids
from pixprompt.evaluation.grid import load_grid
from pixprompt.evaluation.suites import baseline_fit, group_table, predicted_shift, robustness, suite_table


def record(model: str, dataset: str, score: float, templates: str | None = "t", **extra) -> dict:
    return {"model": model, "pretrained": None, "dataset": dataset, "top1": score, "score": score,
            "templates": templates, **extra}


def test_group_means_follow_the_catalog_groups():
    records = [record("m", "dtd", 0.5), record("m", "cifar100", 0.7), record("m", "eurosat", 0.4),
               record("m", "dtd", 0.9),  # a later template set: the first record stands for the pair
               record("m", "food101", 0.8)]
    rows, columns = group_table(records)
    assert columns == ["model", "VTAB natural (2/7)", "VTAB specialized (1/4)", "VTAB (3/19)", "average", "datasets"]
    assert rows == [{"model": "m", "VTAB natural (2/7)": 60.0, "VTAB specialized (1/4)": 40.0,
                     "VTAB (3/19)": pytest.approx(53.33), "average": 60.0, "datasets": 4}]
    table, columns = suite_table(records, ["dtd", "oxford_pets"])
    assert columns == ["dataset", "metric", "m"]
    assert table == [{"dataset": "dtd", "metric": "top1", "m": 50.0},
                     {"dataset": "oxford_pets", "metric": "mean_per_class_recall", "m": None}]


def test_effective_robustness_against_the_supervised_logit_fit():
    def logit(p):
        return math.log(p / (1 - p))

    records = [record("clip", "imagenet", 0.6), record("clip", "imagenet-r", 0.7), record("clip", "imagenet-a", 0.3),
               record("rn50", "imagenet", 0.76, None), record("rn50", "imagenet-r", 0.36, None),
               record("rn50", "imagenet-a", 0.0, None), record("rn50b", "imagenet", 0.80, None),
               record("rn50b", "imagenet-r", 0.42, None), record("rn50b", "imagenet-a", 0.1, None)]
    shifts = robustness(records)
    assert shifts["shifts"] == ["imagenet-a", "imagenet-r"]
    slope = (logit(0.26) - logit(0.18)) / (logit(0.80) - logit(0.76))
    assert shifts["fit"] == pytest.approx((slope, logit(0.18) - slope * logit(0.76)))
    clip = shifts["rows"][0]
    assert clip["shifts mean"] == 50.0 and clip["shifts − imagenet"] == -10.0
    expected = 0.5 - 1 / (1 + math.exp(-(slope * logit(0.6) + logit(0.18) - slope * logit(0.76))))
    assert clip["effective robustness"] == round(100 * expected, 2)
    assert predicted_shift(shifts["fit"], 0.76) == pytest.approx(0.18)
    assert baseline_fit([(0.7, 0.5)]) is None
    assert robustness([record("clip", "imagenet", 0.6)]) is None


def imagenet_shift_folders(root) -> None:
    """ImageNet (val/<wnid>), ImageNet-R and ImageNet-Sketch fakes under <root>/<name>/, over Imagenette's classes."""
    r_wnids = [w for w in IMAGENETTE_WNIDS if w in shifted_wnids("imagenet-r")]
    for number, wnid in enumerate(IMAGENETTE_WNIDS[:4]):
        image(root / "imagenet" / "val" / wnid / "a.JPEG", number)
        image(root / "imagenet-sketch" / "sketch" / wnid / "a.JPEG", number + 7)
    for number, wnid in enumerate(r_wnids[:3]):
        image(root / "imagenet-r" / "imagenet-r" / wnid / "a.jpg", number + 3)
    assert imagenet_wnids()


def bench_suite(tmp_path, model_dir, capsys, grid: str) -> tuple[list[dict], str, str]:
    """Run `pixprompt bench` on a grid of `model_dir` and `grid` (YAML lines) with a JSON output and a report."""
    config = tmp_path / "grid.yaml"
    config.write_text(f"models: [{model_dir}]\ndata_root: {tmp_path / 'data'}\ndownload: false\n{grid}")
    output = tmp_path / "records.json"
    code, out, err = run_cli(capsys, "bench", "-c", config, *model_args(model_dir)[2:], "--output", output,
                             "--report", tmp_path / "report.html")
    assert code == 0, err
    return json.loads(output.read_text()), out, err


def test_bench_runs_the_clip_suite_with_what_is_on_disk(tmp_path, tiny_model_dirs, capsys):
    for name in ("eurosat", "voc2007"):
        FAKES[name](tmp_path / "data" / name)
    records, out, err = bench_suite(tmp_path, tiny_model_dirs["open_clip_clip"], capsys, "suite: clip\n")
    ran = {r["dataset"]: r for r in records}
    assert set(ran) == {"eurosat", "voc2007"}
    assert ran["eurosat"]["templates"] == "eurosat" and ran["voc2007"]["metric"] == "mean_average_precision"
    (summary,) = [line for line in err.splitlines() if "left out" in line]  # one line names every dataset left out
    assert "suite clip: 22 dataset(s) left out (" in summary and "food101" in summary and "kitti_distance" in summary
    assert "main metric per dataset" in out and "means per group" in out
    assert "Means per group" in (tmp_path / "report.html").read_text()


def test_bench_shows_robustness_on_imagenets_shifts(tmp_path, tiny_model_dirs, capsys):
    imagenet_shift_folders(tmp_path / "data")
    grid = "suite: imagenet-shifts\ntemplates: [standard]\n"
    (tmp_path / "g.yaml").write_text(f"models: [m]\n{grid}")
    assert [d["dataset"] for d in load_grid(tmp_path / "g.yaml").datasets] == [
        "imagenet", "imagenet-v2", "imagenet-sketch", "imagenet-a", "imagenet-r", "objectnet"]
    records, out, _ = bench_suite(tmp_path, tiny_model_dirs["open_clip_clip"], capsys, grid)
    assert {r["dataset"] for r in records} == {"imagenet", "imagenet-sketch", "imagenet-r"}
    assert "ImageNet distribution shifts" in out
    assert "ImageNet distribution shifts" in (tmp_path / "report.html").read_text()
    assert (tmp_path / "report_figures" / "robustness.png").stat().st_size > 1000


def test_a_suite_with_nothing_available_is_one_clear_error(tmp_path, tiny_model_dirs, capsys):
    config = tmp_path / "grid.yaml"
    config.write_text(f"models: [{tiny_model_dirs['open_clip_clip']}]\nsuite: vtab\ndata_root: {tmp_path}\n"
                      "download: false\n")
    code, _, err = run_cli(capsys, "bench", "-c", config, "--device", "cpu", "--no-cache")
    assert code != 0 and "none of the grid's datasets is available" in err
