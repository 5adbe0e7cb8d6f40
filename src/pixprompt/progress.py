"""Progress bars on stderr, so that `--json` output on stdout stays clean."""
from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

#: Set by the CLI's --quiet flag; library users can switch bars off the same way.
ENABLED = True


def progress_bar(**kwargs: Any) -> tqdm:
    """A tqdm bar on stderr that hides itself for short steps and when progress is disabled."""
    kwargs.setdefault("file", sys.stderr)
    kwargs.setdefault("dynamic_ncols", True)
    kwargs.setdefault("leave", False)
    kwargs.setdefault("mininterval", 0.5)
    kwargs.setdefault("delay", 1.0)
    return tqdm(disable=not ENABLED, **kwargs)
