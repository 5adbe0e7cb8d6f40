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
