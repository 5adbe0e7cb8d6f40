"""Hardening (#11): replaced and damaged files, SIGKILL, failing before the work, the bad-input table.

Every fault here is produced for real: a process really killed, bytes really flipped on disk."""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from PIL import Image

from bad_inputs import write_photos
from cli_runner import eval_args, model_args, run_cli
from pixprompt.data.datasets import DatasetOptions, load_dataset
from pixprompt.prompts import resolve_templates


# -- 4. never stale or damaged ------------------------------------------------------------------------------------
def test_replaced_weights_at_the_same_path_are_not_served_from_the_cache(tiny_model_dirs, colours, tmp_path, capsys):
    from tiny_models import make_open_clip_clip

    model = shutil.copytree(tiny_model_dirs["open_clip_clip"], tmp_path / "model")
    args = eval_args(model, colours, "--cache-dir", tmp_path / "cache")
    assert run_cli(capsys, *args)[0] == 0
    weights = model / "open_clip_model.safetensors"
    size = weights.stat().st_size
    torch.manual_seed(1)
    retrained = make_open_clip_clip(tmp_path / "retrained")
    shutil.copyfile(retrained / "open_clip_model.safetensors", weights)  # same size, other values
    assert weights.stat().st_size == size
    code, out, _ = run_cli(capsys, *args)
    (record,) = json.loads(out)
    _, fresh, _ = run_cli(capsys, *eval_args(model, colours, "--no-cache"))
    assert code == 0 and record["cached_images"] == 0 and record["top1"] == json.loads(fresh)[0]["top1"]


def test_a_checkpoint_file_stamps_the_cache(tmp_path):
    from pixprompt.models.registry import local_weights_stamp

    checkpoint = tmp_path / "ckpt.safetensors"
    checkpoint.write_bytes(b"a" * 64)
    before = local_weights_stamp("ViT-B-32", str(checkpoint))
    checkpoint.write_bytes(b"b" * 64)
    os.utime(checkpoint, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert before and local_weights_stamp("ViT-B-32", str(checkpoint)) != before
    assert local_weights_stamp("ViT-B-32", "openai") == ""  # a tag: the Hub's file, not stamped


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01
    path.write_bytes(bytes(data))


def test_flipped_bytes_in_cached_features_and_classifiers_are_caught(tiny_model_dirs, colours, tmp_path, capsys):
    args = eval_args(tiny_model_dirs["open_clip_clip"], colours, "--cache-dir", tmp_path / "cache")
    code, clean, _ = run_cli(capsys, *args)
    (chunk,) = (tmp_path / "cache").rglob("chunk-*.safetensors")
    (classifier,) = (tmp_path / "cache" / "classifiers").glob("*.safetensors")
    flip_last_byte(chunk)
    flip_last_byte(classifier)
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and json.loads(out)[0]["top1"] == json.loads(clean)[0]["top1"]
    assert json.loads(out)[0]["cached_images"] == 0
    assert "removing damaged cache chunk" in err and "checksum does not match" in err
    assert "is damaged: its checksum is missing or does not match its contents; rebuilding it" in err
    classifier.write_bytes(classifier.read_bytes()[:100])  # truncated
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and "is not a pixprompt classifier file" in err and "rebuilding it" in err
    code, _, err = run_cli(capsys, *args)
    assert code == 0 and "rebuilding" not in err and "damaged" not in err


def test_io_failures_are_retried_and_decode_failures_remembered(tiny_model_dirs, colours, tmp_path, capsys):
    target = tmp_path / "later.png"
    (colours / "red" / "link.png").symlink_to(target)  # a file that is not there (yet)
    (colours / "red" / "broken.jpg").write_bytes(b"not an image")
    args = eval_args(tiny_model_dirs["open_clip_clip"], colours, "--cache-dir", tmp_path / "cache")
    code, out, err = run_cli(capsys, *args)
    assert json.loads(out)[0]["skipped"] == 2 and "No such file" in err
    Image.new("RGB", (20, 20), (200, 30, 30)).save(target)
    code, out, err = run_cli(capsys, *args)
    (record,) = json.loads(out)
    assert record["skipped"] == 1 and record["encoded_images"] == 1  # the link's target, now there
    assert "broken.jpg: UnidentifiedImageError" in err and "remembered from an earlier run" in err


def test_partials_left_by_a_killed_writer_are_removed(tmp_path):
    from pixprompt.storage import atomic_path, remove_stale_partials

    folder = tmp_path / "chunks"
    script = ("import sys, time\n"
              "from pixprompt.storage import atomic_path\n"
              "with atomic_path(sys.argv[1]) as tmp:\n"
              "    tmp.write_bytes(b'half a chunk')\n"
              "    print('writing', flush=True)\n"
              "    time.sleep(60)\n")
    writer = subprocess.Popen([sys.executable, "-c", script, str(folder / "chunk-1.safetensors")],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "writing"
    with atomic_path(folder / "chunk-2.safetensors"):  # this live process's partial must survive
        assert remove_stale_partials(folder) == 0  # the writer still runs
        writer.send_signal(signal.SIGKILL)
        writer.wait(10)
        assert len(list(folder.glob(".*.partial"))) == 2
        assert remove_stale_partials(folder) == 1
        assert [p.name.startswith(".chunk-2") for p in folder.glob(".*.partial")] == [True]


def test_a_subset_shares_the_whole_datasets_cache(tiny_model_dirs, colours, tmp_path, capsys):
    args = eval_args(tiny_model_dirs["open_clip_clip"], colours, "--cache-dir", tmp_path / "cache")
    assert run_cli(capsys, *args, "--max-images", "10")[0] == 0
    code, out, _ = run_cli(capsys, *args)
    assert json.loads(out)[0]["cached_images"] == 10 and json.loads(out)[0]["encoded_images"] == 14


# -- 5. fail before the work -------------------------------------------------------------------------------------
@pytest.mark.parametrize(("extra", "text"), [
    (["--output", "res.txt"], "--output res.txt: use a .json, .csv or .md file name"),
    (["--output", "/no/such/dir/x.json"], "folder /no/such/dir does not exist"),
    (["--report", "/no/such/dir/r.html"], "folder /no/such/dir does not exist"),
    (["--report", "r.pdf"], "use a .html or .htm file name"),
])
def test_bad_output_paths_are_refused_before_the_model_loads(colours, capsys, extra, text):
    started = time.perf_counter()
    code, out, err = run_cli(capsys, *eval_args("/no/such/model", colours, *extra))
    assert code == 2 and text in err and time.perf_counter() - started < 2  # a model load would be exit 3


def test_serve_refuses_a_bad_or_busy_port_before_the_model_loads(capsys):
    with pytest.raises(SystemExit) as stop:
        run_cli(capsys, "serve", "--model", "/no/such/model", "--port", "99999")
    assert stop.value.code == 2 and "not a TCP port" in capsys.readouterr().err
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        code, _, err = run_cli(capsys, "serve", "--model", "/no/such/model", "--port", busy.getsockname()[1])
    assert code == 2 and "cannot listen on 127.0.0.1" in err


# -- 6. the rest of the bad-input table ------------------------------------------------------------------------------
@pytest.mark.parametrize("argv", [["--max-images", "0"], ["--max-images", "-3"], ["--batch-size", "0"],
                                  ["--workers", "-1"], ["--max-pixels", "lots"]])
def test_out_of_range_numbers_are_usage_errors(colours, capsys, argv):
    with pytest.raises(SystemExit) as stop:
        run_cli(capsys, *eval_args("/no/such/model", colours, *argv))
    assert stop.value.code == 2 and "Traceback" not in capsys.readouterr().err


def test_top_k_below_one_is_a_usage_error(colours, capsys):
    with pytest.raises(SystemExit) as stop:
        run_cli(capsys, "classify", colours, "--model", "/no/such/model", "--labels", "a,b", "--top-k", "0")
    assert stop.value.code == 2


def test_a_csv_row_without_a_label_names_its_line(tiny_model_dirs, colours, tmp_path, capsys):
    table = tmp_path / "data.csv"
    table.write_text(f"path,label\n{colours}/red/photo-000.png,red\n{colours}/blue/photo-000.png\n")
    code, _, err = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours)[:-5], "--dataset",
                           f"csv:{table}")
    assert code == 2 and "line 3: no label" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("make", [lambda folder: None, lambda folder: (folder / "part-0.parquet").write_bytes(b"")])
def test_hf_folders_without_data_are_one_clear_line(tiny_model_dirs, tmp_path, capsys, make):
    folder = tmp_path / "hf"
    folder.mkdir()
    make(folder)
    code, _, err = run_cli(capsys, "eval", *model_args(tiny_model_dirs["open_clip_clip"]), "--dataset", f"hf:{folder}")
    assert code == 3 and f"hf dataset {folder}" in err and len(err.strip().splitlines()) == 1


def test_cifar100_from_a_partial_folder_keeps_all_100_classes(tmp_path):
    for seed, name in enumerate(("apple", "willow_tree")):
        write_photos(tmp_path / name, 2, (50 * seed, 90, 90), seed)
    dataset = load_dataset("cifar100", DatasetOptions(str(tmp_path)))
    assert len(dataset.classnames) == 100 and dataset.classnames[96] == "willow tree"
    assert sorted(set(dataset.labels)) == [0, 96]


def test_library_warnings_obey_quiet(tiny_model_dirs, colours, capsys):
    exif = Image.Exif()
    exif[0x0112] = 6
    bad = colours / "red" / "bad-exif.jpg"
    Image.new("RGB", (30, 20)).save(bad, exif=exif.tobytes()[:-4])  # an EXIF block cut short
    code, _, noisy = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--no-cache"))
    code, _, quiet = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--no-cache", "--quiet"))
    assert code == 0 and "Corrupt EXIF data" in noisy and quiet == ""


def test_a_fifo_is_named_as_one_and_never_blocks(tiny_model_dirs, colours, capsys):
    os.mkfifo(colours / "red" / "pipe.jpg")
    code, out, err = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--no-cache"))
    assert code == 0 and "pipe.jpg: a named pipe (FIFO), not an image file" in err


def test_indented_comment_lines_are_not_templates(tmp_path):

    (tmp_path / "t.txt").write_text("  # a note about {}\na photo of a {}.\n\t# another {}\n")
    (prompt_set,) = resolve_templates(str(tmp_path / "t.txt"))
    assert prompt_set.templates == ("a photo of a {}.",)


def test_one_class_with_softmax_is_warned_about(tiny_model_dirs, colours, capsys):
    code, _, err = run_cli(capsys, "classify", colours / "red", *model_args(tiny_model_dirs["open_clip_clip"]),
                           "--labels", "cat", "--json")
    assert code == 0 and "only one class (cat)" in err
    code, _, err = run_cli(capsys, "classify", colours / "red", *model_args(tiny_model_dirs["open_clip_siglip"]),
                           "--labels", "cat", "--json")
    assert code == 0 and "only one class" not in err  # a sigmoid scores each class on its own


def test_a_class_folder_linking_to_a_sibling_is_warned_about(colours, caplog):
    (colours / "red" / "also-green").symlink_to(colours / "green")
    load_dataset(f"folder:{colours}")
    assert "8 image(s) are counted in two classes through links" in caplog.text


# -- #12 item 4: files any tool would write; --pretrained where it cannot apply ------------------------------------
def test_written_files_honour_the_umask(tiny_model_dirs, colours, tmp_path, capsys):
    previous = os.umask(0o022)
    try:
        code, _, _ = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--cache-dir",
                                                tmp_path / "cache", "--output", tmp_path / "r.json", "--report",
                                                tmp_path / "r.html"))
    finally:
        os.umask(previous)
    assert code == 0
    written = [tmp_path / "r.json", tmp_path / "r.html", *(tmp_path / "r_figures").glob("*.png"),
               *(tmp_path / "cache").rglob("*.safetensors")]
    assert len(written) > 4 and {oct(p.stat().st_mode & 0o777) for p in written} == {"0o644"}


def test_pretrained_with_a_model_folder_is_refused(tiny_model_dirs, colours, capsys):
    code, _, err = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--pretrained", "openai"))
    assert code == 2 and "does not apply to local-dir:" in err
