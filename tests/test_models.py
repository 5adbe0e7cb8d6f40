"""Model loading: backend detection, QuickGELU resolution, clear errors, the offline catalog."""
from __future__ import annotations

import socket
import time
from pathlib import Path

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
def test_loading_a_tag_builds_the_matching_activation(empty_hub_cache, monkeypatch, tag, expected):
    """The real ViT-B-32 creation path, with the download and weight copy stubbed out (no network)."""
    from pixprompt.models.offline import weights_source

    repo = weights_source("open_clip", "ViT-B-32", tag)  # as if downloaded before: the Hub cache has it
    (Path(empty_hub_cache.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}" / "snapshots" / "0").mkdir(parents=True)
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


@pytest.fixture()
def empty_hub_cache(tmp_path, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    for variable in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(variable, raising=False)
    return constants


def test_no_network_fails_in_seconds_with_three_short_lines(empty_hub_cache, monkeypatch, capsys):
    """The Hub's endpoint refuses the connection for real (a closed local port): no retries, no minute lost."""
    from pixprompt.cli import main

    monkeypatch.setattr(empty_hub_cache, "ENDPOINT", "http://127.0.0.1:9")
    started = time.perf_counter()
    code = main(["classify", __file__, "--model", "ViT-B-32", "--pretrained", "openai", "--labels", "a,b",
                 "--quiet"])
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 3 and time.perf_counter() - started < 10 and len(lines) == 4
    assert lines[0] == "pixprompt: error: the weights of ViT-B-32 (openai) are not on this machine and 127.0.0.1 " \
                       "cannot be reached (no network?)."
    assert "`hf download timm/vit_base_patch32_clip_224.openai`" in lines[1]
    assert "--pretrained /path/open_clip_pytorch_model.bin" in lines[2]
    assert lines[3].startswith('In Python: pixprompt.load_model("ViT-B-32-quickgelu", "/path/open_clip_pytorch')
    assert max(len(line) for line in lines) < 200


def test_hf_hub_offline_is_said_at_once(empty_hub_cache, monkeypatch):
    monkeypatch.setattr(empty_hub_cache, "HF_HUB_OFFLINE", True)
    with pytest.raises(UnavailableError, match="HF_HUB_OFFLINE is set") as raised:
        load_model("google/siglip-base-patch16-224", device="cpu")
    assert "`hf download google/siglip-base-patch16-224`" in str(raised.value)
    assert "save_pretrained" in str(raised.value)


def test_a_failed_download_keeps_the_hint_short(empty_hub_cache, monkeypatch):
    """The Hub answers (a real local listener), then the download itself fails."""
    def failed(cfg, cache_dir=None):
        raise OSError("Failed to download file (open_clip_pytorch_model.bin). Last error: An …")

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        monkeypatch.setattr(empty_hub_cache, "ENDPOINT", f"http://127.0.0.1:{listener.getsockname()[1]}")
        monkeypatch.setattr(open_clip.factory, "download_pretrained", failed)
        with pytest.raises(UnavailableError) as raised:
            load_model("ViT-B-32", "openai", device="cpu")
    message = str(raised.value)
    assert "Last error" not in message and len(message.splitlines()) == 4  # what failed, then offline_hint
    assert "hf download timm/vit_base_patch32_clip_224.openai" in message


def test_offline_hint_names_the_hub_repo_of_each_kind_of_name():
    from pixprompt.models.offline import offline_hint

    assert "`hf download google/siglip-base-patch16-224`" in offline_hint(
        "transformers", "google/siglip-base-patch16-224", None, None)
    assert "`hf download timm/ViT-B-16-SigLIP --cache-dir /w`, then copy /w here" in \
        offline_hint("open_clip", "hf-hub:timm/ViT-B-16-SigLIP", None, "/w")


def test_catalog_lists_open_clip_pairs_with_facts_offline(tmp_path):
    from pixprompt.models.catalog import _library_version, list_models, shipped_catalog

    entries = {(e.name, e.pretrained): e for e in list_models("ViT-B-32", tmp_path / "params.json")}
    openai = entries[("ViT-B-32", "openai")]
    assert openai.quick_gelu is True and openai.image_size == 224 and openai.embed_dim == 512
    assert openai.params == pytest.approx(151e6, rel=0.01)
    assert entries[("ViT-B-32", "laion2b_s34b_b79k")].quick_gelu is False
    # the shipped catalog answers for its open_clip release; for another, the listing is cached
    assert (tmp_path / "params.json").is_file() != (shipped_catalog()["open_clip_version"]
                                                    == _library_version("open_clip_torch"))


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


def test_a_checkpoint_file_loads_offline_under_its_quickgelu_name(tmp_path):
    """README, offline copy 1: `--model ViT-B-32-quickgelu --pretrained FILE` (real architecture, random weights)."""
    import torch
    from safetensors.torch import save_file

    reference = open_clip.create_model("ViT-B-32-quickgelu").eval()
    checkpoint = tmp_path / "open_clip_model.safetensors"
    save_file({k: v.contiguous() for k, v in reference.state_dict().items()}, str(checkpoint))
    model = load_model("ViT-B-32-quickgelu", str(checkpoint), device="cpu")
    assert model.info.quick_gelu is True and model.weights_stamp  # the file stamps the cache
    pixels = torch.rand(1, 3, 224, 224)
    with torch.inference_mode():
        expected = torch.nn.functional.normalize(reference.encode_image(pixels), dim=-1)
    assert torch.allclose(model.encode_images(pixels), expected, atol=1e-5)
