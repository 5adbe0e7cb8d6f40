"""What can be loaded, with facts about each, computed without downloading any weights."""
from __future__ import annotations

import json
import logging
from dataclasses import replace
from pathlib import Path

import torch

from pixprompt.models.base import ModelInfo
from pixprompt.storage import cache_write, write_text_atomic

log = logging.getLogger(__name__)

#: Well-known transformers checkpoints; their facts show when their config is in the local HF cache.
TRANSFORMERS_MODELS = (
    "openai/clip-vit-base-patch32",
    "openai/clip-vit-base-patch16",
    "openai/clip-vit-large-patch14",
    "openai/clip-vit-large-patch14-336",
    "laion/CLIP-ViT-B-32-laion2B-s34B-b79K",
    "google/siglip-base-patch16-224",
    "google/siglip-base-patch16-256",
    "google/siglip-large-patch16-256",
    "google/siglip-so400m-patch14-384",
    "google/siglip2-base-patch16-224",
    "google/siglip2-large-patch16-256",
    "google/siglip2-so400m-patch14-384",
)


def _open_clip_params(name: str) -> int | None:
    """Parameter count of an open_clip architecture, built on the meta device (no memory, no weights)."""
    import open_clip

    config = open_clip.get_model_config(name) or {}
    if "hf_model_name" in config.get("text_cfg", {}):
        return None  # the text tower's config lives on the Hub; counting it would mean a download
    logging.disable(logging.WARNING)  # open_clip warns that no weights were loaded, which is the point
    try:
        with torch.device("meta"):
            model = open_clip.create_model(name, pretrained=None, pretrained_text=False, load_weights=False,
                                           device="meta")
        return sum(p.numel() for p in model.parameters())
    except Exception as error:  # an architecture this open_clip cannot build offline is listed without it
        log.debug("cannot count parameters of %s: %s", name, error)
        return None
    finally:
        logging.disable(logging.NOTSET)


def _open_clip_entries(name_filter: str, params_cache: dict[str, int | None]) -> list[ModelInfo]:
    import open_clip

    from pixprompt.models.open_clip_backend import needs_quick_gelu

    entries = []
    for name, tag in open_clip.list_pretrained():
        if name_filter.lower() not in f"open_clip {name} {tag}".lower():
            continue
        config = open_clip.get_model_config(name) or {}
        text_cfg, vision_cfg = config.get("text_cfg", {}), config.get("vision_cfg", {})
        size = vision_cfg.get("image_size")
        if name not in params_cache:
            params_cache[name] = _open_clip_params(name)
        entries.append(ModelInfo(
            backend="open_clip", name=name, pretrained=tag, quick_gelu=needs_quick_gelu(name, tag),
            image_size=size[0] if isinstance(size, (list, tuple)) else size, embed_dim=config.get("embed_dim"),
            params=params_cache[name], context_length=text_cfg.get("context_length"),
            scoring="sigmoid" if "init_logit_bias" in config else "softmax",
        ))
    return entries


def _transformers_entries(name_filter: str) -> list[ModelInfo]:
    from transformers import AutoConfig

    entries = []
    for model_id in TRANSFORMERS_MODELS:
        if name_filter.lower() not in f"transformers {model_id}".lower():
            continue
        info = ModelInfo(backend="transformers", name=model_id, pretrained=None,
                         scoring="sigmoid" if "siglip" in model_id else "softmax")
        try:
            config = AutoConfig.from_pretrained(model_id, local_files_only=True)
            info = replace(info, quick_gelu=config.text_config.hidden_act == "quick_gelu",
                           image_size=config.vision_config.image_size,
                           embed_dim=getattr(config, "projection_dim", None) or config.vision_config.hidden_size,
                           context_length=config.text_config.max_position_embeddings)
        except Exception:  # not cached locally: listed without facts rather than downloaded
            pass
        entries.append(info)
    return entries


def list_models(name_filter: str = "", cache_file: Path | None = None) -> list[ModelInfo]:
    """Every open_clip (name, tag) pair and the well-known transformers ids matching `name_filter`.

    Parameter counts take a few seconds for all architectures, so they are cached in `cache_file`.
    """
    params_cache: dict[str, int | None] = {}
    if cache_file is not None and cache_file.is_file():
        try:
            params_cache = json.loads(cache_file.read_text())
        except (OSError, ValueError):
            params_cache = {}
    known = dict(params_cache)
    entries = _open_clip_entries(name_filter, params_cache) + _transformers_entries(name_filter)
    if cache_file is not None and params_cache != known:
        text = json.dumps(params_cache, indent=0, sort_keys=True)
        cache_write(lambda: write_text_atomic(cache_file, text), cache_file)
    return entries
