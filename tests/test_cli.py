"""The `pixprompt` command end to end on tiny models: outputs, exit codes, one-line errors."""
from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from pixprompt.cli import main


@pytest.fixture()
def photos(tmp_path):
    folder = tmp_path / "photos"
    (folder / "nested").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a.jpg", "b.png", "nested/c.jpeg"):
        Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / name)
    (folder / "notes.txt").write_text("not an image")
    return folder


def test_classify_json_lists_top_k_for_every_image(tiny_model_dirs, photos, capsys):
    code = main(["classify", str(photos), "--model", str(tiny_model_dirs["open_clip_clip"]), "--device", "cpu",
                 "--labels", "cat,dog,car", "--templates", "standard,clip7", "--top-k", "2", "--json",
                 "--workers", "0", "--quiet"])
    rows = json.loads(capsys.readouterr().out)
    assert code == 0
    assert len(rows) == 6 and {r["templates"] for r in rows} == {"standard", "clip7"}
    assert all(len(r["top"]) == 2 for r in rows)
    assert {r["image"].rsplit("/", 1)[-1] for r in rows} == {"a.jpg", "b.png", "c.jpeg"}
    for row in rows:
        probabilities = [t["probability"] for t in row["top"]]
        assert probabilities == sorted(probabilities, reverse=True)


def test_classify_bad_file_gets_an_error_row_and_exit_code_1(tiny_model_dirs, photos, capsys):
    (photos / "broken.jpg").write_bytes(b"this is text, not a JPEG")
    code = main(["classify", str(photos), "--model", str(tiny_model_dirs["transformers_siglip"]),
                 "--device", "cpu", "--labels", "cat,dog", "--csv", "--workers", "0", "--quiet"])
    out = capsys.readouterr().out
    assert code == 1
    assert "broken.jpg" in out and "UnidentifiedImageError" in out
    row = next(line for line in out.splitlines() if "a.jpg" in line)  # one CSV line per image, as -o FILE.csv
    assert out.count("a.jpg") == 1 and "cat" in row and "dog" in row  # its top-2 of 2 classes side by side


def test_classifier_file_is_reused(tiny_model_dirs, photos, tmp_path, capsys):
    args = ["classify", str(photos / "a.jpg"), "--model", str(tiny_model_dirs["open_clip_clip"]), "--device",
            "cpu", "--labels", "cat,dog", "--classifier", str(tmp_path / "clf.safetensors"), "--json",
            "--workers", "0"]
    assert main(args) == 0
    first = json.loads(capsys.readouterr().out)
    stamp = (tmp_path / "clf.safetensors").stat().st_mtime_ns
    assert main(args) == 0
    assert json.loads(capsys.readouterr().out) == first
    assert (tmp_path / "clf.safetensors").stat().st_mtime_ns == stamp


@pytest.mark.parametrize(("argv", "code", "text"), [
    (["classify", "missing.jpg", "--model", "ViT-B-32", "--pretrained", "openai", "--labels", "a"], 2,
     "missing.jpg does not exist"),
    (["classify", "{photos}", "--model", "ViT-B-23", "--pretrained", "openai", "--labels", "a"], 3,
     "unknown model 'ViT-B-23'"),
    (["classify", "{photos}", "--model", "ViT-B-32", "--pretrained", "openai", "--labels", "a,a"], 2,
     "duplicate class names"),
    (["classify", "{photos}", "--model", "ViT-B-32", "--pretrained", "openai", "--labels", "a",
      "--templates", "a photo"], 2, "unknown template set"),
])
def test_errors_are_one_line_with_documented_exit_codes(photos, capsys, argv, code, text):
    argv = [a.replace("{photos}", str(photos)) for a in argv]
    assert main([*argv, "--quiet"]) == code  # --quiet: no "loading …" line before the error
    err = capsys.readouterr().err
    assert text in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_models_json_filter(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("PIXPROMPT_CACHE", str(tmp_path))
    assert main(["models", "--filter", "ViT-B-16-SigLIP", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    webli = next(r for r in rows if r["name"] == "ViT-B-16-SigLIP" and r["pretrained"] == "webli")
    assert webli["scoring"] == "sigmoid" and webli["quick_gelu"] is False and webli["context_length"] == 64
    assert webli["params"] == pytest.approx(203e6, rel=0.01)


def test_classify_reuses_cached_features_when_labels_change(tiny_model_dirs, photos, tmp_path, capsys):
    """Practitioners iterate on class names: the second run with other labels encodes no image."""
    common = ["classify", str(photos), "--model", str(tiny_model_dirs["open_clip_clip"]), "--device", "cpu",
              "--workers", "0", "--cache-dir", str(tmp_path / "cache"), "--json"]
    assert main([*common, "--labels", "cat,dog"]) == 0
    first = capsys.readouterr()
    assert "3 images: 3 encoded, 0 from the cache" in first.err
    assert main([*common, "--labels", "car,bus,tram", "--templates", "clip7"]) == 0
    second = capsys.readouterr()
    assert "3 images: 0 encoded, 3 from the cache" in second.err
    assert {row["top"][0]["label"] for row in json.loads(second.out)} <= {"car", "bus", "tram"}
    assert main([*common, "--labels", "cat,dog", "--no-cache"]) == 0  # --no-cache encodes afresh, same answer
    third = capsys.readouterr()
    assert "3 images: 3 encoded" in third.err and json.loads(third.out) == json.loads(first.out)


def test_classify_multi_label_lists_every_class_reaching_the_threshold(tiny_model_dirs, photos, tmp_path, capsys):
    """SigLIP scores each class on its own (sigmoid): every class at or above the threshold is listed, and only
    those, whatever --top-k says; a CSV holds as many label columns as there are classes."""
    from cli_runner import model_args, run_cli

    args = ["classify", photos, *model_args(tiny_model_dirs["open_clip_siglip"]), "--labels", "cat,dog,car,tree",
            "--quiet"]
    _, out, _ = run_cli(capsys, *args, "--top-k", "4", "--json")
    every = {row["image"]: {t["label"]: t["probability"] for t in row["top"]} for row in json.loads(out)}
    threshold = float(np.median([p for probabilities in every.values() for p in probabilities.values()]))
    code, out, _ = run_cli(capsys, *args, "--multi-label", "--threshold", str(threshold), "--top-k", "1", "--json")
    assert code == 0
    for row in json.loads(out):
        expected = sorted((label for label, p in every[row["image"]].items() if p >= threshold),
                          key=lambda label: -every[row["image"]][label])
        assert [t["label"] for t in row["top"]] == expected
    code, _, _ = run_cli(capsys, *args, "--multi-label", "--threshold", str(threshold), "-o", tmp_path / "p.csv")
    assert code == 0 and (tmp_path / "p.csv").read_text().splitlines()[0].count("label_") == 4
    _, out, _ = run_cli(capsys, *args, "--multi-label", "--threshold", "1")
    assert "(no class reaches 100%)" in out
    with pytest.raises(SystemExit):
        main(["classify", str(photos), "--labels", "a,b", "--multi-label", "--threshold", "1.5"])
