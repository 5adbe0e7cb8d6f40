"""Where pixprompt keeps its caches: $PIXPROMPT_CACHE, else the platform's user cache folder."""
from __future__ import annotations

import os
import sys
from pathlib import Path


def cache_root() -> Path:
    """~/.cache/pixprompt on Linux (XDG_CACHE_HOME honoured), ~/Library/Caches/pixprompt on macOS,
    %LOCALAPPDATA%\\pixprompt\\Cache on Windows; PIXPROMPT_CACHE overrides all."""
    if os.environ.get("PIXPROMPT_CACHE"):
        return Path(os.environ["PIXPROMPT_CACHE"]).expanduser()
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "pixprompt"
    if os.name == "nt":
        return Path(os.environ.get("LOCALAPPDATA", Path.home())) / "pixprompt" / "Cache"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "pixprompt"


def resolve_cache(cache: Path | str | bool | None) -> Path | None:
    """The cache folder a `cache_root=` argument names: True (the default) is the CLI's own folder,
    a path is that folder, None or False means no cache at all."""
    if cache is None or cache is False:
        return None
    if cache is True:
        return cache_root()
    return Path(cache).expanduser()
