"""One gate for non-finite numbers (#34 part 2): a NaN or ±inf embedding — from a model with broken weights, from a
model that breaks on some images, from a cache chunk another tool wrote — never reaches a score, a cache file or a
label-free method's unlabeled set; a model that gives no finite embedding at all stops the run naming it."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from cli_runner import eval_args, model_args, run_cli, strict_json
from tiny_models import model_breaking_on


def broken_copy(model_dir: Path, target: Path, tensor: str) -> Path:
    """A copy of a tiny open_clip folder whose weight `tensor` is NaN (as a damaged download or a diverged
    fine-tune leaves it)."""
    shutil.copytree(model_dir, target)
    weights = target / "open_clip_model.safetensors"
    tensors = load_file(str(weights))
    tensors[tensor] = torch.full_like(tensors[tensor], math.nan)
    save_file(tensors, str(weights))
    return target


def breaks_on_red(model_dir: Path):
    """The tiny model, breaking (NaN) on reddish images."""
    return model_breaking_on(model_dir, lambda pixels: pixels[:, 0].mean(dim=(1, 2)) > pixels[:, 2].mean(dim=(1, 2))
                             + 0.5)


def all_finite(value) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        return all(all_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(all_finite(v) for v in value)
    return True


@pytest.mark.parametrize("command", ["eval", "classify"])
def test_a_model_with_nan_image_weights_stops_the_run_naming_it(tiny_model_dirs, colours, tmp_path, capsys, command):
    broken = broken_copy(tiny_model_dirs["open_clip_clip"], tmp_path / "broken-model", "visual.proj")
    output = tmp_path / "preds.jsonl"
    argv = eval_args(broken, colours, "--cache-dir", tmp_path / "cache") if command == "eval" else \
        ["classify", colours, *model_args(broken), "--labels", "red,green,blue", "--cache-dir", tmp_path / "cache",
         "--output", output]
    code, out, err = run_cli(capsys, *argv)
    lines = [line for line in err.splitlines() if line.startswith("pixprompt: error")]
    assert code == 3 and out == "" and len(lines) == 1, err
    assert "model broken-model gave a non-finite embedding (NaN or inf) for every one of the" in lines[0]
    assert "try --precision fp32" in lines[0]
    assert not list((tmp_path / "cache").rglob("chunk-*"))  # nothing cached from it
    assert not output.exists() or "red" not in output.read_text()


def test_a_model_with_nan_text_weights_stops_before_any_score(tiny_model_dirs, colours, tmp_path, capsys):
    broken = broken_copy(tiny_model_dirs["open_clip_clip"], tmp_path / "mute-model", "text_projection")
    code, out, err = run_cli(capsys, *eval_args(broken, colours, "--no-cache"))
    assert code == 3 and out == ""
    assert "model mute-model gave a non-finite text embedding (NaN or inf) for 3 of 3 prompts, e.g. 'blue'" in err


def test_images_a_model_breaks_on_are_error_rows_and_never_reach_a_method(tiny_model_dirs, colours, tmp_path):
    from pixprompt import resolve_templates
    from pixprompt.data.datasets import load_dataset
    from pixprompt.evaluation import evaluate
    from pixprompt.features.cache import NON_FINITE

    model = breaks_on_red(tiny_model_dirs["open_clip_clip"])
    records = evaluate(model, load_dataset(f"folder:{colours}"), resolve_templates("standard"), cache_root=tmp_path,
                       workers=0, methods=["plain", "zpe", "frolic", "tda", "zlap"], min_probability=0.5)
    assert [r["method"] for r in records] == ["plain", "zpe", "frolic", "tda", "zlap"]
    for record in records:
        assert record["images"] == 16 and record["skipped"] == 8, record["method"]
        assert all("/red/" in name for name in record["skipped_files"])
        assert all_finite(record) and record.get("ece", 0.0) is not None
    # chunks hold only finite rows: a second, healthy model of the same name reads 16 and encodes the 8 others
    from pixprompt import load_model

    again = evaluate(load_model(str(tiny_model_dirs["open_clip_clip"]), device="cpu"),
                     load_dataset(f"folder:{colours}"), resolve_templates("standard"), cache_root=tmp_path,
                     workers=0)
    assert (again[0]["cached_images"], again[0]["encoded_images"], again[0]["skipped"]) == (16, 8, 0)
    assert NON_FINITE.startswith("the model gave a non-finite embedding")


def test_classify_rows_of_broken_images_are_errors_never_a_null_probability(tiny_model_dirs, colours, tmp_path):
    from pixprompt import build_classifier, resolve_templates
    from pixprompt.evaluation.predict import classify

    model = breaks_on_red(tiny_model_dirs["open_clip_clip"])
    classifier = build_classifier(model, ["red", "green", "blue"], resolve_templates("raw")[0])
    for method in ("plain", "zlap"):
        from pixprompt.evaluation.predict import iter_predictions

        rows = [p for _, _, (shard,) in iter_predictions(model, [classifier], sorted(colours.rglob("*.png")),
                                                         workers=0, cache_root=None, method=method)
                for p in shard]
        assert sum(p.error is not None for p in rows) == 8
        assert all(p.error and "non-finite" in p.error for p in rows if "/red/" in p.path)
        assert all(p.probabilities and all(math.isfinite(x) for x in p.probabilities) for p in rows if not p.error)
    assert len(classify(model, classifier, sorted(colours.rglob("*.png")), workers=0, cache_root=None)) == 24


def test_a_cache_chunk_holding_nan_rows_is_removed_and_its_images_encoded_again(tiny_model_dirs, colours, tmp_path,
                                                                                capsys):
    code, clean, _ = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--cache-dir", tmp_path))
    assert code == 0
    (chunk,) = tmp_path.rglob("chunk-*.safetensors")
    from pixprompt.features.cache import FeatureStore, _read_verified

    rows = _read_verified(chunk)
    tensors = load_file(str(chunk))
    store = FeatureStore.__new__(FeatureStore)
    store.folder, store.writable = chunk.parent, True
    chunk.unlink()
    rows[3] = math.nan  # another tool's chunk, its checksum right for its NaN row
    store.write(tensors["keys"].numpy().view(f"S{tensors['keys'].shape[1]}").reshape(-1), rows, {})
    code, again, err = run_cli(capsys, *eval_args(tiny_model_dirs["open_clip_clip"], colours, "--cache-dir",
                                                  tmp_path))
    assert code == 0 and "removing damaged cache chunk" in err and "non-finite features" in err
    first, second = strict_json(clean)[0], strict_json(again)[0]
    assert second["encoded_images"] == 24 and first["top1"] == second["top1"] and first["ece"] == second["ece"]


def test_a_method_whose_scores_are_not_finite_fails_naming_it(loaded_models, monkeypatch):
    from dataclasses import replace

    from pixprompt import build_classifier, resolve_templates
    from pixprompt.errors import InputFailedError
    from pixprompt.evaluation import label_free

    classifier = build_classifier(loaded_models["open_clip_clip"], ["a", "b"], resolve_templates("raw")[0])
    diverged = replace(label_free.METHODS["zlap"], score=lambda c, f, _: (torch.full((len(f), 2), math.nan), {}))
    monkeypatch.setitem(label_free.METHODS, "zlap", diverged)
    features = torch.nn.functional.normalize(torch.randn(5, classifier.prompt_embeddings.shape[1]), dim=-1)
    with pytest.raises(InputFailedError, match=r"--method zlap gave non-finite scores \(NaN or inf\) for 5 of 5"):
        label_free.method_scores("zlap", classifier, features, label_free.MethodContext())
