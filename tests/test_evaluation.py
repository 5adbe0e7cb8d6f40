"""Evaluation on the real shared images equals a direct open_clip computation; cache; metrics; grid."""
from __future__ import annotations

import json

import open_clip
import pytest
import torch
from PIL import Image

from interruptions import ctrl_c_after
from pixprompt.cli import main
from pixprompt.data.datasets import DatasetOptions, load_dataset
from pixprompt.errors import UsageError
from pixprompt.evaluation import evaluate
from pixprompt.prompts import resolve_templates


def direct_open_clip_predictions(model, dataset, templates):
    """Reference: open_clip's own preprocess, encode_image and build_zero_shot_classifier, image by image."""
    _, _, preprocess = open_clip.create_model_and_transforms(model.info.name)
    weights = open_clip.build_zero_shot_classifier(model.model, model.tokenizer, dataset.classnames, templates,
                                                   num_classes_per_batch=None)
    predictions = []
    with torch.no_grad():
        for start in range(0, len(dataset), 256):
            batch = [preprocess(Image.open(dataset.images.paths[i]).convert("RGB"))
                     for i in range(start, min(start + 256, len(dataset)))]
            features = model.model.encode_image(torch.stack(batch), normalize=True)
            predictions.append((features @ weights).argmax(dim=1))
    return torch.cat(predictions)


@pytest.mark.parametrize(("spec", "folder", "templates"), [
    ("folder:{root}/cifar10-test", None, "standard"),
    ("imagenette", "imagenette-val", "standard"),
    ("imagenet", "imagenette-val", "standard"),
])
def test_accuracy_and_predictions_equal_direct_open_clip(loaded_models, shared_data, tmp_path, spec, folder,
                                                         templates):
    model = loaded_models["open_clip_clip"]
    dataset = load_dataset(spec.format(root=shared_data),
                           DatasetOptions(str(shared_data / folder) if folder else None))
    (prompt_set,) = resolve_templates(templates)
    records = evaluate(model, dataset, [prompt_set], cache_root=tmp_path, batch_size=128, workers=1)
    expected = direct_open_clip_predictions(model, dataset, list(prompt_set.templates))
    labels = torch.tensor(dataset.labels)
    assert records[0]["images"] == len(dataset) and records[0]["skipped"] == 0
    assert records[0]["top1"] == int((expected == labels).sum()) / len(labels)
    if spec == "imagenet":
        assert records[0]["classes"] == 1000 and len(dataset) == 3925


def test_cifar10_named_dataset_reads_class_folders(shared_data):
    dataset = load_dataset("cifar10", DatasetOptions(str(shared_data / "cifar10-test")))
    assert len(dataset) == 10_000 and dataset.classnames[0] == "airplane" and dataset.default_templates == "cifar10"


@pytest.fixture()
def small_folder(tmp_path):
    """Three classes of four real-looking images (gradients), in a folder: dataset."""
    root = tmp_path / "data"
    for c, name in enumerate(["red", "green", "blue"]):
        (root / name).mkdir(parents=True)
        for i in range(4):
            colour = [0, 0, 0]
            colour[c] = 60 + 40 * i
            Image.new("RGB", (48 + i, 40), tuple(colour)).save(root / name / f"{i}.png")
    return root


def counting_encoder(model, monkeypatch):
    calls = {"images": 0}
    original = type(model).encode_images

    def counted(self, pixels):
        calls["images"] += len(pixels)
        return original(self, pixels)

    monkeypatch.setattr(type(model), "encode_images", counted)
    return calls


def test_second_run_and_other_template_sets_encode_no_image(loaded_models, small_folder, tmp_path, monkeypatch):
    model = loaded_models["open_clip_clip"]
    dataset = load_dataset(f"folder:{small_folder}")
    calls = counting_encoder(model, monkeypatch)
    first = evaluate(model, dataset, resolve_templates("standard"), cache_root=tmp_path / "cache", workers=0)
    assert calls["images"] == 12
    again = evaluate(model, dataset, resolve_templates("raw,clip7"), ["embedding", "logits", "vote"],
                     cache_root=tmp_path / "cache", workers=0)
    assert calls["images"] == 12 and len(again) == 6
    assert all(r["cached_images"] == 12 and r["encoded_images"] == 0 for r in again)
    assert len(again[0]["per_template_accuracy"]) == 1 and len(again[3]["per_template_accuracy"]) == 7
    assert first[0]["top1"] == evaluate(model, dataset, resolve_templates("standard"),
                                        cache_root=tmp_path / "cache", workers=0)[0]["top1"]


def test_run_settings_are_the_keywords_as_one_value(loaded_models, small_folder, tmp_path):
    from pixprompt.evaluation.settings import RunSettings

    model, dataset = loaded_models["open_clip_clip"], load_dataset(f"folder:{small_folder}")
    by_keywords = evaluate(model, dataset, resolve_templates("raw"), cache_root=tmp_path, workers=0)
    settings = RunSettings(cache_root=tmp_path, workers=0)
    by_value = evaluate(model, dataset, resolve_templates("raw"), settings=settings)
    assert by_value[0]["cached_images"] == by_value[0]["images"] and by_value[0]["top1"] == by_keywords[0]["top1"]
    overridden = evaluate(model, dataset, resolve_templates("raw"), settings=settings, cache_root=None)
    assert overridden[0]["cached_images"] == 0
    with pytest.raises(TypeError, match="cache_dir"):
        evaluate(model, dataset, resolve_templates("raw"), cache_dir=tmp_path)


def test_interrupted_run_resumes_with_the_same_result(loaded_models, small_folder, tmp_path, monkeypatch):
    model = loaded_models["open_clip_siglip"]
    dataset = load_dataset(f"folder:{small_folder}")
    clean = evaluate(model, dataset, resolve_templates("standard"), cache_root=None, batch_size=2, workers=0)
    with ctrl_c_after(monkeypatch, 2), pytest.raises(KeyboardInterrupt):
        evaluate(model, dataset, resolve_templates("standard"), cache_root=tmp_path / "c", batch_size=2, workers=0)
    calls = counting_encoder(model, monkeypatch)
    resumed = evaluate(model, dataset, resolve_templates("standard"), cache_root=tmp_path / "c", batch_size=2,
                       workers=0)
    assert resumed[0]["cached_images"] == 4 and calls["images"] == 8  # two batches of two were kept
    for key in ("top1", "top5", "mean_per_class_recall", "confusion_matrix"):
        assert resumed[0][key] == clean[0][key]


def test_a_changed_or_added_file_invalidates_only_itself(loaded_models, small_folder, tmp_path, monkeypatch):
    model = loaded_models["open_clip_clip"]
    evaluate(model, load_dataset(f"folder:{small_folder}"), resolve_templates("raw"), cache_root=tmp_path,
             workers=0)
    Image.new("RGB", (50, 50), (255, 255, 0)).save(small_folder / "red" / "0.png")
    Image.new("RGB", (50, 50), (0, 255, 255)).save(small_folder / "blue" / "new.png")
    calls = counting_encoder(model, monkeypatch)
    records = evaluate(model, load_dataset(f"folder:{small_folder}"), resolve_templates("raw"),
                       cache_root=tmp_path, workers=0)
    assert calls["images"] == 2 and records[0]["images"] == 13 and records[0]["cached_images"] == 11


def test_partial_chunk_files_are_never_read(loaded_models, small_folder, tmp_path):
    model = loaded_models["open_clip_clip"]
    dataset = load_dataset(f"folder:{small_folder}")
    evaluate(model, dataset, resolve_templates("raw"), cache_root=tmp_path, workers=0)
    (chunk,) = list((tmp_path / "features").rglob("chunk-*.safetensors"))
    chunk.write_bytes(chunk.read_bytes()[:100])  # a torn write from an older, non-atomic tool
    records = evaluate(model, dataset, resolve_templates("raw"), cache_root=tmp_path, workers=0)
    assert records[0]["encoded_images"] == 12


def test_metrics_equal_scikit_learn_with_absent_classes():
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix, top_k_accuracy_score

    from pixprompt.evaluation.metrics import classification_metrics

    generator = torch.Generator().manual_seed(0)
    scores = torch.randn(200, 8, generator=generator)
    labels = torch.randint(0, 6, (200,), generator=generator)  # classes 6 and 7 have no images
    names = [f"c{i}" for i in range(8)]
    metrics = classification_metrics(scores, labels, names)
    predictions = scores.argmax(1).numpy()
    assert metrics["top1"] == float((predictions == labels.numpy()).mean())  # exactly, not approximately
    assert metrics["top5"] == top_k_accuracy_score(labels, scores.numpy(), k=5, labels=range(8))
    with pytest.warns(UserWarning):  # sklearn warns about predicted classes absent from y_true
        expected_recall = balanced_accuracy_score(labels, predictions)
    assert metrics["mean_per_class_recall"] == expected_recall
    assert metrics["confusion_matrix"] == confusion_matrix(labels, predictions, labels=range(8)).tolist()
    assert metrics["per_class_accuracy"]["c7"] is None
    few = classification_metrics(scores[:, :3], labels.clamp(max=2), names[:3])
    assert few["top5"] == 1.0  # top-min(5, C)
    hits = torch.zeros(100, 2)
    hits[:23, 1] = 1.0  # 23 of 100 right: 0.23 as JSON shows it, not float32's 0.23000000417232513
    assert repr(classification_metrics(hits, torch.ones(100, dtype=torch.long), names[:2])["top1"]) == "0.23"


def test_eval_cli_json_is_clean_and_output_files(tiny_model_dirs, small_folder, tmp_path, capsys):
    argv = ["eval", "--model", str(tiny_model_dirs["transformers_clip"]), "--device", "cpu", "--dataset",
            f"folder:{small_folder}", "--templates", "raw,standard", "--ensemble", "embedding,vote",
            "--cache-dir", str(tmp_path / "cache"), "--workers", "0", "--json", "--output",
            str(tmp_path / "results.csv")]
    assert main(argv) == 0
    records = json.loads(capsys.readouterr().out)
    assert [(r["templates"], r["ensemble"]) for r in records] == [
        ("raw", "embedding"), ("raw", "vote"), ("standard", "embedding"), ("standard", "vote")]
    for key in ("model", "dataset", "split", "top1", "top5", "mean_per_class_recall", "per_class_accuracy",
                "confusion_matrix", "per_template_accuracy", "images", "pixprompt_version", "elapsed_s"):
        assert key in records[0]
    assert (tmp_path / "results.csv").read_text().startswith("model,pretrained,dataset,templates")


def test_baseline_restricts_logits_to_the_classes_present(shared_data, tmp_path, monkeypatch):
    import torchvision

    from pixprompt.evaluation.baseline import evaluate_supervised, load_resnet50

    original = torchvision.models.resnet50
    torch.manual_seed(0)
    monkeypatch.setattr(torchvision.models, "resnet50", lambda weights=None: original(weights=None))
    subset = tmp_path / "val"
    for wnid in ("n01440764", "n03888257"):  # tench, parachute
        (subset / wnid).mkdir(parents=True)
        for source in sorted((shared_data / "imagenette-val" / wnid).iterdir())[:3]:
            (subset / wnid / source.name).symlink_to(source)
    model = load_resnet50("IMAGENET1K_V1", torch.device("cpu"))
    dataset = load_dataset("imagenet", DatasetOptions(str(tmp_path)))
    record = evaluate_supervised(model, dataset, None, workers=0)
    transform = torchvision.models.ResNet50_Weights.IMAGENET1K_V1.transforms()
    with torch.no_grad():
        logits = model.module(torch.stack([transform(Image.open(p).convert("RGB"))
                                           for p in dataset.images.paths]))
    expected = (logits.argmax(1) == torch.tensor(dataset.labels)).float().mean()
    assert record["top1"] == pytest.approx(float(expected)) and record["images"] == 6
    assert record["classes"] == 1000


def test_bench_grid_makes_the_paper_table(tiny_model_dirs, small_folder, tmp_path, capsys, monkeypatch):
    from pixprompt.evaluation.grid import paper_table

    config = tmp_path / "grid.yaml"
    config.write_text(f"models:\n  - model: {tiny_model_dirs['open_clip_clip']}\n"
                      f"datasets:\n  - dataset: folder:{small_folder}\ntemplates: [clip80, standard, raw]\n")
    assert main(["bench", "--config", str(config), "--device", "cpu", "--workers", "0", "--no-cache",
                 "--json", "--report", str(tmp_path / "bench.html")]) == 0
    captured = capsys.readouterr()
    records = json.loads(captured.out)
    assert (tmp_path / "bench.html").is_file() and "report written to" in captured.err  # --report is honoured
    assert f"pixprompt: [1/1] {tiny_model_dirs['open_clip_clip']} on folder:data" in captured.err
    assert [r["templates"] for r in records] == ["clip80", "standard", "raw"]
    assert [r["encoded_images"] for r in records] == [12, 12, 12]  # one pass shared by the three sets
    fake = [dict(records[0], model="ViT-B-32", pretrained="openai", dataset="imagenet", top1=0.631)]
    (row,), columns = paper_table(fake, ["clip80"])
    assert row["reported CLIP T11"] == 63.2 and row["ours clip80"] == 63.1 and row["delta"] == -0.1
    assert row["reproduced clip80"] == 63.3 and "reported SigLIP T3" in columns


def test_dataset_adapters_csv_hf_and_their_errors(small_folder, tmp_path):
    import datasets

    files = sorted(small_folder.rglob("*.png"))
    rows = ["path,label"] + [f"{p.relative_to(small_folder)},{p.parent.name}" for p in files]
    (small_folder / "labels.csv").write_text("\n".join(rows) + "\n")
    from_csv = load_dataset(f"csv:{small_folder / 'labels.csv'}")
    assert from_csv.classnames == ["blue", "green", "red"] and len(from_csv) == 12

    (tmp_path / "bad.csv").write_text("file,class\na.png,x\n")
    with pytest.raises(UsageError, match="lacks column.*label, path"):
        load_dataset(f"csv:{tmp_path / 'bad.csv'}")
    (tmp_path / "missing.csv").write_text("path,label\nnope.png,x\n")
    with pytest.raises(UsageError, match="do not exist"):
        load_dataset(f"csv:{tmp_path / 'missing.csv'}")

    images = [Image.open(p).convert("RGB") for p in sorted(small_folder.rglob("*.png"))]
    table = datasets.Dataset.from_dict(
        {"image": images, "label": [c for c in range(3) for _ in range(4)]},
        features=datasets.Features({"image": datasets.Image(),
                                    "label": datasets.ClassLabel(names=["blue", "green_tea", "red"])}))
    table.save_to_disk(str(tmp_path / "hf"))
    from_hf = load_dataset(f"hf:{tmp_path / 'hf'}")
    assert from_hf.classnames == ["blue", "green tea", "red"] and from_hf.images.load(5).size == (49, 40)

    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="no class sub-folders"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    with pytest.raises(UsageError, match="not imagenet classes"):
        load_dataset("imagenet", DatasetOptions(str(_wnid_like(tmp_path))))
    with pytest.raises(UsageError, match="unknown dataset"):
        load_dataset("fashion-mnist")


def _wnid_like(tmp_path):
    """An ImageNet-style folder whose one class folder is no ImageNet-1k class."""
    root = tmp_path / "inet"
    (root / "val" / "n00000001").mkdir(parents=True)
    return root


def test_the_readme_python_api_example_on_a_tiny_model(tiny_model_dirs, small_folder, tmp_path, monkeypatch):
    """README's Python API: a missing file's Prediction carries the error; evaluate and classify share one cache
    by default."""
    from pixprompt import build_classifier, load_model
    from pixprompt.evaluation import classify, evaluate

    monkeypatch.setenv("PIXPROMPT_CACHE", str(tmp_path / "default-cache"))
    model = load_model(str(tiny_model_dirs["open_clip_clip"]), device="cpu")
    (templates,) = resolve_templates("clip80")
    classifier = build_classifier(model, ["cat", "dog", "car"], templates)
    image = next(small_folder.rglob("*.png"))
    good, missing = classify(model, classifier, [image, tmp_path / "missing.jpg"], top_k=3, workers=0)
    assert good.error is None and len(good.labels) == 3
    assert missing.labels == () and "No such file" in missing.error
    dataset = load_dataset(f"folder:{small_folder}")
    first = evaluate(model, dataset, resolve_templates("raw"), workers=0)
    again = evaluate(model, dataset, resolve_templates("raw"), workers=0)
    # the photo classify encoded is found by its file: the dataset's other images are encoded
    assert (first[0]["encoded_images"], first[0]["cached_images"]) == (len(dataset) - 1, 1)
    assert again[0]["cached_images"] == len(dataset) and list((tmp_path / "default-cache" / "features").iterdir())
    uncached = evaluate(model, dataset, resolve_templates("raw"), cache_root=None, workers=0)
    assert uncached[0]["encoded_images"] == len(dataset) and uncached[0]["top1"] == first[0]["top1"]
