"""Resolve what the user named (a built-in name, `hf-hub:`, `local-dir:`, a Hub id, a folder) to a backend."""
from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import torch

from pixprompt.errors import PixpromptError, UnavailableError, UsageError, first_line
from pixprompt.models.base import VisionLanguageModel
from pixprompt.models.device import choose_precision, resolve_device
from pixprompt.models.info import display_model
from pixprompt.models.load_errors import describe_load_error, is_local
from pixprompt.models.offline import offline_hint, require_weights_or_network
from pixprompt.progress import announce

log = logging.getLogger(__name__)

Loader = Callable[[str, str | None, torch.device, str, str | None], VisionLanguageModel]


def _load_open_clip(name: str, pretrained: str | None, device: torch.device, precision: str,
                    cache_dir: str | None) -> VisionLanguageModel:
    from pixprompt.models.open_clip_backend import SCHEMAS, OpenClipModel

    if pretrained and name.startswith(SCHEMAS):
        raise UsageError(f"--pretrained {pretrained!r} does not apply to {name}: its weights come with it "
                         "(leave --pretrained out)")
    return OpenClipModel.load(name, pretrained, device, precision, cache_dir)


def _load_transformers(name: str, pretrained: str | None, device: torch.device, precision: str,
                       cache_dir: str | None) -> VisionLanguageModel:
    from pixprompt.models.hf_backend import TransformersModel

    if pretrained:
        raise UsageError(f"--pretrained {pretrained!r} does not apply to transformers model {name}: "
                         "the Hub id or folder names the weights")
    return TransformersModel.load(name, device, precision, cache_dir)


BACKENDS: dict[str, Loader] = {"open_clip": _load_open_clip, "transformers": _load_transformers}


def detect_backend(name: str) -> tuple[str, str]:
    """(backend, name as that backend wants it) for what the user typed.

    A local folder is recognised by its files: `open_clip_config.json` (open_clip) or `config.json`
    (transformers). `hf-hub:`/`local-dir:` are open_clip's schemas; `org/name` is a transformers Hub id.
    """
    if name.startswith(("hf-hub:", "local-dir:")):
        return "open_clip", name
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "open_clip_config.json").is_file():
            return "open_clip", f"local-dir:{path}"
        if (path / "config.json").is_file():
            return "transformers", str(path)
        raise UnavailableError(
            f"folder {path} holds no model: expected open_clip_config.json (open_clip) or config.json "
            "(transformers) beside the weights"
        )
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return "transformers", name
    if os.sep in name or name.startswith("."):
        raise UnavailableError(f"model folder {name} does not exist")
    return "open_clip", name


def local_weights_stamp(*sources: str | None) -> str:
    """Size and modification time of every local file among `sources` (model folders and checkpoint paths).

    What it cannot see: an edit that keeps a file's size and restores its modification time (`touch -r`).
    """
    entries = []
    for source in sources:
        path = Path(source.removeprefix("local-dir:")).expanduser() if source else None
        if path is None or not path.exists():
            continue
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            stat = file.stat()
            entries.append(f"{file.resolve()}:{stat.st_size}:{stat.st_mtime_ns}")
    return ";".join(entries)


def load_model(name: str, pretrained: str | None = None, *, backend: str | None = None,
               device: str | None = None, precision: str | None = None,
               cache_dir: str | None = None, accelerate: str | None = None) -> VisionLanguageModel:
    """Load any CLIP-like dual encoder by name, ready for inference.

    Args:
        name: open_clip name (`ViT-B-32`), `hf-hub:org/repo`, `local-dir:PATH`, a transformers Hub id
            (`openai/clip-vit-base-patch32`) or a local folder of either library.
        pretrained: open_clip pretrained tag (`openai`, `laion2b_s34b_b79k`, `webli`, …) or checkpoint path.
        backend: force `open_clip` or `transformers` instead of detecting it from the name.
        device: `auto` (default), `cpu`, `cuda`, `cuda:N` or `mps`.
        precision: `auto` (default: fp16 on CUDA; bf16 on a CPU with bf16 matrix units, where it keeps the
            answers of fp32 on a probe; fp32 elsewhere), `fp32`, `fp16` or `bf16`.
        cache_dir: where weights are downloaded (default: the Hugging Face cache).
        accelerate: an optional faster image path (`compile`, `channels-last`, `onnx`), used only if it
            reproduces the eager embeddings (see `pixprompt.models.acceleration`).
    """
    detected, resolved_name = detect_backend(name)
    backend = backend or detected
    if backend not in BACKENDS:
        raise UsageError(f"unknown backend {backend!r}: use one of {', '.join(BACKENDS)}")
    torch_device = resolve_device(device)
    resolved_precision, reason = choose_precision(precision, torch_device)
    # auto's bf16 on a CPU is checked against fp32: loaded in fp32, cast once the probe agrees
    checked = resolved_precision == "bf16" and torch_device.type == "cpu" and precision in (None, "", "auto")
    shown = f"{display_model(name)} (local folder)" if display_model(name) != name else name
    announce(f"loading {shown}{f' ({pretrained})' if pretrained else ''} on {torch_device}…")
    try:
        if not is_local(name):
            require_weights_or_network(backend, resolved_name, pretrained, cache_dir)
        model = BACKENDS[backend](resolved_name, pretrained, torch_device, "fp32" if checked else resolved_precision,
                                  cache_dir)
    except PixpromptError:
        raise
    except Exception as error:  # library errors (download, config, checkpoint) become one actionable line
        log.debug("loading %s failed", name, exc_info=True)
        what = f"{name} ({pretrained})" if pretrained else name
        described = describe_load_error(error, name)
        if described:
            raise UnavailableError(f"could not load model {what}: {described}") from None
        cause = first_line(error)
        cause = cause if len(cause) <= 160 else cause[:160].rsplit(" ", 1)[0] + " …"
        cause = cause.split(" Last error:")[0].rstrip(".")  # huggingface_hub appends a cut-off fragment
        hint = "" if is_local(name) else f"\n{offline_hint(backend, name, pretrained, cache_dir)}"
        raise UnavailableError(f"could not load model {what} with {backend}: {cause}.{hint}") from None
    if checked:
        from pixprompt.models.cpu_precision import keeps_answers_in_bf16

        holds, measure = keeps_answers_in_bf16(model)
        if holds:
            reason = f"{reason}; {measure}"
        else:
            log.warning("bf16 is not kept for %s on this CPU (%s): it runs in fp32 (--precision bf16 forces bf16)",
                        display_model(name), measure)
            model = BACKENDS[backend](resolved_name, pretrained, torch_device, "fp32", cache_dir)
            resolved_precision, reason = "fp32", f"auto: bf16 failed the check against fp32 ({measure})"
    model.precision_reason = reason
    model.weights_stamp = local_weights_stamp(resolved_name, pretrained)
    log.info("loaded %s on %s (%s: %s)", model.info.identity, torch_device, resolved_precision, reason)
    if accelerate and model.info.image_tokens:
        raise UsageError(f"--accelerate exports a fixed-resolution image tower; {name} is NaFlex (images of their "
                         "own shape): leave --accelerate out")
    if accelerate:
        from pixprompt.models.acceleration import accelerate as switch_image_path

        switch_image_path(model, accelerate)
    return model
