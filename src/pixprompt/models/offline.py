"""Weights that are not on this machine: find out in seconds, and say in three short lines what to do.

Without this, a load without network sits in the Hub client's retries for most of a minute and ends in a
long library message. pixprompt looks in the Hugging Face cache first; when the weights are not there it
tries one TCP connection to the Hub (three seconds at most) before any download starts.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from urllib.parse import urlparse

from pixprompt.errors import UnavailableError

PROBE_SECONDS = 3.0
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")


def weights_source(backend: str, name: str, pretrained: str | None) -> str | None:
    """The Hub repo the weights of `name` + `pretrained` come from, when it can be told (None: local files)."""
    if backend == "transformers":
        return None if Path(name).expanduser().exists() else name
    if name.startswith("hf-hub:"):
        return name.removeprefix("hf-hub:")
    if name.startswith("local-dir:"):
        return None
    import open_clip

    config = open_clip.get_pretrained_cfg(name, pretrained) if pretrained else {}
    return config.get("hf_hub", "").strip("/") or None


def offline_hint(backend: str, name: str, pretrained: str | None, cache_dir: str | None) -> str:
    """Three lines: the one command that fetches the weights on a connected machine, and the local alternative
    as command-line options and as the Python call."""
    from huggingface_hub import constants

    cache = cache_dir or constants.HF_HUB_CACHE
    source = weights_source(backend, name, pretrained)
    into = f" --cache-dir {cache_dir}" if cache_dir else ""
    fetch = (f"On a connected machine: `hf download {source}{into}`, then copy {cache} here (or set HF_HOME to a "
             "copy).") if source else f"On a connected machine, load it once, then copy {cache} here."
    model, weights, why = local_copy(name, pretrained) if backend == "open_clip" \
        else ("/path/to/folder", None, " (saved with save_pretrained)")
    options = f"--model {model}" + (f" --pretrained {weights}" if weights else "")
    call = ", ".join(f'"{argument}"' for argument in (model, weights) if argument)
    return (f"{fetch}\nOr run from a local copy: {options}{why}.\n"
            f"In Python: pixprompt.load_model({call}) (README: Offline and local copies).")


def local_copy(name: str, pretrained: str | None) -> tuple[str, str | None, str]:
    """How to load these weights from a local copy: (model, weights file or None, why), with the activation they
    were trained with: a checkpoint file says nothing of it, so OpenAI-trained weights need the `-quickgelu`
    config's name."""
    if name.startswith(("hf-hub:", "local-dir:")):
        return "local-dir:/path/to/folder", None, " (the repo's files: open_clip_config.json and the weights)"
    from pixprompt.models.open_clip_backend import needs_quick_gelu, quick_gelu_name

    model = quick_gelu_name(name) if needs_quick_gelu(name, pretrained) else name
    why = f" (QuickGELU: how the {pretrained} weights were trained)" if model != name else ", or an open_clip folder"
    return model, "/path/open_clip_pytorch_model.bin", why


def _in_hub_cache(source: str, cache_dir: str | None) -> bool:
    from huggingface_hub import constants

    snapshots = Path(cache_dir or constants.HF_HUB_CACHE) / f"models--{source.replace('/', '--')}" / "snapshots"
    return snapshots.is_dir() and any(snapshots.iterdir())


#: Seconds a probe's answer is reused: one retry policy for a whole run (a suite of 38 Hub tasks probes once).
PROBE_REUSE_SECONDS = 60.0
_last_probe: dict[str, tuple[float, bool]] = {}


def hub_reachable(timeout: float = PROBE_SECONDS) -> bool:
    """Whether one TCP connection to the Hub's endpoint opens within `timeout` seconds; the answer is reused for
    PROBE_REUSE_SECONDS, so a run that needs many files from an unreachable Hub waits once."""
    import time

    from huggingface_hub import constants

    endpoint = urlparse(constants.ENDPOINT)
    seen = _last_probe.get(constants.ENDPOINT)
    if seen and time.monotonic() - seen[0] < PROBE_REUSE_SECONDS:
        return seen[1]
    port = endpoint.port or (443 if endpoint.scheme == "https" else 80)
    try:
        with socket.create_connection((endpoint.hostname, port), timeout=timeout):
            reachable = True
    except OSError:
        reachable = False
    _last_probe[constants.ENDPOINT] = (time.monotonic(), reachable)
    return reachable


def require_weights_or_network(backend: str, name: str, pretrained: str | None, cache_dir: str | None) -> None:
    """Refuse at once, in four lines, a load whose weights are neither cached nor downloadable now."""
    from huggingface_hub import constants

    source = weights_source(backend, name, pretrained)
    if source is None or _in_hub_cache(source, cache_dir):
        return
    if constants.HF_HUB_OFFLINE:
        reason = "HF_HUB_OFFLINE is set"
    elif any(os.environ.get(variable) for variable in PROXY_VARIABLES):
        return  # through a proxy only the download itself can tell
    elif not hub_reachable():
        reason = f"{urlparse(constants.ENDPOINT).hostname} cannot be reached (no network?)"
    else:
        return
    what = f"{name} ({pretrained})" if pretrained else name
    raise UnavailableError(f"the weights of {what} are not on this machine and {reason}.\n"
                           f"{offline_hint(backend, name, pretrained, cache_dir)}")
