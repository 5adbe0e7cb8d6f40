"""CLIP_benchmark's webdataset layout: exported by its own converter from real images, scored by pixprompt and by
CLIP_benchmark's own zero-shot evaluation — the same accuracy."""
from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from cli_runner import model_args, run_cli

TEMPLATES = ["a photo of a {c}.", "a blurry photo of a {c}.", "itap of a {c}."]


def export_with_clip_benchmark(pairs: list[tuple[str, int]], classes: list[str], out: Path) -> Path:
    """`clip_benchmark.webdataset_builder.convert_dataset` over (image path, label) pairs, copying the files."""
    from clip_benchmark import webdataset_builder

    class Pairs(list):
        """A list of samples carrying the class names and templates, as the converter reads them."""

    samples = Pairs(pairs)
    samples.classes, samples.templates = classes, TEMPLATES
    webdataset_builder.convert_dataset(samples, "test", str(out), transform=webdataset_builder.path_to_bytes,
                                       max_count=25, verbose=False)
    return out


@pytest.fixture()
def exported(shared_data, tmp_path) -> tuple[Path, list[str]]:
    """Imagenette val (8 images of each of its 10 classes) exported as a 4-shard CLIP_benchmark webdataset."""
    from pixprompt.data.classnames import IMAGENETTE_WNIDS, wnid_names

    classes = wnid_names(IMAGENETTE_WNIDS)
    pairs = [(str(image), label) for label, wnid in enumerate(IMAGENETTE_WNIDS)
             for image in sorted((shared_data / "imagenette-val" / wnid).iterdir())[:8]]
    return export_with_clip_benchmark(pairs, classes, tmp_path / "wds_imagenette"), classes


def clip_benchmark_scores(model_dir: Path, root: Path) -> dict:
    """CLIP_benchmark's own pipeline: its wds loader, open_clip's preprocess and tokenizer, its zero-shot
    classifier and classification run, and its metrics. (Its `evaluate` wrapper calls `float()` on a 1-element
    array, which NumPy 2 refuses; its `accuracy` formula is applied here with `.item()` instead.)"""
    import open_clip
    import torch
    from clip_benchmark.datasets.builder import build_dataset
    from clip_benchmark.metrics import zeroshot_classification
    from sklearn.metrics import balanced_accuracy_score

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    dataset = build_dataset("wds/imagenette", root=str(root), transform=preprocess, split="test")
    loader = torch.utils.data.DataLoader(dataset.batched(16), batch_size=None, num_workers=0)
    classifier = zeroshot_classification.zero_shot_classifier(model.eval(), tokenizer, dataset.classes,
                                                              dataset.templates, "cpu", amp=False)
    logits, target = zeroshot_classification.run_classification(model, classifier, loader, "cpu", amp=False)
    ranked = logits.topk(5, 1, True, True)[1].t()
    correct = ranked.eq(target.view(1, -1).expand_as(ranked))
    return {"acc1": correct[:1].reshape(-1).float().sum().item() / len(target),
            "acc5": correct[:5].reshape(-1).float().sum().item() / len(target),
            "mean_per_class_recall": balanced_accuracy_score(target, logits.argmax(axis=1))}


def test_clip_benchmark_export_gives_clip_benchmarks_own_accuracy(tiny_model_dirs, exported, capsys):
    root, classes = exported
    assert (root / "test" / "nshards.txt").read_text().strip() == "4"
    model_dir = tiny_model_dirs["open_clip_clip"]
    code, out, err = run_cli(capsys, "eval", *model_args(model_dir), "--dataset", f"wds:{root}", "--no-cache",
                             "--json")
    assert code == 0, err
    (record,) = json.loads(out)
    assert record["images"] == 80 and record["classes"] == 10 and record["num_prompts"] == 30  # its own templates
    theirs = clip_benchmark_scores(model_dir, root)
    assert record["top1"] == pytest.approx(theirs["acc1"], abs=1e-9)
    assert record["top5"] == pytest.approx(theirs["acc5"], abs=1e-9)
    assert record["mean_per_class_recall"] == pytest.approx(theirs["mean_per_class_recall"], abs=1e-9)


def test_webdataset_items_are_cached_and_sharded_like_files(loaded_models, exported, tmp_path):
    from pixprompt.data.datasets import load_dataset
    from pixprompt.evaluation import evaluate
    from pixprompt.prompts import resolve_templates

    root, _ = exported
    dataset = load_dataset(f"wds:{root}")
    assert dataset.images.describe(0).endswith(".jpg") and dataset.default_templates.endswith(".txt")
    model = loaded_models["open_clip_clip"]
    first = evaluate(model, dataset, resolve_templates("raw"), cache_root=tmp_path, workers=0)
    again = evaluate(model, load_dataset(f"wds:{root}"), resolve_templates("standard"), cache_root=tmp_path,
                     workers=0)
    assert first[0]["encoded_images"] == 80 and again[0]["encoded_images"] == 0


def test_broken_webdatasets_are_one_clear_line(exported, tmp_path, tiny_model_dirs, capsys):
    root, _ = exported
    (root / "test" / "3.tar").write_bytes(b"not a tar file")
    code, _, err = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset",
                           f"wds:{root}", "--quiet")
    assert code == 3 and "3.tar could not be read" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset",
                           f"wds:{tmp_path}", "--quiet")
    assert code == 3 and "is not a CLIP_benchmark webdataset" in err


def test_members_are_read_in_place_by_offset(exported):
    from pixprompt.data.datasets import load_dataset

    root, _ = exported
    dataset = load_dataset(f"wds:{root}")
    with tarfile.open(root / "test" / "0.tar") as tar:
        first = next(m for m in tar if m.name.endswith(".jpg"))
        original = tar.extractfile(first).read()
    assert dataset.images.load(0).tobytes() == Image.open(io.BytesIO(original)).convert("RGB").tobytes()
