"""Real resource limits (#11): a tmpfs really full, RLIMIT_FSIZE in a subprocess, bounded memory per image."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from bad_inputs import elongated_png, over_pixel_budget
from cli_runner import eval_args, model_args, run_cli

METRICS = ("top1", "top5", "mean_per_class_recall", "per_class_accuracy", "confusion_matrix")


# -- 2. a real full disk --------------------------------------------------------------------------------------
@pytest.fixture()
def full_disk(tmp_path):
    """A 1 MB tmpfs filled to the last byte: writes there fail as on a real full disk."""
    mount = tmp_path / "full-disk"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({result.stderr.decode().strip()}); needs root")
    try:
        filler = os.open(mount / "filler", os.O_WRONLY | os.O_CREAT)
        try:
            while os.write(filler, b"\0" * 4096):
                pass
        except OSError:  # ENOSPC: full to the last page
            pass
        finally:
            os.close(filler)
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_real_full_disk_costs_only_the_caching(tiny_model_dirs, colours, full_disk, capsys):
    model = tiny_model_dirs["open_clip_clip"]
    code, clean, _ = run_cli(capsys, *eval_args(model, colours, "--no-cache", "--batch-size", "4"))
    assert code == 0
    for attempt in range(2):  # a rerun on the still-full disk is as good
        code, out, err = run_cli(capsys, *eval_args(model, colours, "--cache-dir", full_disk / "cache",
                                                    "--batch-size", "4"))
        assert code == 0, err
        assert all(json.loads(out)[0][k] == json.loads(clean)[0][k] for k in METRICS)
        assert err.count("No space left on device") == (1 if attempt == 0 else 0)
        assert not list(full_disk.rglob("*.partial")) and not list(full_disk.rglob("chunk-*"))


def test_a_classifier_file_on_a_full_disk_is_only_not_saved(tiny_model_dirs, colours, full_disk, capsys):
    args = ["classify", colours / "red", *model_args(tiny_model_dirs["transformers_clip"]), "--labels", "red,blue",
            "--templates", "clip80", "--classifier", full_disk / "pets.safetensors", "--json"]
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and len(json.loads(out)) == 8
    assert "could not write cache file" in err and "No space left on device" in err
    assert not list(full_disk.glob("pets*")) and not list(full_disk.glob(".pets*"))


def test_results_survive_an_output_file_on_a_full_disk(tiny_model_dirs, colours, full_disk, capsys, monkeypatch):
    from pixprompt.models.catalog import _library_version, shipped_catalog

    code, out, err = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--no-cache",
                                                "--output", full_disk / "results.json"))
    assert code == 1 and json.loads(out)[0]["images"] == 24  # the results reached stdout first
    assert err.strip().splitlines()[-1] == f"pixprompt: error: could not write {full_disk / 'results.json'}: " \
                                           "No space left on device"
    monkeypatch.setenv("PIXPROMPT_CACHE", str(full_disk / "cache"))
    code, out, err = run_cli(capsys, "models", "--filter", "ViT-B-32-256", "--json")
    assert code == 0 and json.loads(out)  # the listing needs no cache (another open_clip: it warns it cannot keep it)
    assert shipped_catalog()["open_clip_version"] == _library_version("open_clip_torch") \
        or "No space left on device" in err


def test_file_size_limit_in_a_subprocess_costs_only_the_caching(tiny_model_dirs, colours, tmp_path):
    """The same with RLIMIT_FSIZE (no root needed): the kernel refuses writes past 2 KB with EFBIG."""
    script = ("import resource, signal, sys\n"
              "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)\n"
              "resource.setrlimit(resource.RLIMIT_FSIZE, (2048, 2048))\n"
              "from pixprompt.cli import main\n"
              "sys.exit(main(sys.argv[1:]))\n")
    args = [str(a) for a in eval_args(tiny_model_dirs["open_clip_clip"], colours, "--cache-dir", tmp_path / "c")]
    result = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["images"] == 24
    assert "File too large" in result.stderr and not list((tmp_path / "c").rglob("*.partial"))


# -- 3. bounded memory per image --------------------------------------------------------------------------------
def test_elongated_images_preprocess_like_open_clip_without_the_full_resize():
    import open_clip

    from pixprompt.models.preprocessing import bounded

    reference = open_clip.image_transform(224, is_train=False)
    fused = bounded(reference)
    rng = np.random.default_rng(0)
    for width, height in [(3, 900), (900, 3), (17, 2500), (2500, 40), (1, 700)]:
        image = Image.fromarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8))
        expected, got = reference(image), fused(image)
        levels = ((expected - got).abs() * 0.27 * 255).max()  # normalised back to 0..255 levels (std ≥ 0.26)
        assert got.shape == (3, 224, 224) and levels <= 2.01
        cosine = torch.nn.functional.cosine_similarity(expected.flatten(), got.flatten(), dim=0)
        assert cosine > 0.9999


def _peak_rss_mb(image_path: Path) -> float:
    script = ("import resource, sys, open_clip\n"
              "from pixprompt.data.images import open_rgb\n"
              "from pixprompt.models.preprocessing import bounded\n"
              "transform = bounded(open_clip.image_transform(224, is_train=False))\n"
              "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
              "assert transform(open_rgb(sys.argv[1])).shape == (3, 224, 224)\n"
              "print((resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024)\n")
    result = subprocess.run([sys.executable, "-c", script, str(image_path)], capture_output=True, text=True,
                            timeout=300, check=True)
    return float(result.stdout.strip().splitlines()[-1])


def test_an_elongated_png_costs_no_more_than_a_photo(tmp_path):
    photo = tmp_path / "photo.jpg"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (3000, 4000, 3), dtype=np.uint8)).save(photo)
    needle = elongated_png(tmp_path / "needle", 1, 60000)
    assert needle.stat().st_size < 2000
    assert _peak_rss_mb(needle) < max(50.0, 2 * _peak_rss_mb(photo))  # the full resize would take ~10 GB


def test_transformers_models_skip_elongated_images_with_a_message(tiny_model_dirs, tmp_path, capsys):
    elongated_png(tmp_path / "needle", 1, 60000)
    code, out, _ = run_cli(capsys, "classify", tmp_path / "needle.png",
                           *model_args(tiny_model_dirs["transformers_clip"]), "--labels", "a,b", "--json")
    assert code == 1 and "too elongated for this model's preprocessing" in json.loads(out)[0]["error"]


def test_the_pixel_budget_skips_before_decoding_and_is_not_remembered(tiny_model_dirs, colours, tmp_path, capsys):
    over_pixel_budget(colours / "red" / "huge")
    args = eval_args(tiny_model_dirs["open_clip_clip"], colours, "--cache-dir", tmp_path / "cache")
    code, out, err = run_cli(capsys, *args)
    assert code == 0 and json.loads(out)[0]["skipped"] == 1
    assert "huge.jpg: 11000×11000 is 121 megapixels, over the 64-megapixel decoding budget (raise it with " \
           "--max-pixels)" in err
    code, out, err = run_cli(capsys, *args, "--max-pixels", "130M")  # retried: libjpeg fills the missing data grey
    assert code == 0 and "decoding budget" not in err and json.loads(out)[0]["skipped"] == 0
