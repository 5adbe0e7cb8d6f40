"""What can be loaded, with facts about each, computed without downloading any weights."""
from __future__ import annotations

import hashlib
import json
import logging
from importlib import resources
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

from pixprompt.models.info import REPARAMETERISED_NOTE, ModelInfo, is_reparameterised, preprocess_fact, tokenizer_fact
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
    "google/siglip2-base-patch16-naflex",
    "google/siglip2-so400m-patch16-naflex",
)


def _open_clip_params(name: str) -> int | None:
    """Parameter count of an open_clip architecture, built on the meta device (no memory, no weights)."""
    import open_clip
    import torch

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


def _open_clip_entries() -> list[ModelInfo]:
    """Every open_clip (name, pretrained tag) pair with the facts its config gives (parameters not counted)."""
    import open_clip

    from pixprompt.models.open_clip_backend import needs_quick_gelu

    entries = []
    for name, tag in open_clip.list_pretrained():
        config = open_clip.get_model_config(name) or {}
        text_cfg, vision_cfg = config.get("text_cfg", {}), config.get("vision_cfg", {})
        size = vision_cfg.get("image_size")
        size = size[0] if isinstance(size, (list, tuple)) else size
        entries.append(ModelInfo(
            backend="open_clip", name=name, pretrained=tag, quick_gelu=needs_quick_gelu(name, tag),
            image_size=size, embed_dim=config.get("embed_dim"),
            context_length=text_cfg.get("context_length"),
            scoring="sigmoid" if "init_logit_bias" in config else "softmax",
            preprocess=preprocess_fact(open_clip.get_pretrained_cfg(name, tag), size),
            tokenizer=tokenizer_fact(text_cfg),
            notes=REPARAMETERISED_NOTE if is_reparameterised(vision_cfg) else (),
        ))
    return entries


def _transformers_entries() -> list[ModelInfo]:
    """The well-known transformers ids, with facts read from their config.json where the HF cache has it."""
    from huggingface_hub import try_to_load_from_cache

    entries = []
    for model_id in TRANSFORMERS_MODELS:
        info = {"backend": "transformers", "name": model_id, "pretrained": None,
                "scoring": "sigmoid" if "siglip" in model_id else "softmax"}
        path = try_to_load_from_cache(model_id, "config.json")
        if isinstance(path, str):  # cached locally; otherwise listed without facts rather than downloaded
            try:
                config = json.loads(Path(path).read_text())
                text, vision = config.get("text_config", {}), config.get("vision_config", {})
                info.update(quick_gelu=text.get("hidden_act") == "quick_gelu", image_size=vision.get("image_size"),
                            embed_dim=config.get("projection_dim") or vision.get("hidden_size"),
                            context_length=text.get("max_position_embeddings"))
            except (OSError, ValueError):
                pass
        if model_id.endswith("-naflex"):  # its patch budget is its processor config's
            info["notes"] = ("NaFlex: each image keeps its aspect ratio, up to max_num_patches patches (256 by "
                             "transformers' default), recorded as image_tokens",)
        entries.append(ModelInfo(**info))
    return entries


def _library_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "absent"


#: open_clip's entries and parameter counts for one open_clip release, shipped with pixprompt so that a first
#: listing imports neither torch nor open_clip (`python -m pixprompt.models.catalog` writes it).
SHIPPED_CATALOG = "open_clip_models.json"


def config_digest(config: dict) -> str:
    """A short digest of an architecture's open_clip config: a shipped parameter count is used for another open_clip
    release only where the config it was counted from is the same."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def build_catalog() -> dict:
    """The catalog as shipped: the installed open_clip's entries, and every architecture's config digest and
    parameter count (each built on the meta device: about a minute in all)."""
    import open_clip

    entries = [entry.to_dict() for entry in _open_clip_entries()]
    return {"open_clip_version": _library_version("open_clip_torch"), "entries": entries,
            "architectures": {name: {"config": config_digest(open_clip.get_model_config(name) or {}),
                                     "params": _open_clip_params(name)}
                              for name in sorted({entry["name"] for entry in entries})}}


def shipped_catalog() -> dict:
    """The catalog that ships with pixprompt (see SHIPPED_CATALOG)."""
    return json.loads(resources.files("pixprompt.resources").joinpath(SHIPPED_CATALOG).read_text(encoding="utf-8"))


def _cached_catalog(cache_file: Path | None, open_clip_version: str) -> dict | None:
    """The user cache's catalog, when it was written for the installed open_clip by this pixprompt."""
    if cache_file is None or not cache_file.is_file():
        return None
    try:
        catalog = json.loads(cache_file.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(catalog, dict) or catalog.get("open_clip_version") != open_clip_version \
            or not {"entries", "params"} <= catalog.keys():
        return None  # another open_clip, or an older pixprompt's file
    return catalog


def _parameter_count(name: str, shipped: dict) -> int | None:
    """An architecture's parameter count: the shipped one where its config is unchanged, else counted."""
    import open_clip

    known = shipped.get(name)
    if known and known["config"] == config_digest(open_clip.get_model_config(name) or {}):
        return known["params"]
    return _open_clip_params(name)


def list_models(name_filter: str = "", cache_file: Path | None = None) -> list[ModelInfo]:
    """Every open_clip (name, tag) pair and the well-known transformers ids matching `name_filter`.

    For the open_clip release pixprompt ships its catalog for, the listing is read from that file and imports
    neither torch nor open_clip. For another release, open_clip's entries are read from it and kept in
    `cache_file`, with the parameter counts as they are first listed: the shipped count where the architecture's
    config is unchanged, else counted on the meta device.
    """
    open_clip_version = _library_version("open_clip_torch")
    shipped = shipped_catalog()
    changed = False
    if shipped["open_clip_version"] == open_clip_version:  # every count is there: no cache to read or write
        catalog = {"entries": shipped["entries"],
                   "params": {name: known["params"] for name, known in shipped["architectures"].items()}}
    else:
        catalog = _cached_catalog(cache_file, open_clip_version)
        if catalog is None:
            catalog = {"open_clip_version": open_clip_version, "params": {},
                       "entries": [entry.to_dict() for entry in _open_clip_entries()]}
            changed = True
    needle = name_filter.lower()

    def wanted(entry: dict) -> bool:
        return needle in f"{entry['backend']} {entry['name']} {entry['pretrained'] or ''}".lower()

    matches = [entry for entry in catalog["entries"] if wanted(entry)]
    for name in sorted({entry["name"] for entry in matches} - catalog["params"].keys()):
        catalog["params"][name] = _parameter_count(name, shipped["architectures"])
        changed = True
    if changed and cache_file is not None:
        text = json.dumps(catalog, indent=0)
        cache_write(lambda: write_text_atomic(cache_file, text), cache_file)
    listed = [ModelInfo(**{**entry, "params": catalog["params"][entry["name"]], "notes": tuple(entry.get("notes", ()))})
              for entry in matches]
    return listed + [info for info in _transformers_entries() if wanted(info.to_dict())]


if __name__ == "__main__":  # a maintainer's step when open_clip releases: rewrite the shipped catalog
    target = Path(__file__).resolve().parents[1] / "resources" / SHIPPED_CATALOG
    target.write_text(json.dumps(build_catalog(), indent=0, sort_keys=True) + "\n", encoding="utf-8")
    print(f"wrote {target}")
