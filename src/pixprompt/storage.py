"""Atomic file writes: a reader never sees a half-written file, and a failed write leaves nothing behind."""
from __future__ import annotations

import contextlib
import logging
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed over `path`, on failure removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a UTF-8 text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def cache_write(write: Callable[[], None], path: str | os.PathLike) -> bool:
    """Run one cache write; a full disk, a read-only folder or missing permissions cost only the caching.

    The failed file leaves nothing behind (`atomic_path`), one warning names it, and the run goes on.
    Returns whether the write succeeded.
    """
    try:
        write()
    except OSError as error:
        log.warning("could not write cache file %s (%s): going on without caching it; free some space or "
                    "point PIXPROMPT_CACHE / --cache-dir elsewhere", path, error.strerror or error)
        return False
    return True
