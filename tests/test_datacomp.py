"""DataComp's 38 tasks (`suite: datacomp`): fakes in the layouts DataComp's evaluate.py reads (its `--data_dir`:
wds_…_test webdatasets, with group metadata for WILDS and fairness, nlphuji's caption tables and WinoGAViL's games),
every task's main
metric, and the aggregate as aggregate_scores.py computes it — partial, and saying so, when a task cannot run."""
from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch

from cli_runner import run_cli
from fake_datasets import GAMES, webdataset, write_winogavil_table
from pixprompt.data.catalog import catalog, suite

CLASSES = ["cat", "dog", "bird", "fish", "horse", "cow"]
TEMPLATES = ["a photo of a {c}.", "a drawing of a {c}."]


def datacomp_tasks():
    return [catalog()[name] for name in suite("datacomp")]


def write_caption_table(folder: Path, count: int) -> None:
    """nlphuji's layout: data/*.parquet with an `image` and a `caption` (list of captions) column."""
    import datasets
    from PIL import Image

    images = [Image.new("RGB", (16, 16), (30 * i % 256, 200 - 10 * i, 90)) for i in range(count)]
    table = datasets.Dataset.from_dict(
        {"image": images, "caption": [[f"picture {i}", f"colour {30 * i % 256}"] for i in range(count)]},
        features=datasets.Features({"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string"))}))
    (folder / "data").mkdir(parents=True)
    table.to_parquet(str(folder / "data" / "test-00000-of-00001.parquet"))


def write_datacomp_fakes(root: Path) -> list[str]:
    """Every DataComp task, under `root` as DataComp's --data_dir holds them (WinoGAViL as a saved copy of its
    table); their names."""
    written = []
    for number, entry in enumerate(datacomp_tasks()):
        folder = root / entry.folder
        if entry.read.get("games"):
            write_winogavil_table(folder)
        elif "hf" in entry.read:
            write_caption_table(folder, 6)
        else:
            labels = [(number + i) % len(CLASSES) for i in range(12)]
            fields = entry.read.get("metadata")
            # WILDS' `y` field is the sample's label, as in the real metadata
            metadata = [tuple(labels[i] if name == "y" else (i * (f + 1) + f) % 6 for f, name in enumerate(fields))
                        for i in range(12)] if fields else None
            webdataset(folder, CLASSES, labels, TEMPLATES, metadata)
        written.append(entry.name)
    return written


def test_the_catalog_holds_datacomps_38_tasks_with_their_main_metrics():
    tasks = datacomp_tasks()
    assert len(tasks) == 38 and len({t.read["datacomp"] for t in tasks}) == 38
    metrics = {t.read["datacomp"]: t.metric for t in tasks}
    assert metrics["wilds/iwildcam"] == "F1-macro_all" and metrics["wilds/fmow"] == "acc_worst_region"
    assert metrics["fairness/dollar_street"] == "acc_top5_wg" and metrics["fairness/geode"] == "acc_wg"
    assert metrics["vtab/caltech101"] == "mean_per_class_recall" and metrics["imagenet1k"] == "top1"
    assert metrics["retrieval/mscoco_2014_5k_test_image_text_retrieval"] == "mean_recall@1"
    groups = {g: sum(t.group == f"DataComp {g}" for t in tasks) for g in ("VTAB", "ImageNet dist. shifts", "retrieval")}
    assert groups == {"VTAB": 13, "ImageNet dist. shifts": 6, "retrieval": 3}  # aggregate_scores.py's groups
    assert catalog()["datacomp/fairness/geode"].folder == "wds_geode_test"  # read without fairness/, as DataComp


def test_bench_datacomp_prints_every_main_metric_and_a_partial_average(tiny_model_dirs, tmp_path, capsys):
    written = write_datacomp_fakes(tmp_path / "data")
    assert len(written) == 38
    config = tmp_path / "grid.yaml"
    config.write_text(f"models:\n  - model: {tiny_model_dirs['open_clip_clip']}\nsuite: datacomp\n"
                      f"data_root: {tmp_path / 'data'}\ndownload: false\n")
    code, out, err = run_cli(capsys, "bench", "--config", config, "--device", "cpu", "--workers", "0",
                             "--no-cache", "--output", tmp_path / "table.csv", "--json")
    assert code == 0, err
    records = json.loads(out)
    assert {r["dataset"] for r in records} == set(written)
    assert "left out" not in err
    by_name = {r["dataset"]: r for r in records}
    for name in written:
        record = by_name[name]
        assert record["score"] == record[catalog()[name].metric], name
    fmow = by_name["datacomp/wilds/fmow"]
    assert set(fmow["acc_worst_region_by_group"]) == {f"region {g}" for g in range(6)}
    with open(tmp_path / "table.csv", newline="") as handle:
        table = {row["dataset"]: row for row in csv.DictReader(handle)}
    model = next(k for k in table["DataComp Average"] if k not in ("dataset", "metric"))
    scores = [by_name[name]["score"] for name in written]
    assert float(table["DataComp Average"][model]) == pytest.approx(100 * sum(scores) / len(scores), abs=0.01)
    vtab = [by_name[t.name]["score"] for t in datacomp_tasks() if t.group == "DataComp VTAB"]
    assert float(table["DataComp VTAB"][model]) == pytest.approx(100 * sum(vtab) / 13, abs=0.01)
    assert float(table["DataComp ImageNet"][model]) == pytest.approx(100 * by_name["datacomp/imagenet1k"]["top1"],
                                                                     abs=0.01)
    assert table["DataComp tasks"][model] == "38/38"
    games_images = sum(count for _, count, _ in GAMES)
    assert int(table["DataComp images"][model]) == sum(r["images"] for r in records) == 35 * 12 + 2 * 6 + games_images
    assert float(table["DataComp seconds"][model]) == pytest.approx(sum(r["elapsed_s"] for r in records), abs=0.1)
    (tmp_path / "records.json").write_text(out)
    code, _, err = run_cli(capsys, "report", tmp_path / "records.json", "-o", tmp_path / "report.html")
    html = (tmp_path / "report.html").read_text()
    assert code == 0 and "DataComp&#39;s aggregate" in html and "38/38" in html, err


def test_the_terminal_says_the_average_is_partial_and_names_the_missing(tiny_model_dirs, tmp_path, capsys):
    root = tmp_path / "data"
    for name in ("datacomp/imagenet1k", "datacomp/vtab/dtd"):
        entry = catalog()[name]
        webdataset(root / entry.folder, CLASSES, [0, 1, 2, 3, 4, 5], TEMPLATES)
    config = tmp_path / "grid.yaml"
    config.write_text(f"models:\n  - model: {tiny_model_dirs['open_clip_clip']}\nsuite: datacomp\n"
                      f"data_root: {root}\ndownload: false\n")
    code, out, err = run_cli(capsys, "bench", "--config", config, "--device", "cpu", "--workers", "0", "--no-cache")
    assert code == 0, err
    assert "DataComp's aggregate" in out and "fewer than 38 is a partial mean" in out and "2/38" in out
    assert "WinoGAViL" in out and "ImageNet-O" in out  # named as missing


def datacomp_group_eval(fields: list[str], by: str, metric_name: str, k: int, predictions: torch.Tensor,
                        labels: torch.Tensor, metadata: torch.Tensor, monkeypatch) -> dict:
    """DataComp's evaluator pattern (wilds_eval.py, fairness_eval.py) on the `wilds` package: a WILDSDataset holding
    the metadata, a CombinatorialGrouper by one field, `standard_group_eval` of wilds' Accuracy (or DataComp's
    top-k accuracy); wilds' scatter-based group average replaced by a plain one, as DataComp replaces it."""
    pytest.importorskip("wilds")
    import wilds.common.metrics.metric as wilds_metric
    import wilds.common.utils as utils
    from wilds.common.grouper import CombinatorialGrouper
    from wilds.common.metrics.all_metrics import Accuracy
    from wilds.datasets.wilds_dataset import WILDSDataset

    def average_over_groups(values, groups, n_groups):
        counts = utils.get_counts(groups, n_groups)
        sums = torch.zeros(n_groups, dtype=torch.float).scatter_add_(0, groups, values.float())
        return sums / counts, counts

    monkeypatch.setattr(wilds_metric, "avg_over_groups", average_over_groups)  # torch_scatter is not installed

    class TopK(Accuracy):
        def _compute_element_wise(self, y_pred, y_true):
            return (y_pred == y_true.unsqueeze(-1)).any(-1).float()

    class Evaluator(WILDSDataset):
        def __init__(self):
            self._metadata_array, self._metadata_fields = metadata, fields

    evaluator = Evaluator()
    grouper = CombinatorialGrouper(dataset=evaluator, groupby_fields=[by])
    metric = TopK(name=metric_name) if k > 1 else Accuracy(name=metric_name)
    return evaluator.standard_group_eval(metric, grouper, predictions[:, :k] if k > 1 else predictions[:, 0],
                                         labels, metadata)[0]


@pytest.mark.parametrize("task, by, k", [("wilds/fmow", "region", 1), ("fairness/geode", "region", 1),
                                         ("fairness/dollar_street", "income_ds", 5), ("wilds/camelyon17", "slide", 1)])
def test_group_metrics_equal_datacomps_wilds_evaluators(task, by, k, monkeypatch):
    from pixprompt.evaluation.metrics import group_metrics

    entry = next(t for t in datacomp_tasks() if t.read["datacomp"] == task)
    fields = entry.read["metadata"]
    (spec,) = [s for s in entry.read["group_metrics"] if s["by"] == by]
    generator = torch.Generator().manual_seed(1)
    labels = torch.randint(0, 8, (400,), generator=generator)
    metadata = torch.randint(0, 6, (400, len(fields)), generator=generator)
    column = fields.index(by)
    # each image's classes ranked from a random shift of its label; the last group's label always ranked last, so
    # that group is the worst: FMoW's "Other" region (5) stays in, as DataComp's evaluator leaves it in
    offsets = torch.stack([torch.randperm(8, generator=generator) for _ in range(400)])
    offsets[metadata[:, column] == 5] = torch.arange(1, 9) % 8
    ranking = (labels[:, None] + offsets) % 8
    ours = group_metrics(ranking, labels, fields, metadata, [spec])
    reference = datacomp_group_eval(fields, by, spec["metric"], k, ranking, labels, metadata, monkeypatch)
    worst_field = f"{spec['metric']}_wg"
    assert ours[spec["name"]] == pytest.approx(reference[worst_field], abs=1e-6) and ours[spec["name"]] == 0.0


def test_macro_f1_equals_wilds_f1_over_the_labels_present():
    pytest.importorskip("wilds")
    from wilds.common.metrics.all_metrics import F1

    from pixprompt.evaluation.metrics import macro_f1

    generator = torch.Generator().manual_seed(2)
    labels = torch.randint(0, 10, (300,), generator=generator)
    labels[labels == 3] = 4  # a class absent from the labels, predicted anyway: not averaged in
    predictions = torch.where(torch.rand(300, generator=generator) < 0.5, labels,
                              torch.randint(0, 10, (300,), generator=generator))
    reference = F1(average="macro").compute(predictions, labels)["F1-macro_all"]
    assert macro_f1(predictions, labels) == pytest.approx(reference, abs=1e-6)  # wilds returns float32


def test_winogavil_equals_datacomps_wino_eval(loaded_models, tmp_path):
    """DataComp's evaluate_winogavil_dataset on the same model: each game's cue as get_clip_prompt writes it, the
    top-n candidates by np.argsort of the similarities, sklearn's jaccard_score, and its per-size means."""
    import numpy as np
    import open_clip
    from sklearn.metrics import jaccard_score

    from pixprompt.data.datasets import DatasetOptions, load_dataset
    from pixprompt.evaluation import evaluate

    images = write_winogavil_table(tmp_path / "winogavil")
    model = loaded_models["open_clip_clip"]
    dataset = load_dataset("datacomp/misc/winogavil", DatasetOptions(str(tmp_path / "winogavil")))
    (record,) = evaluate(model, dataset, [], cache_root=tmp_path / "cache", workers=0)
    import datasets

    table = datasets.load_from_disk(str(tmp_path / "winogavil"))
    _, _, preprocess = open_clip.create_model_and_transforms(model.info.name)
    scores, sizes = [], []
    with torch.no_grad():
        for example in table:
            pixels = torch.stack([preprocess(image.convert("RGB")) for image in example["candidate_images"]])
            cue = example["cue"].lower()
            text = model.tokenizer([f"An {cue}" if cue[0] in "aeiou" else f"A {cue}"])
            similarity = (model.model.encode_text(text, normalize=True)
                          @ model.model.encode_image(pixels, normalize=True).T).squeeze(0).numpy()
            truth = np.isin(example["candidates"], example["associations"])
            predicted = np.isin(np.arange(len(pixels)), np.argsort(similarity)[-truth.sum():])
            scores.append(jaccard_score(truth, predicted))
            sizes.append(len(pixels))
    scores, sizes = np.array(scores), np.array(sizes)
    assert record["task"] == "association" and record["games"] == len(GAMES) and record["images"] == images
    assert record["avg_jaccard_score"] == pytest.approx(scores.mean(), abs=1e-9)
    assert record["jaccard_score_10-12"] == pytest.approx(scores[sizes >= 10].mean(), abs=1e-9)
    assert record["jaccard_score_5-6"] == pytest.approx(scores[sizes <= 6].mean(), abs=1e-9)
    assert record["jaccard_score_12"] == pytest.approx(scores[sizes == 12].mean(), abs=1e-9)
    assert record["score"] == record["jaccard_score_10-12"] and record["metric"] == "jaccard_score_10-12"
    (again,) = evaluate(model, dataset, [], cache_root=tmp_path / "cache", workers=0)
    assert again["cached_images"] == images and again["score"] == record["score"]
