"""Named datasets read from fakes of their published on-disk layouts (as torchvision's own dataset tests do)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from cli_runner import model_args, run_cli
from pixprompt.data.classnames import imagenet_wnids, shifted_wnids, wnid_names
from pixprompt.data.datasets import DatasetOptions, load_dataset
from pixprompt.errors import UsageError


def images_in(folder: Path, count: int = 2, colour: tuple[int, int, int] = (120, 60, 30)) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for number in range(count):
        Image.new("RGB", (40, 30), colour).save(folder / f"{number}.JPEG", format="JPEG")


@pytest.mark.parametrize("name", ["imagenet-a", "imagenet-r"])
def test_imagenet_a_and_r_are_scored_over_their_200_classes(name, tmp_path):
    wnids = shifted_wnids(name)
    for wnid in (wnids[0], wnids[57], wnids[-1]):  # a user may hold any part of the archive
        images_in(tmp_path / name / wnid)
    dataset = load_dataset(name, DatasetOptions(str(tmp_path)))
    assert len(dataset.classnames) == 200 and dataset.classnames == wnid_names(wnids)
    assert sorted(set(dataset.labels)) == [0, 57, 199] and dataset.wnids == list(wnids)
    outside = next(w for w in imagenet_wnids() if w not in wnids)
    images_in(tmp_path / name / outside)
    with pytest.raises(UsageError, match=f"{outside} are not {name} classes"):
        load_dataset(name, DatasetOptions(str(tmp_path)))


@pytest.mark.parametrize("name", ["imagenet-a", "imagenet-r"])
def test_the_shipped_200_class_lists_equal_clip_benchmarks(name):
    import clip_benchmark.datasets.builder as builder

    source = Path(builder.__file__).read_text()
    listed = re.search(name.replace("-", "_") + r"_wnids = [\[{](.*?)[\]}]", source).group(1)
    assert shifted_wnids(name) == tuple(sorted(re.findall(r"n\d{8}", listed)))


def test_imagenet_v2_reads_class_index_folders(tmp_path):
    root = tmp_path / "imagenetv2-matched-frequency-format-val"
    for index in (0, 5, 999):
        images_in(root / str(index))
    dataset = load_dataset("imagenet-v2", DatasetOptions(str(tmp_path)))
    assert len(dataset.classnames) == 1000 and sorted(set(dataset.labels)) == [0, 5, 999]
    assert dataset.classnames[5] == wnid_names([imagenet_wnids()[5]])[0]
    (root / "stray").mkdir()
    with pytest.raises(UsageError, match="class-index folders 0 … 999, not stray"):
        load_dataset("imagenet-v2", DatasetOptions(str(tmp_path)))


def test_imagenet_sketch_reads_wnid_folders(tmp_path):
    for wnid in imagenet_wnids()[:3]:
        images_in(tmp_path / "sketch" / wnid)
    dataset = load_dataset("imagenet-sketch", DatasetOptions(str(tmp_path)))
    assert len(dataset.classnames) == 1000 and len(dataset) == 6 and dataset.default_templates == "imagenet"


def test_eval_of_imagenet_r_records_200_classes(tiny_model_dirs, tmp_path, capsys):
    wnids = shifted_wnids("imagenet-r")
    for number, wnid in enumerate(wnids[:4]):
        images_in(tmp_path / "imagenet-r" / wnid, colour=(60 * number, 255 - 60 * number, 90))
    code, out, err = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset",
                             "imagenet-r", "--data-dir", tmp_path, "--templates", "raw", "--no-cache", "--json")
    assert code == 0, err
    (record,) = json.loads(out)
    assert record["dataset"] == "imagenet-r" and record["classes"] == 200 and record["images"] == 8


def test_objectnet_reads_its_overlapping_classes_as_clip_benchmark_does(tmp_path):
    from collections import Counter

    from clip_benchmark.datasets.objectnet import ObjectNetDataset

    from fake_datasets import objectnet

    written = objectnet(tmp_path)
    dataset = load_dataset("objectnet", DatasetOptions(str(tmp_path)))
    theirs = ObjectNetDataset(str(tmp_path), transform=None)
    assert dataset.classnames == theirs.classes == ["alarm clock", "backpack", "banana", "bench"]
    assert [str(p) for p in dataset.images.paths] == [path for path, _ in theirs.samples]
    assert dataset.labels == [theirs[i][1] for i in range(len(theirs))]
    assert Counter(dataset.classnames[label] for label in dataset.labels) == Counter(written)


def test_the_shipped_imagenet_names_are_open_clips():
    """`pixprompt datasets` reads ImageNet's names from pixprompt's data, without torch: the same 1000 open_clip has."""
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    from pixprompt.data.classnames import imagenet_classnames

    assert imagenet_classnames() == tuple(IMAGENET_CLASSNAMES) and len(imagenet_classnames()) == 1000
