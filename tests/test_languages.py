"""`--language XX`: ImageNet's class names and templates in other languages, from CLIP_benchmark's shipped files —
its own translations and Babel-ImageNet — equal to CLIP_benchmark's own multilingual classifier on the same model."""
from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch

from bad_inputs import write_photos
from cli_runner import model_args, run_cli
from pixprompt.data.classnames import IMAGENETTE_WNIDS, imagenet_wnids

FOLDERS = IMAGENETTE_WNIDS[:4]


def shipped(name: str):
    import clip_benchmark

    return json.loads(Path(os.path.dirname(clip_benchmark.__file__), "datasets", name).read_text())


@pytest.fixture()
def imagenet_val(tmp_path) -> Path:
    """Four ImageNet classes of four photos each, in ImageNet's val/<wnid>/ layout."""
    for number, wnid in enumerate(FOLDERS):
        write_photos(tmp_path / "val" / wnid, 4, (60 * number, 200 - 40 * number, 90), number)
    return tmp_path


def test_imagenet_in_italian_is_clip_benchmarks_names_and_templates(imagenet_val):
    from pixprompt.data.datasets import DatasetOptions, load_dataset
    from pixprompt.prompts import resolve_templates

    dataset = load_dataset("imagenet", DatasetOptions(str(imagenet_val), language="it"))
    assert dataset.classnames == shipped("it_classnames.json")["imagenet1k"] and dataset.language == "it"
    (prompt_set,) = resolve_templates(dataset.default_templates)
    theirs = shipped("it_zeroshot_classification_templates.json")["imagenet1k"]
    assert [t.format("un gatto") for t in prompt_set.templates] == [t.format(c="un gatto") for t in theirs]


def test_zero_shot_in_italian_equals_clip_benchmarks_own_run(tiny_model_dirs, imagenet_val, capsys):
    """CLIP_benchmark's zero_shot_classifier from its Italian names and templates, its run_classification over the
    same images with open_clip's preprocess: the same classifier, the same top-1."""
    import open_clip
    from clip_benchmark.metrics import zeroshot_classification
    from PIL import Image

    model_dir = tiny_model_dirs["open_clip_clip"]
    code, out, err = run_cli(capsys, "eval", *model_args(model_dir), "--dataset", "imagenette", "--data-dir",
                             imagenet_val / "val", "--language", "it", "--no-cache", "--json")
    assert code == 0, err
    (record,) = json.loads(out)
    assert record["language"] == "it" and record["templates"] == "imagenet-it" and record["images"] == 16

    model, _, preprocess = open_clip.create_model_and_transforms(f"local-dir:{model_dir}")
    tokenizer = open_clip.get_tokenizer(f"local-dir:{model_dir}")
    position = {wnid: i for i, wnid in enumerate(imagenet_wnids())}
    names = [shipped("it_classnames.json")["imagenet1k"][position[w]] for w in IMAGENETTE_WNIDS]
    templates = shipped("it_zeroshot_classification_templates.json")["imagenet1k"]
    classifier = zeroshot_classification.zero_shot_classifier(model.eval(), tokenizer, names, templates, "cpu",
                                                              amp=False)
    samples = [(preprocess(Image.open(path)), IMAGENETTE_WNIDS.index(wnid))
               for wnid in FOLDERS for path in sorted((imagenet_val / "val" / wnid).iterdir())]
    loader = torch.utils.data.DataLoader(samples, batch_size=8)
    logits, target = zeroshot_classification.run_classification(model, classifier, loader, "cpu", amp=False)
    assert record["top1"] == pytest.approx(float((logits.argmax(1) == target).double().mean()), abs=1e-9)

    from pixprompt import load_model
    from pixprompt.data.datasets import DatasetOptions, load_dataset
    from pixprompt.evaluation.scoring import text_classifier
    from pixprompt.prompts import resolve_templates

    dataset = load_dataset("imagenette", DatasetOptions(str(imagenet_val / "val"), language="it"))
    ours = text_classifier(load_model(str(model_dir), device="cpu"), dataset.classnames,
                           resolve_templates(dataset.default_templates)[0], None)
    assert torch.allclose(ours.weights, classifier.T.float(), atol=1e-5)


def test_babel_imagenet_keeps_the_classes_a_language_names(imagenet_val):
    """German is a Babel-ImageNet language: only the ImageNet classes it names stay, with their images, in order;
    its templates are CLIP_benchmark's NLLB translations."""
    from pixprompt.data.datasets import DatasetOptions, load_dataset
    from pixprompt.prompts import resolve_templates

    indices, names = shipped("babel_imagenet.json")["DE"]
    position = {wnid: i for i, wnid in enumerate(imagenet_wnids())}
    named = [w for w in IMAGENETTE_WNIDS if position[w] in indices]
    assert 0 < len(named) < len(IMAGENETTE_WNIDS)  # the test needs a language that names some, not all
    dataset = load_dataset("imagenette", DatasetOptions(str(imagenet_val / "val"), language="de"))
    assert dataset.wnids == named
    assert dataset.classnames == [names[indices.index(position[w])] for w in named]
    present = [w for w in FOLDERS if w in named]
    assert len(dataset) == 4 * len(present)
    assert sorted({dataset.wnids[label] for label in dataset.labels}) == sorted(present)
    for path, label in zip(dataset.images.paths, dataset.labels):
        assert path.parent.name == dataset.wnids[label]
    (prompt_set,) = resolve_templates(dataset.default_templates)
    german = shipped("nllb_dist13b_prompts.json")["DE"]
    assert [t.format("x") for t in prompt_set.templates] == [t.format("x") for t in german]
    assert f"of {len(IMAGENETTE_WNIDS)} classes named in de" in dataset.split


def test_language_refusals_name_the_way_out(tiny_model_dirs, colours, imagenet_val, capsys):
    args = ["eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--no-cache"]
    code, _, err = run_cli(capsys, *args, "--dataset", f"folder:{colours}", "--language", "it")
    assert code == 2 and "has no ImageNet classes" in err
    code, _, err = run_cli(capsys, *args, "--dataset", "imagenette", "--data-dir", imagenet_val / "val",
                           "--language", "klingon")
    assert code == 2 and "ImageNet's class names exist in ar, cn, it, jp" in err and ", de," in err
