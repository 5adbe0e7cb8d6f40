"""Every named dataset of the catalog, read from a tiny fake of its published layout with the CLIP paper's
class names; labels mapped by name where the source names its classes."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from fake_datasets import FAKES, webdataset
from pixprompt.data.catalog import SUITES, catalog, label_map, normalised, suite
from pixprompt.data.datasets import DatasetOptions, load_dataset
from pixprompt.errors import UnavailableError, UsageError
from pixprompt.prompts.templates import CLIP_PAPER, paper_classnames, resolve_templates


@pytest.fixture()
def lenient_checksums(monkeypatch):
    """torchvision checks Flowers-102's, STL-10's and FER2013's files against the archives' MD5 sums, which no
    fake can match: accept them, as torchvision's own dataset tests do."""
    import torchvision.datasets.fer2013 as fer2013
    import torchvision.datasets.flowers102 as flowers102
    import torchvision.datasets.stl10 as stl10

    for module in (fer2013, flowers102, stl10):
        monkeypatch.setattr(module, "check_integrity", lambda *args, **kwargs: True)


def read_named(name: str, root) -> object:
    return load_dataset(name, DatasetOptions(str(root), download=False))


def test_every_catalog_entry_that_is_read_by_the_catalog_has_a_fake():
    read_by_catalog = {name for name, entry in catalog().items() if "loader" not in entry.read and entry.names != "wds"}
    assert read_by_catalog == set(FAKES)


@pytest.mark.parametrize("name", sorted(FAKES))
def test_named_dataset_reads_its_layout_with_the_papers_names(name, tmp_path, lenient_checksums):
    written = FAKES[name](tmp_path)
    dataset = read_named(name, tmp_path)
    assert dataset.name == name
    assert dataset.classnames == paper_classnames(name)
    assert dataset.default_templates == name
    if dataset.multi_label:
        found = sorted({dataset.classnames[c] for labels in dataset.label_sets for c in labels})
        assert found == written
    else:
        assert Counter(dataset.classnames[label] for label in dataset.labels) == Counter(written)
    assert dataset.images.load(0).mode == "RGB"
    assert len({dataset.images.item_id(i) for i in range(len(dataset))}) == len(dataset)


def test_voc2007_keeps_every_class_present_in_each_image(tmp_path):
    from fake_datasets import VOC_IMAGES

    FAKES["voc2007"](tmp_path)
    dataset = read_named("voc2007", tmp_path)
    got = [sorted(dataset.classnames[c] for c in labels) for labels in dataset.label_sets]
    assert got == [sorted(set(objects)) for objects in VOC_IMAGES.values()]  # difficult objects count too
    assert dataset.spread_subset(2).label_sets == [dataset.label_sets[0], dataset.label_sets[2]]


def test_eurosat_is_mapped_by_name_not_by_folder_order(tmp_path):
    """EuroSAT's folders sort AnnualCrop, Forest, …; the paper lists forest first: an index mapping would
    swap them."""
    FAKES["eurosat"](tmp_path)
    dataset = read_named("eurosat", tmp_path)
    first = dataset.images.describe(0)
    assert "AnnualCrop" in first and dataset.classnames[dataset.labels[0]] == "annual crop land"
    assert paper_classnames("eurosat")[0] == "forest"


def test_a_folder_holding_the_class_folders_itself_is_accepted(tmp_path):
    FAKES["resisc45"](tmp_path)
    dataset = read_named("resisc45", tmp_path / "NWPU-RESISC45")
    assert Counter(dataset.classnames[label] for label in dataset.labels)["sea ice"] == 2


def test_a_folder_of_another_dataset_is_refused_by_name(tmp_path):
    FAKES["eurosat"](tmp_path)
    (tmp_path / "eurosat" / "2750" / "Glacier").mkdir()
    with pytest.raises(UsageError, match="'Glacier'.*match no class"):
        read_named("eurosat", tmp_path)


def test_a_missing_dataset_offline_says_how_to_get_it(tmp_path):
    with pytest.raises(UnavailableError, match="food101.*not on disk|--data-dir"):
        load_dataset("food101", DatasetOptions(None, download=False))
    with pytest.raises(UnavailableError, match="no class folders.*NWPU-RESISC45.*wds/vtab/resisc45"):
        read_named("resisc45", tmp_path)


def test_webdataset_copy_of_a_named_dataset_gets_the_papers_names(tmp_path):
    """resisc45 through CLIP_benchmark's copy: its names (underscored) mapped to the paper's by name."""
    webdataset(tmp_path, ["airplane", "baseball_diamond", "sea_ice"], [2, 1, 0])
    dataset = read_named("resisc45", tmp_path)
    assert dataset.classnames == paper_classnames("resisc45")
    assert [dataset.classnames[label] for label in dataset.labels] == ["sea ice", "baseball diamond", "airplane"]
    assert dataset.default_templates == "resisc45"


def test_webdataset_only_tasks_keep_clip_benchmarks_names(tmp_path):
    webdataset(tmp_path, ["zero", "one", "two"], [2, 0], ["a photo of the number: \"{c}\"."])
    dataset = read_named("svhn", tmp_path)
    assert dataset.classnames == ["zero", "one", "two"] and dataset.labels == [2, 0]
    assert resolve_templates(dataset.default_templates)[0].templates == ('a photo of the number: "{}".',)


def test_fer2013_synonyms_are_prompted_together():
    prompt_set = resolve_templates("fer2013")[0]
    prompts = prompt_set.prompts_for(paper_classnames("fer2013"))
    templates = CLIP_PAPER["fer2013"]["templates"]
    assert len(prompts[0]) == len(templates)  # angry: one name
    assert len(prompts[5]) == 3 * len(templates)  # surprised, shocked, spooked
    assert "a photo of a spooked looking face." in prompts[5]


def test_catalog_is_consistent():
    entries = catalog()
    for name, entry in entries.items():
        if entry.names == "paper":
            assert name in CLIP_PAPER, name
        assert entry.suites or name == "imagenette"
        assert set(entry.suites) <= set(SUITES)
        assert entry.metric in {"top1", "mean_per_class_recall", "mean_average_precision", "mean_recall@1",
                                "F1-macro_all", "acc_worst_region", "acc_top5_wg", "acc_wg", "jaccard_score_10-12"}
    # every image dataset of the CLIP paper's Table 11, ImageNet included, is in its suite
    assert set(suite("clip")) == set(CLIP_PAPER) | {"imagenet"}
    assert suite("imagenet-shifts") == ["imagenet", "imagenet-v2", "imagenet-sketch", "imagenet-a", "imagenet-r",
                                        "objectnet"]
    assert len(suite("vtab")) == 19
    assert suite("retrieval") == ["flickr30k", "mscoco_captions"]
    assert Counter(entries[n].group for n in suite("vtab")) == {"VTAB natural": 7, "VTAB specialized": 4,
                                                                "VTAB structured": 8}


def test_aliases_name_real_paper_classes():
    for entry in catalog().values():
        if entry.aliases:
            names = {normalised(n) for n in paper_classnames(entry.name)}
            assert {normalised(target) for target in entry.aliases.values()} <= names, entry.name


def test_label_map_refuses_unknown_names_and_unequal_counts():
    entry = catalog()["eurosat"]
    assert label_map(entry, ["SeaLake", "Forest"], paper_classnames("eurosat")) == [5, 0]
    with pytest.raises(UsageError):
        label_map(catalog()["gtsrb"], ["a", "b"], paper_classnames("gtsrb"))



def test_multilabel_ap_equals_clip_benchmark_and_scikit_learn():
    import numpy as np
    import torch
    from clip_benchmark.metrics.zeroshot_classification import average_precision_per_class
    from sklearn.metrics import average_precision_score

    from pixprompt.evaluation.metrics import multilabel_metrics

    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(60, 5, generator=generator)
    targets = (torch.rand(60, 5, generator=generator) < 0.3).int()
    metrics = multilabel_metrics(scores, targets, list("abcde"))
    theirs = average_precision_per_class(scores, targets).tolist()
    sklearn = [average_precision_score(targets[:, c].numpy(), scores[:, c].numpy()) for c in range(5)]
    assert list(metrics["per_class_ap"].values()) == pytest.approx(theirs, abs=1e-6)
    assert list(metrics["per_class_ap"].values()) == pytest.approx(sklearn, abs=1e-12)
    assert metrics["mean_average_precision"] == pytest.approx(float(np.mean(sklearn)), abs=1e-12)


def test_multilabel_map_counts_absent_classes_as_clip_benchmark_does():
    import torch
    from clip_benchmark.metrics.zeroshot_classification import average_precision_per_class

    from pixprompt.evaluation.metrics import multilabel_metrics

    generator = torch.Generator().manual_seed(1)
    scores = torch.randn(40, 6, generator=generator)
    targets = (torch.rand(40, 6, generator=generator) < 0.4).int()
    targets[:, [1, 4]] = 0  # two classes without a positive image
    metrics = multilabel_metrics(scores, targets, list("abcdef"))
    assert metrics["mean_average_precision"] == pytest.approx(float(average_precision_per_class(scores, targets)
                                                                    .mean()), abs=1e-6)
    assert metrics["classes_without_positives"] == ["b", "e"] and metrics["per_class_ap"]["b"] is None


def test_a_multilabel_webdataset_is_scored_by_map(tiny_model_dirs, tmp_path, capsys):
    from cli_runner import model_args, run_cli

    root = webdataset(tmp_path / "wds", ["cat", "dog", "car"], [(0,), (1, 2), (0, 2), (1,)])
    code, out, err = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset",
                             f"wds:{root}", "--templates", "raw", "--json", "--no-cache")
    assert code == 0, err
    (record,) = json.loads(out)
    assert record["metric"] == "mean_average_precision" and record["score"] == record["mean_average_precision"]


def test_voc2007_eval_reports_map_over_the_images_classes(tmp_path, loaded_models, tiny_model_dirs, capsys):
    from cli_runner import model_args, run_cli
    from pixprompt.evaluation import evaluate

    FAKES["voc2007"](tmp_path / "voc")
    dataset = read_named("voc2007", tmp_path / "voc")
    record = evaluate(loaded_models["open_clip_clip"], dataset, resolve_templates("voc2007"), cache_root=None,
                      workers=0)[0]
    assert record["metric"] == "mean_average_precision" and record["score"] == record["mean_average_precision"]
    present = {dataset.classnames[c] for labels in dataset.label_sets for c in labels}
    assert {name for name, ap in record["per_class_ap"].items() if ap is not None} == present
    assert 0 < record["mean_average_precision"] <= 1
    code, out, _ = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset", "voc2007",
                           "--data-dir", tmp_path / "voc", "--no-cache", "--csv")
    assert code == 0
    header, row = out.splitlines()[:2]
    assert "mAP %" in header.split(",")
    assert row.split(",")[header.split(",").index("mAP %")] == str(round(100 * record["mean_average_precision"], 2))


def test_multilabel_webdataset_and_csv_keep_every_label(tmp_path):
    root = webdataset(tmp_path / "wds", ["cat", "dog", "car"], [(0, 1), (2,), (0, 2)])
    dataset = load_dataset(f"wds:{root}")
    assert dataset.multi_label and dataset.label_sets == [(0, 1), (2,), (0, 2)]
    (tmp_path / "a.png").write_bytes((root / "classnames.txt").read_bytes())  # any file: paths must exist
    (tmp_path / "labels.csv").write_text("path,label\na.png,dog|cat\na.png,car\n")
    dataset = load_dataset(f"csv:{tmp_path / 'labels.csv'}")
    assert dataset.classnames == ["car", "cat", "dog"] and dataset.label_sets == [(1, 2), (0,)]


def test_webdataset_mixing_label_kinds_is_refused(tmp_path):
    root = webdataset(tmp_path / "wds", ["cat", "dog"], [0, 1])
    (root / "dataset_type.txt").write_text("multilabel\n")
    with pytest.raises(UsageError, match="needs a .npy label"):
        load_dataset(f"wds:{root}")


def test_datasets_command_lists_datasets_and_suites_without_downloading(capsys, tmp_path, monkeypatch):
    from cli_runner import run_cli

    monkeypatch.setenv("PIXPROMPT_CACHE", str(tmp_path / "cache"))
    code, out, _ = run_cli(capsys, "datasets", "--json")
    listed = json.loads(out)
    assert code == 0 and not (tmp_path / "cache").exists()
    by_name = {row["name"]: row for row in listed["datasets"]}
    assert set(by_name) == set(catalog())
    assert by_name["eurosat"]["classes"] == 10 and by_name["eurosat"]["templates"] == 3
    assert by_name["fer2013"]["templates"] == 6 and by_name["voc2007"]["multi_label"]
    assert by_name["caltech101"]["metric"] == "mean_per_class_recall"
    assert {s["suite"]: s["datasets"] for s in listed["suites"]} == {"clip": 24, "imagenet-shifts": 6, "vtab": 19,
                                                                    "retrieval": 2, "datacomp": 38}
    assert by_name["flickr30k"]["metric"] == "mean_recall@1"
    code, out, _ = run_cli(capsys, "datasets", "--filter", "imagenet-shifts", "--csv")
    names = [line.split(",")[0] for line in out.splitlines()[1:] if line and not line.startswith("suite")]
    assert names[:6] == suite("imagenet-shifts")


def test_readme_lists_every_named_dataset_and_suite():
    from pathlib import Path

    readme = (Path(__file__).parents[1] / "README.md").read_text()
    for name in [*catalog(), *SUITES]:
        assert f"`{name}`" in readme or f"suite: {name}" in readme or f"suite:\n{name}" in readme, name


def test_every_catalog_entry_maps_clip_benchmarks_own_class_names():
    """CLIP_benchmark's shipped en_classnames.json is what its webdatasets' classnames.txt hold: every catalog
    entry with a wds/ copy must map every one of those names (CLEVR's `three` is the paper's `3`)."""
    import os

    import clip_benchmark

    from pixprompt.data.catalog import catalog
    from pixprompt.data.sources.named import webdataset_label_map

    shipped = json.loads(Path(os.path.dirname(clip_benchmark.__file__), "datasets", "en_classnames.json").read_text())
    checked = []
    for entry in catalog().values():
        key = (entry.wds or "").removeprefix("vtab/")
        if entry.names != "paper" or key not in shipped:  # wds: its own names; others are read by code
            continue
        mapping = webdataset_label_map(entry, shipped[key])  # refuses any name it cannot map
        assert len(set(mapping)) == len(mapping), entry.name  # and never two names onto one class
        checked.append(entry.name)
    assert "clevr_count" in checked and len(checked) >= 10
