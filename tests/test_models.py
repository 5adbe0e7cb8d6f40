"""Model loading: backend detection, QuickGELU resolution, clear errors, the offline catalog."""
from __future__ import annotations

import open_clip
import pytest

from pixprompt.errors import UnavailableError
from pixprompt.models import detect_backend, load_model
from pixprompt.models.open_clip_backend import needs_quick_gelu
from tiny_models import IMAGE_SIZE


@pytest.mark.parametrize(("name", "tag", "expected"), [
    ("ViT-B-32", "openai", True),
    ("RN50", "openai", True),
    ("ViT-B-32", "laion2b_s34b_b79k", False),
    ("ViT-B-16", "laion2b_s34b_b88k", False),
    ("ViT-B-32-quickgelu", "laion400m_e32", True),
    ("ViT-B-16-SigLIP", "webli", False),
])
def test_quick_gelu_follows_how_the_weights_were_trained(name, tag, expected):
    assert needs_quick_gelu(name, tag) is expected


@pytest.mark.parametrize(("tag", "expected"), [("openai", True), ("laion2b_s34b_b79k", False)])
def test_loading_a_tag_builds_the_matching_activation(monkeypatch, tag, expected):
    """The real ViT-B-32 creation path, with the download and weight copy stubbed out (no network)."""
    monkeypatch.setattr(open_clip.factory, "download_pretrained", lambda cfg, cache_dir=None: "weights.pt")
    monkeypatch.setattr(open_clip.factory, "load_checkpoint", lambda *args, **kwargs: None)
    model = load_model("ViT-B-32", tag, device="cpu")
    activations = {type(m).__name__ for m in model.model.transformer.modules()}
    assert ("QuickGELU" in activations) is expected
    assert ("GELU" in activations) is not expected
    assert model.info.quick_gelu is expected


def test_backend_is_detected_from_names_and_folder_files(tiny_model_dirs, tmp_path):
    assert detect_backend("ViT-B-32") == ("open_clip", "ViT-B-32")
    assert detect_backend("hf-hub:timm/ViT-B-16-SigLIP") == ("open_clip", "hf-hub:timm/ViT-B-16-SigLIP")
    assert detect_backend("openai/clip-vit-base-patch32") == ("transformers", "openai/clip-vit-base-patch32")
    assert detect_backend(str(tiny_model_dirs["open_clip_clip"]))[0] == "open_clip"
    assert detect_backend(str(tiny_model_dirs["transformers_siglip"]))[0] == "transformers"
    with pytest.raises(UnavailableError, match="holds no model"):
        detect_backend(str(tmp_path))


def test_unknown_names_and_tags_suggest_close_matches():
    with pytest.raises(UnavailableError, match="ViT-B-32"):
        load_model("ViT-B-23", "openai", device="cpu")
    with pytest.raises(UnavailableError, match="laion2b_s34b_b79k"):
        load_model("ViT-B-32", "laion2b", device="cpu")
    with pytest.raises(UnavailableError, match="needs --pretrained"):
        load_model("ViT-B-32", device="cpu")


def test_offline_without_weights_says_what_to_download_and_where(monkeypatch):
    def offline(cfg, cache_dir=None):
        raise OSError("We couldn't connect to 'https://huggingface.co' to load the files")

    monkeypatch.setattr(open_clip.factory, "download_pretrained", offline)
    with pytest.raises(UnavailableError) as raised:
        load_model("ViT-B-32", "openai", device="cpu")
    message = str(raised.value)
    assert "ViT-B-32 (openai)" in message and "--model" in message and "\n" not in message
    assert "hf download timm/vit_base_patch32_clip_224.openai" in message  # exactly what to fetch


def test_offline_hint_names_the_hub_repo_of_each_kind_of_name(monkeypatch):
    from huggingface_hub import constants

    from pixprompt.models.registry import _offline_hint

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    hint = _offline_hint("transformers", "google/siglip-base-patch16-224", None, None)
    assert "`hf download google/siglip-base-patch16-224`" in hint
    assert "`hf download timm/ViT-B-16-SigLIP --cache-dir /w` on a connected machine and copy /w here" in \
        _offline_hint("open_clip", "hf-hub:timm/ViT-B-16-SigLIP", None, "/w")
    assert "HF_HUB_OFFLINE is set" in _offline_hint("open_clip", "ViT-B-32", "openai", None)


def test_catalog_lists_open_clip_pairs_with_facts_offline(tmp_path):
    from pixprompt.models.catalog import list_models

    entries = {(e.name, e.pretrained): e for e in list_models("ViT-B-32", tmp_path / "params.json")}
    openai = entries[("ViT-B-32", "openai")]
    assert openai.quick_gelu is True and openai.image_size == 224 and openai.embed_dim == 512
    assert openai.params == pytest.approx(151e6, rel=0.01)
    assert entries[("ViT-B-32", "laion2b_s34b_b79k")].quick_gelu is False
    assert (tmp_path / "params.json").is_file()


def test_coca_images_go_through_its_own_image_method_and_its_text_keeps_padding(tmp_path):
    import torch

    from tiny_models import make_open_clip_coca

    model = load_model(str(make_open_clip_coca(tmp_path / "coca")), device="cpu")
    pixels = torch.randn(2, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(model.model.encode_image(pixels), dim=-1)
        expected_text = torch.nn.functional.normalize(model.model.encode_text(model.tokenizer(["a cat", "dog"])),
                                                      dim=-1)
    assert torch.max(torch.abs(model.encode_images(pixels) - expected)).item() <= 1e-6
    assert not model.text_padding_free  # its class token goes after the padding
    assert torch.max(torch.abs(model.encode_text(["a cat", "dog"]) - expected_text)).item() <= 1e-6
