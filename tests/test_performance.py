"""The fast paths give the same numbers as the plain ones: trimmed text, halved batches, accelerated images."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES
from PIL import Image

from pixprompt.cli import main
from pixprompt.data.images import open_rgb
from pixprompt.errors import UnavailableError
from pixprompt.models import acceleration
from pixprompt.models.batching import ShrinkingBatches
from tiny_models import IMAGE_SIZE

PROMPTS = [template(name) for name in ("cat", "a very long class name made of many words", "x")
           for template in OPENAI_IMAGENET_TEMPLATES]


@pytest.mark.parametrize("name, padding_free", [("open_clip_clip", True), ("transformers_clip", True),
                                                ("open_clip_siglip", False), ("transformers_siglip", False)])
def test_only_causal_towers_are_encoded_without_padding(loaded_models, name, padding_free):
    assert loaded_models[name].text_padding_free is padding_free


def test_trimmed_sorted_text_batches_equal_the_padded_computation(loaded_models):
    model = loaded_models["open_clip_clip"]
    ours = model.encode_text(PROMPTS, batch_size=16)
    with torch.inference_mode():
        padded = torch.nn.functional.normalize(model.model.encode_text(model.tokenizer(PROMPTS)), dim=-1)
    assert torch.max(torch.abs(ours - padded)).item() <= 1e-5


def test_trimming_stops_at_each_batch_longest_prompt(loaded_models):
    model = loaded_models["open_clip_clip"]
    lengths = []
    original = model.causal_text.tower.transformer.forward
    model.causal_text.tower.transformer.forward = lambda x, **kw: lengths.append(x.shape[1]) or original(x, **kw)
    try:
        model.encode_text(["a b", "a photo of a cat.", "c"], batch_size=2)
    finally:
        del model.causal_text.tower.transformer.forward
    assert lengths == [max(model.token_counts(["a b", "c"])), model.token_counts(["a photo of a cat."])[0]]


def test_out_of_memory_halves_the_batch_and_keeps_it_halved():
    calls = []

    def forward(rows):
        calls.append(len(rows))
        if len(rows) > 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return rows.float() * 2

    encode = ShrinkingBatches(forward, "images")
    rows = torch.arange(10)
    assert torch.equal(encode(rows), rows.float() * 2)
    assert encode.size == 2 and calls[:3] == [10, 5, 2]
    calls.clear()
    encode(torch.arange(4))
    assert calls == [2, 2]


def test_out_of_memory_at_one_row_is_a_clear_error():
    def forward(rows):
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")

    with pytest.raises(UnavailableError, match="out of memory encoding images even one at a time"):
        ShrinkingBatches(forward, "images")(torch.arange(3))


def test_other_errors_are_not_mistaken_for_out_of_memory():
    def forward(rows):
        raise ValueError("shape mismatch")

    with pytest.raises(ValueError):
        ShrinkingBatches(forward, "images")(torch.arange(3))


@pytest.mark.parametrize("path", ["channels-last", "onnx", "compile"])
def test_accelerated_image_paths_reproduce_eager_embeddings(tiny_model_dirs, path):
    from pixprompt import load_model

    model = load_model(str(tiny_model_dirs["open_clip_clip"]), device="cpu", accelerate=path)
    assert model.image_forward is not model.image_tower
    probe = acceleration.probe_pixels(model, 3)
    accelerated = model.encode_images(probe)
    model.image_forward = model.image_tower
    assert torch.nn.functional.cosine_similarity(accelerated, model.encode_images(probe)).min() >= 0.9999


def test_a_path_that_changes_embeddings_is_refused(tiny_model_dirs, monkeypatch, caplog):
    from pixprompt import load_model

    model = load_model(str(tiny_model_dirs["transformers_clip"]), device="cpu")
    noisy = {"noisy": lambda m: lambda pixels: m.image_tower(pixels) + torch.randn(len(pixels), 32)}
    monkeypatch.setattr(acceleration, "ACCELERATIONS", noisy)
    assert acceleration.accelerate(model, "noisy") is False
    assert model.image_forward is model.image_tower
    assert "changes" in caplog.text and "using the eager model" in caplog.text


# -- opt-in approximate decoding -------------------------------------------------------------------------
def write_large_jpegs(folder: Path, count: int, colour: tuple[int, int, int]) -> list[Path]:
    """Smooth 640×480 JPEG photos around `colour`: large enough for libjpeg to decode at 1/8 scale."""
    folder.mkdir(parents=True)
    ramp = np.linspace(-60, 60, 640)[None, :, None] + np.linspace(-30, 30, 480)[:, None, None]
    paths = []
    for i in range(count):
        pixels = np.clip(np.array(colour) + ramp + 10 * i, 0, 255).astype(np.uint8)
        paths.append(folder / f"{i}.jpg")
        Image.fromarray(pixels).save(paths[-1], quality=90)
    return paths


def test_draft_decoding_is_opt_in_shrinks_only_jpegs_and_never_below_the_size(tmp_path, loaded_models):
    (jpeg,) = write_large_jpegs(tmp_path / "jpeg", 1, (120, 90, 60))
    png = tmp_path / "same.png"
    Image.open(jpeg).save(png)
    assert open_rgb(jpeg).size == (640, 480)
    assert open_rgb(jpeg, draft_size=64).size == (160, 120)  # 1/8 would give a 60-pixel side
    assert open_rgb(png, draft_size=64).size == (640, 480)
    model = loaded_models["open_clip_clip"]
    exact, draft = model.preprocess(open_rgb(jpeg)), model.preprocess(open_rgb(jpeg, model.decode_size))
    assert exact.shape == draft.shape and not torch.equal(exact, draft)
    assert (exact - draft).abs().mean().item() < 0.05


def test_draft_decoded_features_are_recorded_and_cached_apart(tmp_path, tiny_model_dirs, capsys):
    write_large_jpegs(tmp_path / "data" / "warm", 3, (200, 120, 60))
    write_large_jpegs(tmp_path / "data" / "cold", 3, (60, 120, 200))
    argv = ["eval", "--model", str(tiny_model_dirs["open_clip_clip"]), "--device", "cpu", "--workers", "0", "--quiet",
            "--dataset", f"folder:{tmp_path / 'data'}", "--templates", "raw", "--cache-dir", str(tmp_path / "cache"),
            "--json"]
    runs = []
    for extra in (["--draft-jpeg"], [], ["--draft-jpeg"]):
        assert main(argv + extra) == 0
        (record,) = json.loads(capsys.readouterr().out)
        runs.append((record["jpeg_draft_size"], record["encoded_images"], record["cached_images"]))
    assert runs == [(IMAGE_SIZE, 6, 0), (None, 6, 0), (IMAGE_SIZE, 0, 6)]
