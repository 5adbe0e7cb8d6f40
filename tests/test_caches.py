"""The caches README promises: an image file's features found by the file whichever command or dataset spec
reached it, classifiers kept by classify as by eval, and messages that say what happened."""
from __future__ import annotations

import json

import pytest

from bad_inputs import write_photos
from cli_runner import model_args, run_cli
from pixprompt.data.classnames import IMAGENETTE_WNIDS


@pytest.fixture()
def imagenette_layout(tmp_path):
    """Imagenette's val layout (one folder per WordNet id), two small photos in each."""
    root = tmp_path / "imagenette-val"
    for seed, wnid in enumerate(IMAGENETTE_WNIDS):
        write_photos(root / wnid, 2, (20 * seed, 200 - 15 * seed, 120), seed)
    return root


def test_one_image_file_is_encoded_once_whichever_command_or_spec_reaches_it(tiny_model_dirs, imagenette_layout,
                                                                              tmp_path, capsys):
    common = [*model_args(tiny_model_dirs["open_clip_clip"]), "--cache-dir", tmp_path / "cache"]

    def evaluated(spec: str) -> dict:
        code, out, _ = run_cli(capsys, "eval", *common, "--dataset", spec, "--data-dir", imagenette_layout,
                               "--templates", "raw", "--json")
        assert code == 0
        return json.loads(out)[0]

    first = evaluated("imagenette")
    assert (first["encoded_images"], first["cached_images"]) == (20, 0)
    again = evaluated("imagenet")  # the same files as a 10-class ImageNet subset
    assert (again["encoded_images"], again["cached_images"], again["classes"]) == (0, 20, 1000)
    photo = imagenette_layout / IMAGENETTE_WNIDS[3] / "photo-001.png"
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not an image")
    code, _, err = run_cli(capsys, "classify", photo, broken, *common, "--labels", "tench,church")
    assert code == 1 and "pixprompt: 2 images: 0 encoded, 1 from the cache, 1 could not be read" in err
    code, out, _ = run_cli(capsys, "eval", *common, "--dataset", f"folder:{imagenette_layout}", "--templates",
                           "raw", "--json")
    assert code == 0 and json.loads(out)[0]["encoded_images"] == 0  # the folder spec finds them too


def test_classify_keeps_its_classifier_and_counts_in_words(tiny_model_dirs, tmp_path, capsys):
    photos = write_photos(tmp_path / "photos", 1, (200, 30, 30), 0)
    common = ["classify", *photos, *model_args(tiny_model_dirs["open_clip_clip"]), "--labels", "red"]
    code, _, err = run_cli(capsys, *common, "--cache-dir", tmp_path / "cache", "--templates", "standard")
    assert code == 0 and "building classifier: 1 class × 1 template (1 prompt)" in err
    assert "pixprompt: 1 image: 1 encoded, 0 from the cache" in err
    code, _, err = run_cli(capsys, *common, "--cache-dir", tmp_path / "cache", "--templates", "standard")
    assert code == 0 and "building classifier" not in err and "1 image: 0 encoded, 1 from the cache" in err
    code, _, err = run_cli(capsys, *common, "--no-cache", "--templates", "standard")
    assert code == 0 and "building classifier" in err  # no cache: built again


def test_a_partly_cached_dataset_says_what_was_found(tiny_model_dirs, imagenette_layout, tmp_path, capsys):
    common = [*model_args(tiny_model_dirs["open_clip_clip"]), "--cache-dir", tmp_path / "cache", "--templates", "raw"]
    code, _, _ = run_cli(capsys, "eval", *common, "--dataset", f"folder:{imagenette_layout}", "--max-images", "5")
    assert code == 0
    code, _, err = run_cli(capsys, "eval", *common, "--dataset", f"folder:{imagenette_layout}")
    assert code == 0 and "encoding 15 of 20 images (5 found in the cache)" in err
    assert "resuming" not in err and "WARNING" not in err


def test_bench_suite_warnings_name_the_config_keys_not_eval_flags(tiny_model_dirs, tmp_path, capsys):
    config = tmp_path / "grid.yaml"
    config.write_text(f"models:\n  - model: {tiny_model_dirs['open_clip_clip']}\nsuite: clip\n"
                      f"data_root: {tmp_path / 'nothing-here'}\ndownload: false\ntemplates: [raw]\n")
    code, _, err = run_cli(capsys, "bench", "--config", config, "--device", "cpu", "--workers", "0")
    warnings = [line for line in err.splitlines() if "left out" in line]
    assert code == 3 and len(warnings) == 1, err  # one summary, the data unavailable
    assert "--data-dir" not in warnings[0] and "allow the download" not in warnings[0]
    assert f"pixprompt datasets --filter clip --fetch-commands {tmp_path / 'nothing-here'} > fetch.sh" in warnings[0]
    code, _, err = run_cli(capsys, "bench", "--config", config, "--device", "cpu", "--workers", "0", "--verbose")
    assert f"its folder at {tmp_path / 'nothing-here' / 'cifar10'} (data_root's cifar10/, not there)" in err


def test_classify_says_the_temperature_it_fitted(tiny_model_dirs, colours, capsys):
    code, _, err = run_cli(capsys, "classify", colours / "red", *model_args(tiny_model_dirs["open_clip_clip"]),
                           "--labels", "red,green,blue", "--calibrate", f"folder:{colours}", "--no-cache")
    assert code == 0 and "pixprompt: standard: temperature " in err and f"fitted on folder:{colours.name}" in err
