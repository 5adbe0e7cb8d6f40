"""Real data's quirks (#34 part 4), each made for real: file names that are not UTF-8, webdataset members that are
links, folders or duplicates, metadata that would be truncated, games that cannot be scored, processor configs that
cannot work, probes and calibration on the test images, a folder planted where a cache file belongs, and templates
that push the class name out of the model's context."""
from __future__ import annotations

import csv
import io
import json
import os
import tarfile
from pathlib import Path

import numpy as np
import pytest

from bad_inputs import write_photos
from cli_runner import eval_args, model_args, run_cli, strict_json
from fake_datasets import webdataset, write_winogavil_table
from tiny_models import model_breaking_on


# -- names that are not UTF-8 --------------------------------------------------------------------------------
@pytest.fixture()
def byte_names(tmp_path) -> tuple[Path, list[bytes]]:
    """Photos named by bytes that are not UTF-8 (Latin-1 é and è: two names a lossy decoding makes one), one UTF-8
    name, one with a backslash, and a broken file of a non-UTF-8 name."""
    folder = tmp_path / "photos"
    (photo,) = write_photos(folder, 1, (200, 30, 30), 0)
    data = photo.read_bytes()
    photo.unlink()
    names = [b"caf\xe9.png", b"caf\xe8.png", "café.png".encode(), b"back\\slash.png", b"bro\xefken.png"]
    for name in names:
        with open(os.path.join(os.fsencode(folder), name), "wb") as out:
            out.write(data if b"bro" not in name else b"not an image")
    return folder, names


@pytest.mark.parametrize("form", ["jsonl", "csv", "parquet", "--json", "--csv"])
def test_names_that_are_not_utf8_stay_distinct_and_lossless_in_every_output(tiny_model_dirs, byte_names, tmp_path,
                                                                           capsys, form):
    from pixprompt.data.images import path_from_text

    folder, names = byte_names
    argv = ["classify", folder, *model_args(tiny_model_dirs["open_clip_clip"]), "--labels", "red,blue",
            "--no-cache", "--top-k", "1"]
    output = tmp_path / f"preds.{form}"
    code, out, err = run_cli(capsys, *argv, *([form] if form.startswith("--") else ["--output", output]))
    assert code == 1, err  # the broken file
    if form == "--json":
        rows = strict_json(out)
    elif form == "--csv":
        rows = list(csv.DictReader(io.StringIO(out)))
    elif form == "jsonl":
        rows = [strict_json(line) for line in output.read_text(encoding="utf-8").splitlines()]
    elif form == "csv":
        rows = list(csv.DictReader(output.open(encoding="utf-8")))
    else:
        import pyarrow.parquet as pq

        rows = pq.read_table(output).to_pylist()
    written = sorted(Path(row["image"]).name for row in rows)
    assert len(set(written)) == len(names) == len(rows), written
    assert sorted(path_from_text(name) for name in written) == sorted(names)
    assert {"caf\\xe9.png", "caf\\xe8.png", "café.png", "back\\\\slash.png"} <= set(written)


# -- webdataset members ----------------------------------------------------------------------------------------
def add_members(shard: Path, members: list[tarfile.TarInfo], data: dict[str, bytes]) -> None:
    with tarfile.open(shard, "a") as tar:
        for member in members:
            tar.addfile(member, io.BytesIO(data[member.name]) if member.name in data else None)


def test_webdataset_members_that_are_not_files_or_repeat_a_key_are_counted_and_named(tiny_model_dirs, tmp_path,
                                                                                     capsys):
    root = webdataset(tmp_path / "wds", ["cat", "dog"], [0, 1, 0, 1])
    shard = root / "test" / "0.tar"
    with tarfile.open(shard) as tar:
        picture = tar.extractfile("s000000.webp").read()
    link = tarfile.TarInfo("s000100.webp")
    link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
    hard = tarfile.TarInfo("s000101.webp")
    hard.type, hard.linkname = tarfile.LNKTYPE, "s000000.webp"
    folder = tarfile.TarInfo("s000102.webp")
    folder.type = tarfile.DIRTYPE
    twice = tarfile.TarInfo("s000001.webp")  # a second image under an existing sample's key
    twice.size = len(picture)
    labels = []
    for name in ("s000100.cls", "s000101.cls", "s000102.cls"):
        labels.append(tarfile.TarInfo(name))
        labels[-1].size = 1
    add_members(shard, [link, hard, folder, twice, *labels],
                {"s000001.webp": picture, **{m.name: b"0" for m in labels}})
    code, out, err = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset",
                             f"wds:{root}", "--templates", "raw", "--json", "--no-cache")
    assert code == 0, err
    (record,) = strict_json(out)
    assert record["images"] == 3 and record["skipped"] == 4
    assert sorted(name.rsplit(":", 1)[1] for name in record["skipped_files"]) == \
        ["s000001.webp", "s000100.webp", "s000101.webp", "s000102.webp"]
    from pixprompt.data.sources.webdataset import load_webdataset

    reasons = sorted(load_webdataset(str(root)).images.refused.values())
    assert reasons == ["s000100.webp in 0.tar is a symbolic link, not a regular file",
                       "s000101.webp in 0.tar is a hard link, not a regular file",
                       "s000102.webp in 0.tar is a folder, not a regular file",
                       "sample key 's000001' appears twice in 0.tar (two .webp members): which one is meant is unknown"]


@pytest.mark.parametrize(("values", "said"), [
    ([0.7, 1.0, 3], "holds float64 metadata, not integer group ids (region, year, y)"),
    ([True, False, True], "holds bool metadata, not integer group ids"),
    ([1, 2, 1], "'s y is 1 but its .cls says 0: the label and the metadata disagree"),
])
def test_group_metadata_that_would_be_misread_is_refused(tiny_model_dirs, tmp_path, capsys, values, said):
    from pixprompt.data.sources.webdataset import load_webdataset
    from pixprompt.errors import UnavailableError

    root = webdataset(tmp_path / "wds", ["cat", "dog"], [0, 1], metadata=[(0, 1, 0), (1, 2, 1)])
    shard = root / "test" / "0.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    vector = io.BytesIO()
    np.save(vector, np.array(values))
    with tarfile.open(shard, "w") as tar:
        for member, content in members:
            content = vector.getvalue() if member.name == "s000000.npy" else content
            member.size = len(content)
            tar.addfile(member, io.BytesIO(content))
    with pytest.raises(UnavailableError, match=said.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        load_webdataset(str(root), metadata=["region", "year", "y"])


# -- WinoGAViL -----------------------------------------------------------------------------------------------
def test_winogavil_games_with_a_repeated_candidate_or_none_scorable_are_refused(tiny_model_dirs, tmp_path):
    import datasets

    from pixprompt.data.datasets import DatasetOptions, load_dataset
    from pixprompt.errors import UnavailableError, UsageError
    from pixprompt.evaluation import evaluate
    from pixprompt.prompts import resolve_templates

    write_winogavil_table(tmp_path / "games")
    table = datasets.load_from_disk(str(tmp_path / "games"))
    repeated = table.map(lambda row, i: {"candidates": [row["candidates"][0], *row["candidates"][:-1]]
                                         if i == 2 else row["candidates"]}, with_indices=True)
    repeated.save_to_disk(str(tmp_path / "repeated"))
    with pytest.raises(UsageError, match="row 2 .* names candidate 'apple-0' twice"):
        load_dataset("datacomp/misc/winogavil", DatasetOptions(str(tmp_path / "repeated")))
    dataset = load_dataset("datacomp/misc/winogavil", DatasetOptions(str(tmp_path / "games")))
    # a model that breaks (NaN) on each game's first candidate, the one with green 90 (see GAMES' colours)
    green_90 = (90 / 255 - 0.4578275) / 0.26130258
    model = model_breaking_on(tiny_model_dirs["open_clip_clip"],
                              lambda pixels: (pixels[:, 1].mean(dim=(1, 2)) - green_90).abs() < 0.01)
    with pytest.raises(UnavailableError, match="no game of .* could be scored: each of its 6 games has a candidate"):
        evaluate(model, dataset, resolve_templates("raw"), cache_root=None, workers=0)


# -- NaFlex processor configs --------------------------------------------------------------------------------
@pytest.mark.parametrize(("change", "said"), [
    ({"patch_size": 0}, "its image processor cuts 0-pixel patches but the model embeds"),
    ({"max_num_patches": 10**9}, "its image processor's max_num_patches is 1000000000: give a whole number"),
    ({"max_num_patches": 0}, "max_num_patches is 0"),
])
def test_a_naflex_processor_that_cannot_work_is_a_model_error_before_any_image(tmp_path, colours, capsys, change,
                                                                              said):
    from tiny_models import make_transformers_siglip2_naflex

    folder = make_transformers_siglip2_naflex(tmp_path / "naflex")
    config_file = folder / "preprocessor_config.json"
    config = json.loads(config_file.read_text())
    config.update(change)
    config_file.write_text(json.dumps(config))
    code, out, err = run_cli(capsys, *eval_args(folder, colours, "--no-cache"))
    assert code == 3 and out == "" and said in err, err
    assert "could not read" not in err and "encoding" not in err


# -- few-shot and calibration on the test images -----------------------------------------------------------------
def test_a_probe_trained_on_its_test_images_is_refused(tiny_model_dirs, colours, tmp_path, capsys):
    args = ["probe", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset", f"folder:{colours}",
            "--templates", "raw", "--no-cache", "--shots", "1"]
    code, out, err = run_cli(capsys, *args, "--train-dataset", f"folder:{colours}")
    assert code == 2 and out == "" and "24 of the 24 training images are test images" in err
    train = tmp_path / "train"
    for name, colour in (("blue", (40, 40, 220)), ("green", (40, 200, 40)), ("red", (220, 40, 40))):
        write_photos(train / name, 2 if name != "red" else 0, colour, 5)
    (train / "red" / "broken.png").write_bytes(b"not an image")
    code, out, err = run_cli(capsys, *args, "--train-dataset", f"folder:{train}")
    assert code == 2 and "1 class(es) have no readable training image, e.g. 'red'" in err, err
    assert "converge" not in err


def test_calibrating_on_the_test_images_is_warned(tiny_model_dirs, colours, capsys):
    code, _, err = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--no-cache",
                                              "--calibrate", f"folder:{colours}"))
    assert code == 0 and "shares 24 of its 24 images with folder:colours: the temperature is fitted on" in err


# -- the cache -----------------------------------------------------------------------------------------------
def test_a_folder_where_a_cache_file_belongs_is_warned_and_recomputed(tiny_model_dirs, colours, tmp_path, capsys):
    args = eval_args(tiny_model_dirs["open_clip_clip"], colours, "--cache-dir", tmp_path)
    code, first, _ = run_cli(capsys, *args)
    assert code == 0
    planted = []
    for cached in [*tmp_path.rglob("chunk-*.safetensors"), *(tmp_path / "classifiers").glob("*.safetensors")]:
        cached.unlink()
        (cached / "keep.txt").parent.mkdir()
        (cached / "keep.txt").write_text("the user's")
        planted.append(cached)
    assert len(planted) == 2
    for _ in range(2):  # and on the run after
        code, again, err = run_cli(capsys, *args)
        assert code == 0, err
        assert "cannot be removed" in err and "the classifier is built and not cached" in err
        assert strict_json(again)[0]["top1"] == strict_json(first)[0]["top1"]
        assert strict_json(again)[0]["encoded_images"] == 24
    assert all((folder / "keep.txt").read_text() == "the user's" for folder in planted)


# -- templates longer than the context -----------------------------------------------------------------------
def test_a_template_that_pushes_the_class_name_out_is_refused(tiny_model_dirs, loaded_models, colours, tmp_path,
                                                             capsys):
    long_template = "a " * 80 + "photo of a {}."  # 85 tokens before the class name, under the web's 300 characters
    templates = tmp_path / "long.txt"
    templates.write_text(f"a photo of a {{}}.\n{long_template}\n")
    said = "takes 85 tokens before the class name and open_clip_clip reads 77: its tokenizer would cut the class name"
    model = model_args(tiny_model_dirs["open_clip_clip"])
    for argv in (eval_args(tiny_model_dirs["open_clip_clip"], colours, "--no-cache", "--templates", templates),
                 ["classify", colours, *model, "--labels", "red,blue", "--templates", templates, "--no-cache"]):
        code, out, err = run_cli(capsys, *argv)
        assert code == 2 and out == "" and said in err, err
    code, out, err = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--no-cache",
                                                "--templates", "standard"))
    assert code == 0  # a template that fits is taken as it is
    from fastapi.testclient import TestClient

    from pixprompt.web import create_app

    client = TestClient(create_app(loaded_models["open_clip_clip"], allow_hosts=["testserver"]))
    photo = ("files", ("photo.png", next(colours.rglob("*.png")).read_bytes(), "image/png"))
    response = client.post("/api/classify", data={"labels": "a,b", "templates": "custom",
                                                  "custom_templates": long_template}, files=[photo])
    assert response.status_code == 400 and "tokens before the class name" in response.json()["error"]
