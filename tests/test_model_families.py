"""The newest open_clip families, checked against open_clip's own code on random weights: each family's
preprocessing (PE-Core and SigLIP 2 squash to the square with mean/std 0.5; MobileCLIP 2 resizes the short side
bilinearly with mean 0, std 1; MetaCLIP 2 worldwide keeps CLIP's), and MobileCLIP 2 re-parameterised for inference
as Apple's README requires, with the embeddings it had before."""
from __future__ import annotations

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

#: (open_clip name, pretrained tag): the preprocessing its tag declares, what each family's authors use.
FAMILIES = [("PE-Core-B-16", "meta"), ("MobileCLIP2-S0", "dfndr2b"), ("ViT-B-16-SigLIP2", "webli"),
            ("ViT-H-14-worldwide", "metaclip2_worldwide")]


def images() -> list[Image.Image]:
    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 255, shape, dtype=np.uint8)) for shape in
            ((480, 640, 3), (300, 200, 3), (40, 3000, 3), (5000, 30, 3))]  # photos and elongated ones


@pytest.mark.parametrize("name, tag", FAMILIES)
def test_each_familys_preprocessing_gives_open_clips_pixels(name, tag):
    """pixprompt's bounded-memory path (see models.preprocessing) around the transform open_clip builds from the
    tag's own preprocessing config: the same pixels for photos, within 2/255 for elongated images."""
    from pixprompt.models.preprocessing import bounded

    config = open_clip.get_pretrained_cfg(name, tag)
    size = open_clip.get_model_config(name)["vision_cfg"]["image_size"]
    theirs = open_clip.image_transform(size, is_train=False, mean=config["mean"], std=config["std"],
                                       resize_mode=config["resize_mode"], interpolation=config["interpolation"])
    ours = bounded(theirs)
    std = torch.tensor(config["std"])[:, None, None]
    for number, image in enumerate(images()):
        expected, got = theirs(image), ours(image)
        if number < 2:  # photos: the library's own path
            assert torch.equal(got, expected), (name, image.size)
        else:  # elongated: the cropped region resampled alone, within 2/255 per pixel (README's promise)
            assert float(((got - expected).abs() * std * 255).max()) <= 2.01, (name, image.size)
    expected = {"PE-Core-B-16": ("squash", 0.5), "MobileCLIP2-S0": ("shortest", 0.0),
                "ViT-B-16-SigLIP2": ("squash", 0.5), "ViT-H-14-worldwide": ("shortest", 0.48145466)}[name]
    assert (config["resize_mode"], config["mean"][0]) == expected


def test_mobileclip2_is_reparameterised_with_the_embeddings_it_had(tmp_path):
    """Its real architecture with random weights and its tag's preprocessing, as a local-dir: folder, loaded by
    pixprompt: every re-parameterisable block is folded, and the image and text embeddings equal open_clip's own
    (unfolded) model's from the same folder."""
    from pixprompt.models.open_clip_backend import OpenClipModel
    from tiny_models import make_open_clip_family

    folder = f"local-dir:{make_open_clip_family(tmp_path / 'mobileclip2', 'MobileCLIP2-S0', 'dfndr2b')}"
    reference, _, preprocess = open_clip.create_model_and_transforms(folder)
    reference.eval()
    model = OpenClipModel.load(folder, None, torch.device("cpu"), "fp32")
    blocks = [m for m in model.model.modules() if hasattr(m, "reparameterize")]
    assert blocks and all(getattr(m, "reparam_conv", True) is not None for m in blocks)
    assert model.info.notes and "re-parameterised" in model.info.notes[0]
    assert model.info.preprocess == "short side to 256, bilinear, mean 0, std 1"
    image = images()[0]
    with torch.no_grad():
        theirs = torch.nn.functional.normalize(reference.encode_image(preprocess(image)[None]), dim=-1)
        text = torch.nn.functional.normalize(reference.encode_text(open_clip.get_tokenizer(folder)(
            ["a photo of a cat"])), dim=-1)
    assert torch.allclose(model.encode_images(model.preprocess(image)[None]), theirs, atol=1e-4)
    assert torch.allclose(model.encode_text(["a photo of a cat"]), text, atol=1e-5)


def test_models_lists_each_familys_preprocessing_tokenizer_and_notes(capsys):
    """`pixprompt models` (the shipped catalog: no torch, no download) says how each family prepares images and
    tokenises prompts, as its tag's config has it."""
    import json

    from cli_runner import run_cli

    code, out, _ = run_cli(capsys, "models", "--json")
    assert code == 0
    rows = {(r["name"], r["pretrained"]): r for r in json.loads(out)}
    assert rows[("PE-Core-B-16", "meta")]["preprocess"] == "squash to 224, bilinear, mean 0.5, std 0.5"
    mobile = rows[("MobileCLIP2-S0", "dfndr2b")]
    assert mobile["preprocess"] == "short side to 256, bilinear, mean 0, std 1"
    assert "re-parameterised" in mobile["notes"][0]
    siglip2 = rows[("ViT-B-16-SigLIP2", "webli")]
    assert siglip2["tokenizer"] == "timm/ViT-B-16-SigLIP2 (Hugging Face), canonicalize, 64 tokens"
    assert siglip2["scoring"] == "sigmoid" and siglip2["preprocess"].startswith("squash to 224, bicubic, mean 0.5")
    worldwide = rows[("ViT-H-14-worldwide", "metaclip2_worldwide")]
    assert worldwide["quick_gelu"] and worldwide["tokenizer"].startswith("facebook/xlm-v-base (Hugging Face)")


@pytest.fixture(scope="module")
def naflex_folder(tmp_path_factory):
    from tiny_models import make_transformers_siglip2_naflex

    return make_transformers_siglip2_naflex(tmp_path_factory.mktemp("naflex") / "siglip2-naflex")


def test_siglip2_naflex_equals_transformers_own_forward(naflex_folder):
    """SigLIP 2 NaFlex by its folder: each image at its own aspect ratio (different patch grids in one batch),
    equal to transformers' Siglip2Processor and Siglip2Model run directly; prompts lower-cased and padded to 64."""
    from transformers import AutoModel, AutoProcessor

    from pixprompt import load_model

    model = load_model(str(naflex_folder), device="cpu")
    images = [Image.new("RGB", size, colour) for size, colour in
              (((80, 20), (200, 30, 30)), ((24, 64), (30, 200, 60)), ((40, 40), (20, 40, 220)))]
    images = [Image.fromarray(np.array(img) // 2 + np.random.default_rng(n).integers(0, 100, (*img.size[::-1], 3),
                                                                                      dtype=np.uint8))
              for n, img in enumerate(images)]
    prompts = ["A Photo of a RED car.", "a photo of a green meadow."]
    processor, reference = AutoProcessor.from_pretrained(naflex_folder), AutoModel.from_pretrained(naflex_folder)
    # Siglip2Processor's call defaults to 256 patches of 16 pixels whatever its config says (the config of Google's
    # checkpoints says the same); this tiny one's are 16 of 8, given as the config gives them
    inputs = processor(text=prompts, images=images, return_tensors="pt", max_num_patches=16, patch_size=8)
    assert len({tuple(shape.tolist()) for shape in inputs["spatial_shapes"]}) == 3  # three patch grids
    with torch.no_grad():
        output = reference(**inputs)
    ours_images = model.encode_images(torch.stack([model.preprocess(image) for image in images]))
    ours_text = model.encode_text(prompts)
    torch.testing.assert_close(ours_images, torch.nn.functional.normalize(output.image_embeds, dim=-1),
                               atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours_text, torch.nn.functional.normalize(output.text_embeds, dim=-1),
                               atol=1e-5, rtol=1e-5)
    logits = model.logit_scale * ours_images @ ours_text.T + model.logit_bias
    torch.testing.assert_close(logits, output.logits_per_image, atol=1e-4, rtol=1e-4)
    assert model.scoring == "sigmoid" and model.info.image_tokens == 16 and "16-patches" in model.info.identity
    torch.testing.assert_close(model.encode_text([p.lower() for p in prompts]), ours_text)  # its tokenizer lowers


def test_naflex_records_its_sequence_length_and_refuses_export(naflex_folder, colours, tmp_path, capsys):
    from cli_runner import model_args, run_cli

    code, out, _ = run_cli(capsys, "eval", *model_args(naflex_folder), "--dataset", f"folder:{colours}",
                           "--templates", "standard", "--json", "--cache-dir", tmp_path)
    (record,) = __import__("json").loads(out)
    assert code == 0 and record["image_tokens"] == 16 and record["images"] == 24
    code, _, err = run_cli(capsys, "eval", *model_args(naflex_folder), "--dataset", f"folder:{colours}",
                           "--accelerate", "onnx")
    assert code == 2 and "NaFlex" in err
