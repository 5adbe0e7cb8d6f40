"""Tiny CLIP-like models with random weights, saved the way users' downloads are laid out.

Each builder writes a folder that pixprompt then loads through the user's code path:
open_clip `local-dir:` (open_clip_config.json + open_clip_model.safetensors) or transformers
`from_pretrained(dir)` (config.json + model.safetensors + tokenizer and image processor files).
"""
from __future__ import annotations

import json
import math
import string
from collections.abc import Callable
from pathlib import Path

import torch

IMAGE_SIZE = 32
EMBED_DIM = 32
SPECIAL_TOKENS = ["<pad>", "<unk>", "<s>", "</s>"]
#: OpenAI CLIP's normalisation and resizing, as open_clip's preprocess_cfg spells them.
OPENAI_PREPROCESS = {"mean": [0.48145466, 0.4578275, 0.40821073], "std": [0.26862954, 0.26130258, 0.27577711],
                     "interpolation": "bicubic", "resize_mode": "shortest"}


def char_tokenizer(path: Path, *, add_bos: bool, lowercase: bool, max_length: int):
    """A character-level fast tokenizer (pad=0, unk=1, bos=2, eos=3), saved to `path`."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    chars = sorted(set(string.printable.strip()))
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS + chars)}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.normalizer = normalizers.Lowercase() if lowercase else normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    single = "<s> $A </s>" if add_bos else "$A </s>"
    tokenizer.post_processor = processors.TemplateProcessing(
        single=single, special_tokens=[("<s>", vocab["<s>"]), ("</s>", vocab["</s>"])])
    fast = PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", unk_token="<unk>",
                                   bos_token="<s>", eos_token="</s>", model_max_length=max_length)
    fast.save_pretrained(path)
    return fast


def make_open_clip_family(path: Path, name: str, tag: str) -> Path:
    """open_clip's own architecture `name` (its real config: a full-size model, random weights) with the
    preprocessing its tag `tag` declares, as a `local-dir:` folder."""
    import open_clip

    pretrained = open_clip.get_pretrained_cfg(name, tag)
    keys = ("mean", "std", "interpolation", "resize_mode")
    preprocess_cfg = {key: pretrained[key] for key in keys if key in pretrained}
    return _write_open_clip(path, open_clip.get_model_config(name), preprocess_cfg)


def _write_open_clip(path: Path, model_cfg: dict, preprocess_cfg: dict) -> Path:
    import open_clip
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    # the class open_clip's factory picks for such a config
    architecture = open_clip.CoCa if "multimodal_cfg" in model_cfg else \
        open_clip.CustomTextCLIP if model_cfg.get("custom_text") else open_clip.CLIP
    model = architecture(**{k: v for k, v in model_cfg.items() if k != "custom_text"})
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path / "open_clip_model.safetensors"))
    (path / "open_clip_config.json").write_text(json.dumps({"model_cfg": model_cfg,
                                                            "preprocess_cfg": preprocess_cfg}))
    return path


def make_open_clip_clip(path: Path) -> Path:
    """open_clip CLIP: causal text tower, the built-in BPE tokenizer, softmax scoring."""
    model_cfg = {
        "embed_dim": EMBED_DIM,
        "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 2},
    }
    return _write_open_clip(path, model_cfg, OPENAI_PREPROCESS)


def make_open_clip_siglip(path: Path) -> Path:
    """open_clip SigLIP: bidirectional text tower pooled at the last position, fixed 16-token padding,
    a lower-casing HF tokenizer stored in the folder, sigmoid scoring with a learned bias."""
    char_tokenizer(path, add_bos=False, lowercase=True, max_length=64)
    model_cfg = {
        "embed_dim": EMBED_DIM,
        "init_logit_bias": -10,
        "custom_text": True,
        "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 2, "width": 64, "patch_size": 8, "head_width": 32},
        "text_cfg": {"context_length": 64, "vocab_size": 128, "hf_tokenizer_name": "local",
                     "tokenizer_kwargs": {"clean": "canonicalize"}, "width": 64, "heads": 2, "layers": 2,
                     "no_causal_mask": True, "proj_bias": True, "pool_type": "last"},
    }
    preprocess = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "interpolation": "bicubic",
                  "resize_mode": "squash"}
    return _write_open_clip(path, model_cfg, preprocess)


def make_open_clip_coca(path: Path) -> Path:
    """open_clip CoCa: its vision tower returns pooled features *and* tokens, its text tower appends a class
    token. Not in `BUILDERS`: only the tests of those two differences use it."""
    model_cfg = {
        "embed_dim": EMBED_DIM,
        "custom_text": True,
        "vision_cfg": {"image_size": IMAGE_SIZE, "layers": 1, "width": 64, "patch_size": 8, "head_width": 32,
                       "attentional_pool": True, "attn_pooler_heads": 2, "output_tokens": True},
        "text_cfg": {"context_length": 76, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1,
                     "embed_cls": True, "output_tokens": True},
        "multimodal_cfg": {"context_length": 76, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1,
                           "attn_pooler_heads": 2},
    }
    return _write_open_clip(path, model_cfg, OPENAI_PREPROCESS)


def _write_transformers(path: Path, model, image_processor, tokenizer_kwargs: dict) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    image_processor.save_pretrained(path)
    char_tokenizer(path, **tokenizer_kwargs)
    return path


def make_transformers_clip(path: Path) -> Path:
    """transformers CLIPModel with a CLIP image processor."""
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel

    torch.manual_seed(0)
    config = CLIPConfig(
        text_config={"vocab_size": 128, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                     "num_attention_heads": 2, "max_position_embeddings": 77, "pad_token_id": 0,
                     "bos_token_id": 2, "eos_token_id": 3},
        vision_config={"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
                       "num_attention_heads": 2, "image_size": IMAGE_SIZE, "patch_size": 8},
        projection_dim=EMBED_DIM,
    )
    for key, value in {"pad_token_id": 0, "bos_token_id": 2, "eos_token_id": 3}.items():
        setattr(config, key, value)
    processor = CLIPImageProcessor(size={"shortest_edge": IMAGE_SIZE},
                                   crop_size={"height": IMAGE_SIZE, "width": IMAGE_SIZE})
    return _write_transformers(path, CLIPModel(config).eval(), processor,
                               {"add_bos": True, "lowercase": True, "max_length": 77})


#: The tiny SigLIP towers (text padded to its 64 positions), shared by SigLIP and SigLIP 2 NaFlex.
SIGLIP_TEXT = {"vocab_size": 128, "hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2,
               "num_attention_heads": 2, "max_position_embeddings": 64, "pad_token_id": 0, "eos_token_id": 3}
SIGLIP_VISION = {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 2,
                 "patch_size": 8}


def _write_siglip(path: Path, model, processor) -> Path:
    with torch.no_grad():  # the values SigLIP starts training from, so that scale and bias matter in tests
        model.logit_scale.fill_(math.log(10.0))
        model.logit_bias.fill_(-10.0)
    return _write_transformers(path, model.eval(), processor, {"add_bos": False, "lowercase": True, "max_length": 64})


def make_transformers_siglip(path: Path) -> Path:
    """transformers SiglipModel (text padded to its 64 positions) with a SigLIP image processor."""
    from transformers import SiglipConfig, SiglipImageProcessor, SiglipModel

    torch.manual_seed(0)
    config = SiglipConfig(text_config=SIGLIP_TEXT, vision_config={**SIGLIP_VISION, "image_size": IMAGE_SIZE})
    return _write_siglip(path, SiglipModel(config), SiglipImageProcessor(size={"height": IMAGE_SIZE,
                                                                              "width": IMAGE_SIZE}))


def make_transformers_siglip2_naflex(path: Path, max_num_patches: int = 16) -> Path:
    """transformers Siglip2Model (NaFlex: images of their own aspect ratio, up to `max_num_patches` patches) with
    its Siglip2ImageProcessor. Not in `BUILDERS`: only the NaFlex tests use it."""
    from transformers import Siglip2Config, Siglip2ImageProcessor, Siglip2Model

    torch.manual_seed(0)
    config = Siglip2Config(text_config=SIGLIP_TEXT, vision_config={**SIGLIP_VISION, "num_patches": max_num_patches})
    return _write_siglip(path, Siglip2Model(config),
                         Siglip2ImageProcessor(patch_size=SIGLIP_VISION["patch_size"], max_num_patches=max_num_patches))


BUILDERS = {
    "open_clip_clip": make_open_clip_clip,
    "open_clip_siglip": make_open_clip_siglip,
    "transformers_clip": make_transformers_clip,
    "transformers_siglip": make_transformers_siglip,
}


def model_breaking_on(model_dir: Path, breaks: Callable[[torch.Tensor], torch.Tensor]):
    """The tiny model at `model_dir`, loaded for real, whose image tower gives NaN for the images `breaks(pixels)`
    marks (an fp16 overflow on some inputs looks so); every other image's embedding is its own."""
    from pixprompt import load_model

    model = load_model(str(model_dir), device="cpu")
    forward = model.image_forward

    def image_forward(pixels: torch.Tensor) -> torch.Tensor:
        features = forward(pixels)
        return torch.where(breaks(pixels)[:, None], torch.full_like(features, float("nan")), features)

    model.__dict__["image_forward"] = image_forward
    return model
