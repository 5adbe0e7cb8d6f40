"""Atomic file writes: a reader never sees a half-written file, and a failed write leaves nothing behind.

Temporary files are named `.NAME.HOST.PID.RANDOM.partial`, so that a process killed mid-write (SIGKILL,
power loss) leaves a partial that a later run can recognise as abandoned and remove
(`remove_stale_partials`), while another live process's partial is left alone.
"""
from __future__ import annotations

import contextlib
import glob
import hashlib
import logging
import os
import socket
import stat
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

#: A partial older than this is abandoned even if its writer cannot be checked (another host).
STALE_PARTIAL_SECONDS = 24 * 3600
_HOST = socket.gethostname().replace(".", "_")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; on success it is renamed over `path`, on failure removed."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.{_HOST}.{os.getpid()}.", suffix=".partial",
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a finished file gets the mode any tool gives
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


def _umask() -> int:
    """The process's umask (read by setting it, so set straight back)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _writer_is_gone(partial: Path) -> bool:
    """Whether the process that wrote `partial` can no longer finish it."""
    parts = partial.name.split(".")
    try:
        if time.time() - partial.stat().st_mtime > STALE_PARTIAL_SECONDS:
            return True
        host, pid = parts[-4], int(parts[-3])
    except (OSError, IndexError, ValueError):
        return False
    if host != _HOST:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, owned by another user
        return False
    return False


def remove_stale_partials(folder: Path, prefix: str = ".") -> int:
    """Remove the `.partial` files in `folder` (named `prefix…`) whose writer died (same host) or that are a
    day old; links and other non-files are never followed, only regular files removed."""
    removed = 0
    for partial in folder.glob(f"{glob.escape(prefix)}*.partial") if folder.is_dir() else ():
        if partial.is_file() and not partial.is_symlink() and _writer_is_gone(partial):
            with contextlib.suppress(OSError):
                partial.unlink()
                removed += 1
    if removed:
        log.info("removed %d abandoned partial file(s) in %s", removed, folder)
    return removed


def write_output(write: Callable[[], None], path: str | os.PathLike) -> None:
    """Run the write of a file the user asked for; a failure is one error line (exit 1), not a traceback."""
    from pixprompt.errors import InputFailedError

    try:
        write()
    except write_errors() as error:
        raise InputFailedError(f"could not write {path}: {write_error_reason(error)}") from None


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write a UTF-8 text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def payload_checksum(parts: Iterable[bytes]) -> str:
    """A SHA-256 over a cache file's payload, stored beside it to detect flipped or lost bytes."""
    digest = hashlib.sha256()
    for part in parts:
        digest.update(len(part).to_bytes(8, "little"))
        digest.update(part)
    return digest.hexdigest()


def is_regular_file(path: Path) -> bool:
    """Whether `path` itself (not a link's target) is a regular file: the only kind a cache reads."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def identity_digest(item_ids: Iterable[str]) -> str:
    """`COUNT:DIGEST` of a sequence of item ids (path, size, modification time…): whether two processes, or
    two runs, mean the same items."""
    digest = hashlib.sha256()
    count = 0
    for item_id in item_ids:
        digest.update(item_id.encode("utf-8", "surrogateescape") + b"\0")
        count += 1
    return f"{count}:{digest.hexdigest()[:24]}"


def write_errors() -> tuple[type[BaseException], ...]:
    """What a failed write raises: OSError, and safetensors' own error, which a full disk raises instead."""
    try:
        from safetensors import SafetensorError
    except ImportError:  # pragma: no cover - safetensors is a dependency
        return (OSError,)
    return (OSError, SafetensorError)


#: Reasons already warned about: a full disk is one warning per process, not one per file.
_warned_reasons: set[str] = set()


def write_error_reason(error: BaseException) -> str:
    """The reason a write failed, in a few words ("No space left on device")."""
    return getattr(error, "strerror", None) or str(error).strip() or type(error).__name__


def cache_write(write: Callable[[], None], path: str | os.PathLike) -> bool:
    """Run one cache or side-file write; a full disk, a read-only folder or missing permissions cost only it.

    The failed file leaves nothing behind (`atomic_path`); the first failure for each reason is one
    warning naming the file, later ones are logged at INFO. Returns whether the write succeeded.
    """
    try:
        write()
    except write_errors() as error:
        reason = write_error_reason(error)
        level = logging.INFO if reason in _warned_reasons else logging.WARNING
        _warned_reasons.add(reason)
        log.log(level, "could not write cache file %s (%s): going on without caching it; free some space or "
                "point PIXPROMPT_CACHE / --cache-dir elsewhere", path, reason)
        return False
    return True
