"""Messy inputs, broken weights, full disks and interruptions never cost a user the run or its data."""
from __future__ import annotations

import json
import logging
import os
import random
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from bad_inputs import ODD_BUT_VALID, UNREADABLE, write_non_images, write_photos
from cli_runner import model_args, run_cli
from interruptions import ctrl_c_after
from pixprompt.data import images as image_files
from pixprompt.data.datasets import load_dataset
from pixprompt.evaluation.runs import evaluate
from pixprompt.prompts import resolve_templates

REASONS = {"zero-byte": "empty file", "truncated-jpeg": "(?i)truncated", "text-named-jpg": "cannot identify image",
           "dangling-link": "No such file", "decompression-bomb": "decompression bomb",
           "over-pixel-budget": "over the 64-megapixel decoding budget", "fifo": "named pipe"}
METRICS = ("top1", "top5", "mean_per_class_recall", "per_class_accuracy", "confusion_matrix")


# -- image files --------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", UNREADABLE)
def test_unreadable_images_are_refused_with_the_reason(tmp_path, kind):
    path = UNREADABLE[kind](tmp_path / kind)
    with pytest.raises(Exception, match=REASONS[kind]):
        image_files.open_rgb(path)


def test_a_file_without_read_permission_is_refused():
    """Checked in a forked child as an unprivileged user: root reads any file, so root's child becomes `nobody`."""
    folder = Path(tempfile.mkdtemp(prefix="pixprompt-perm-"))
    try:
        folder.chmod(0o755)
        path = ODD_BUT_VALID["one-pixel"](folder / "private")
        path.chmod(0)
        pid = os.fork()
        if pid == 0:  # the child only opens the file, then leaves without running any cleanup
            outcome = 2
            try:
                if os.geteuid() == 0:
                    os.setgid(65534)
                    os.setuid(65534)
                image_files.open_rgb(path)
                outcome = 1
            except PermissionError:
                outcome = 0
            finally:
                os._exit(outcome)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0  # 0: PermissionError, 1: it was read, 2: another error
    finally:
        shutil.rmtree(folder)


EXPECTED_VIEW = {  # what a viewer shows: (size, pixel probed, its RGB value)
    "png-alpha": ((40, 40), (5, 5), (255, 255, 255)),  # transparent → white page, not black
    "palette": ((40, 30), (5, 5), (10, 200, 10)),
    "greyscale": ((30, 40), (5, 5), (128, 128, 128)),
    "cmyk-jpeg": ((40, 40), (5, 5), (255, 0, 0)),
    "png-16-bit": ((30, 30), (5, 5), (255, 255, 255)),
    "tiff-16-bit-big-endian": ((30, 30), (5, 5), (128, 128, 128)),  # not white
    "tiff-float-0-1": ((30, 30), (5, 5), (128, 128, 128)),  # not black
    "exif-rotated": ((20, 60), (5, 5), (250, 250, 0)),  # rotation applied
    "animated-gif": ((30, 30), (5, 5), (255, 0, 0)),  # first frame
    "one-pixel": ((1, 1), (0, 0), (90, 90, 90)),
}


@pytest.mark.parametrize("kind", ODD_BUT_VALID)
def test_odd_images_decode_as_a_viewer_shows_them(tmp_path, loaded_models, kind):
    image = image_files.open_rgb(ODD_BUT_VALID[kind](tmp_path / kind))
    size, probe, colour = EXPECTED_VIEW[kind]
    assert image.mode == "RGB" and image.size == size
    assert all(abs(a - b) <= 3 for a, b in zip(image.getpixel(probe), colour))
    model = loaded_models["open_clip_clip"]
    features = model.encode_images(model.preprocess(image)[None])
    assert features.shape == (1, 32) and torch.isfinite(features).all()


def test_symlink_loops_end_and_non_images_are_listed_with_verbose(tmp_path, caplog):
    photos = write_photos(tmp_path / "cats", 2, (200, 50, 50), seed=0)
    (tmp_path / "cats" / "loop").symlink_to(tmp_path)
    ignored = write_non_images(tmp_path / "cats")
    with caplog.at_level(logging.INFO, logger="pixprompt"):
        found = image_files.walk_images(tmp_path)
    assert sorted(found) == sorted(photos)
    assert all(str(file) in caplog.text for file in ignored)


# -- datasets with bad images ----------------------------------------------------------------------------
@pytest.fixture()
def messy_folder(tmp_path):
    """Two classes of photos, with every unreadable kind, every odd kind and some non-image files mixed in."""
    root = tmp_path / "messy"
    write_photos(root / "red", 6, (220, 40, 40), seed=1)
    write_photos(root / "blue", 6, (40, 40, 220), seed=2)
    for kind, build in UNREADABLE.items():
        build(root / "red" / f"bad-{kind}")
    for kind, build in ODD_BUT_VALID.items():
        build(root / "blue" / f"odd-{kind}")
    write_non_images(root / "blue")
    return root


def test_eval_skips_bad_images_with_one_line_each_and_records_them(tiny_model_dirs, messy_folder, capsys):
    code, out, err = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--no-cache",
                             "--dataset", f"folder:{messy_folder}", "--templates", "raw", "--json")
    (record,) = json.loads(out)
    assert code == 0
    assert record["skipped"] == len(UNREADABLE) and record["images"] == 12 + len(ODD_BUT_VALID)
    assert sorted(f.rsplit("/", 1)[-1].split(".")[0] for f in record["skipped_files"]) == \
        sorted(f"bad-{kind}" for kind in UNREADABLE)
    warnings = [line for line in err.splitlines() if line.startswith("pixprompt: WARNING: skipped")]
    assert len(warnings) == len(UNREADABLE)
    assert all(kind in " ".join(warnings) for kind in UNREADABLE)


def test_strict_turns_a_skipped_image_into_an_error(tiny_model_dirs, messy_folder, capsys):
    code, out, err = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--quiet",
                             "--no-cache", "--dataset", f"folder:{messy_folder}", "--templates", "raw", "--strict")
    assert code == 1 and out == ""
    assert err.startswith(f"pixprompt: error: {len(UNREADABLE)} image(s) could not be read (--strict)")
    assert len(err.strip().splitlines()) == 1


def test_classify_gives_error_rows_for_exactly_the_unreadable_files(tiny_model_dirs, messy_folder, capsys):
    code, out, _ = run_cli(capsys, "classify", messy_folder, *model_args(tiny_model_dirs["transformers_clip"]),
                           "--labels", "red,blue", "--json", "--quiet")
    rows = json.loads(out)
    failed = {row["image"].rsplit("/", 1)[-1].split(".")[0] for row in rows if row.get("error")}
    assert code == 1
    assert failed == {f"bad-{kind}" for kind in UNREADABLE}
    assert len(rows) == 12 + len(UNREADABLE) + len(ODD_BUT_VALID)


def test_non_image_files_are_listed_only_with_verbose(tiny_model_dirs, messy_folder, capsys):
    args = ["eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--no-cache", "--dataset",
            f"folder:{messy_folder}", "--templates", "raw", "--json"]
    assert "notes.txt" not in run_cli(capsys, *args)[2]
    assert "ignored 3 file(s) without an image extension" in run_cli(capsys, *args, "--verbose")[2]


# -- labels, templates, datasets: one-line errors --------------------------------------------------------
@pytest.mark.parametrize(("setup", "argv", "text"), [
    (None, ["--labels", ""], "no class names given"),
    ("labels.txt:\n \n", ["--labels-file", "{file}"], "no class names given"),
    (None, ["--labels", "cat,dog,cat,bird,dog"], "duplicate class names: 'cat', 'dog'"),
    (None, ["--labels", "cat, ,dog"], "class name number 2 is empty or only whitespace"),
    ("templates.txt:a photo of a cat\n", ["--labels", "cat,dog", "--templates", "{file}"], "{}"),
    ("templates.txt:", ["--labels", "cat,dog", "--templates", "{file}"], "no templates"),
    ("labels.txt:caf\xe9\n", ["--labels-file", "{file}"], "is not UTF-8 text"),
])
def test_bad_labels_and_templates_are_one_line_usage_errors(tiny_model_dirs, messy_folder, tmp_path, capsys,
                                                           setup, argv, text):
    if setup:
        name, content = setup.split(":", 1)
        (tmp_path / name).write_bytes(content.encode("latin-1"))
        argv = [a.replace("{file}", str(tmp_path / name)) for a in argv]
    code, out, err = run_cli(capsys, "classify", messy_folder / "red", *model_args(tiny_model_dirs["open_clip_clip"]),
                             *argv)
    assert code == 2 and out == ""
    assert text in err and len(err.strip().splitlines()) == 1


def write_csv(path, rows: list[str]) -> str:
    path.write_text("\n".join(rows) + "\n")
    return f"csv:{path}"


@pytest.mark.parametrize(("make", "code", "text"), [
    (lambda t: (t / "empty").mkdir() or f"folder:{t / 'empty'}", 2, "has no class sub-folders"),
    (lambda t: write_photos(t / "one" / "cat", 2, (9, 9, 9), 0) and f"folder:{t / 'one'}", 2, "only one class"),
    (lambda t: write_csv(t / "a.csv", ["file,class", "x.png,cat"]), 2, "lacks column(s) label, path"),
    (lambda t: write_csv(t / "b.csv", ["path,label", *[f"gone{i}.png,cat" for i in range(5)]]), 2,
     "5 image path(s) do not exist"),
    (lambda t: f"folder:{t / 'nowhere'}", 3, "does not exist"),
])
def test_dataset_problems_are_one_line_errors(tiny_model_dirs, tmp_path, capsys, make, code, text):
    spec = make(tmp_path)
    result, out, err = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--no-cache",
                               "--dataset", spec)
    assert result == code and text in err and len(err.strip().splitlines()) == 1


def test_class_folders_without_images_are_warned_about_and_kept(tmp_path, caplog):
    write_photos(tmp_path / "cat", 2, (9, 9, 9), 0)
    write_photos(tmp_path / "dog", 2, (99, 9, 9), 0)
    (tmp_path / "bird").mkdir()
    dataset = load_dataset(f"folder:{tmp_path}")
    assert dataset.classnames == ["bird", "cat", "dog"] and len(dataset) == 4
    assert "1 class folder(s) hold no images: bird" in caplog.text


# -- models -----------------------------------------------------------------------------------------------
def damaged_copy(source, target, weights_file):
    shutil.copytree(source, target)
    (target / weights_file).write_bytes((target / weights_file).read_bytes()[:200])
    return target


def mismatched_copy(source, target, config_file, edit):
    shutil.copytree(source, target)
    config = json.loads((target / config_file).read_text())
    edit(config)
    (target / config_file).write_text(json.dumps(config))
    return target


@pytest.mark.parametrize(("name", "weights", "config", "widen"), [
    ("open_clip_clip", "open_clip_model.safetensors", "open_clip_config.json",
     lambda c: c["model_cfg"]["vision_cfg"].update(width=96)),
    ("transformers_clip", "model.safetensors", "config.json", lambda c: c["vision_config"].update(hidden_size=96)),
])
def test_damaged_or_mismatched_weights_are_one_clear_line(tiny_model_dirs, tmp_path, capsys, name, weights,
                                                          config, widen):
    damaged = damaged_copy(tiny_model_dirs[name], tmp_path / "damaged", weights)
    code, _, err = run_cli(capsys, "classify", damaged / weights, "--model", damaged, "--labels", "a,b")
    assert code == 3 and "is damaged or not a checkpoint" in err
    assert err.strip().splitlines() == ["pixprompt: loading damaged (local folder) on cpu…",
                                        err.strip().splitlines()[1]]
    mismatched = mismatched_copy(tiny_model_dirs[name], tmp_path / "mismatched", config, widen)
    code, _, err = run_cli(capsys, "classify", damaged / weights, "--model", mismatched, "--labels", "a,b", "--quiet")
    assert code == 3 and "do not fit" in err and "different models" in err
    assert len(err.strip().splitlines()) == 1


# -- resources ------------------------------------------------------------------------------------------------
def test_ctrl_c_keeps_finished_chunks_and_the_next_run_says_what_it_found(tiny_model_dirs, messy_folder, tmp_path,
                                                                        capsys, monkeypatch):
    args = ["eval", "--model", tiny_model_dirs["open_clip_clip"], "--device", "cpu", "--workers", "0",
            "--batch-size", "4", "--cache-dir", tmp_path / "cache", "--dataset", f"folder:{messy_folder}",
            "--templates", "raw", "--json"]
    with ctrl_c_after(monkeypatch, 2):
        code, out, err = run_cli(capsys, *args)
    assert code == 130 and out == ""
    assert "interrupted after 8 of 29 images: the features of the 8 encoded in this run are kept in the cache" in err
    code, out, err = run_cli(capsys, *args)
    total = 12 + len(UNREADABLE) + len(ODD_BUT_VALID)
    assert code == 0 and f"encoding {total - 8} of {total} images (8 found in the cache)" in err


# -- soak ---------------------------------------------------------------------------------------------------
def test_soak_interrupted_twice_resumes_to_the_clean_result(loaded_models, tmp_path, monkeypatch):
    """A few hundred images with every bad kind mixed in, stopped twice at random batches and resumed,
    gives exactly the metrics of one clean run over the good images alone."""
    clean_root, messy_root = tmp_path / "clean", tmp_path / "messy"
    colours = {"red": (220, 40, 40), "green": (40, 200, 40), "blue": (40, 40, 220), "grey": (128, 128, 128)}
    for seed, (name, colour) in enumerate(colours.items()):
        write_photos(clean_root / name, 60, colour, seed)
        for kind, build in ODD_BUT_VALID.items():
            build(clean_root / name / f"odd-{kind}")
    shutil.copytree(clean_root, messy_root, symlinks=True)
    for name in colours:
        for kind, build in UNREADABLE.items():
            build(messy_root / name / f"bad-{kind}")
        write_non_images(messy_root / name)
    (messy_root / "red" / "loop").symlink_to(messy_root)

    model = loaded_models["open_clip_clip"]
    prompt_sets = resolve_templates("raw,standard")
    clean = evaluate(model, load_dataset(f"folder:{clean_root}"), prompt_sets, cache_root=None, batch_size=16,
                     workers=0)

    rng = random.Random(7)
    messy = load_dataset(f"folder:{messy_root}")
    total_batches = -(-len(messy) // 16)
    for _ in range(2):
        with ctrl_c_after(monkeypatch, rng.randrange(1, total_batches // 2)), pytest.raises(KeyboardInterrupt):
            evaluate(model, messy, prompt_sets, cache_root=tmp_path / "cache", batch_size=16, workers=0)
    resumed = evaluate(model, load_dataset(f"folder:{messy_root}"), prompt_sets, cache_root=tmp_path / "cache",
                       batch_size=16, workers=0)
    for before, after in zip(clean, resumed):
        assert after["cached_images"] > 0 and after["skipped"] == 4 * len(UNREADABLE)
        assert all(after[k] == before[k] for k in METRICS)
