"""`classify --output`: predictions written shard by shard, resumable, every image exactly once.

Each finished shard's rows go to a part file, written atomically, in a private `.NAME.parts/` folder
beside the output. A part's name carries its shard number, the identity of its images (a digest of
their paths, sizes and modification times), its row count and a checksum of its bytes. When every shard
is done the parts are joined, in input order, into the output file (atomically) and the folder is
removed. A run that dies keeps its finished parts; the same command again writes only the shards that
have no sound part, then joins. A part whose images changed, whose bytes do not match its checksum,
that is a link, a FIFO or another user's file, or parts written under other settings (model, labels,
templates, top-k), are never joined: their shards are classified again. One run at a time writes an
output: it holds a lock on the parts folder (`flock`, released by the kernel when the holder dies) and a
second run refuses at once, naming the holder's pid. Under several processes, rank 0 writes the parts
and the join.
"""
from __future__ import annotations

import contextlib
import csv
import fcntl
import hashlib
import io
import logging
import os
import re
import shutil
import stat
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pixprompt.errors import InputFailedError, UsageError
from pixprompt.reports.tables import csv_cells, json_text
from pixprompt.storage import atomic_path, remove_stale_partials, write_text_atomic

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".csv", ".parquet")
#: A part holds one shard's rows; anything larger in the parts folder is not one of ours.
MAX_PART_BYTES = 1 << 30
_SETTINGS, _OWNER = "settings.json", "owner.pid"


def require_writer(path: str) -> None:
    """Refuse a format that cannot be written here, before any work (Parquet needs pyarrow)."""
    if Path(path).suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UsageError("--output FILE.parquet needs pyarrow: pip install pyarrow") from None


def csv_columns(top_k: int, prediction: bool = False) -> list[str]:
    """The columns of a CSV of predictions (`-o FILE.csv` and `--csv` alike): with `prediction`
    (`--min-probability`), the top class or `unknown`; probabilities are 0–1, as JSON and Parquet hold them."""
    return ["image", "templates", *(["prediction"] if prediction else []), "error"] + \
        [f"{name}_{rank}" for rank in range(1, top_k + 1) for name in ("label", "probability")]


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """One image and template set per CSV line: its top classes side by side."""
    flat = {"image": row["image"], "templates": row["templates"], "error": row.get("error", "")}
    if "prediction" in row:
        flat["prediction"] = row["prediction"]
    for rank, top in enumerate(row.get("top", []), start=1):
        flat[f"label_{rank}"], flat[f"probability_{rank}"] = top["label"], top["probability"]
    return flat


def _parquet_table(rows: Sequence[dict[str, Any]], prediction: bool = False):
    import pyarrow as pa

    schema = pa.schema([("image", pa.string()), ("templates", pa.string()),
                        *([("prediction", pa.string())] if prediction else []), ("labels", pa.list_(pa.string())),
                        ("probabilities", pa.list_(pa.float64())), ("error", pa.string())])
    return pa.Table.from_pylist([{
        "image": row["image"], "templates": row["templates"], "error": row.get("error"),
        **({"prediction": row.get("prediction")} if prediction else {}),
        "labels": [top["label"] for top in row.get("top", [])],
        "probabilities": [top["probability"] for top in row.get("top", [])],
    } for row in rows], schema=schema)


def _read_regular(path: Path, limit: int = MAX_PART_BYTES) -> bytes:
    """The bytes of a regular file of this user's, never following a link and never blocking on a FIFO."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ValueError("it is not a regular file")
        if info.st_uid != os.geteuid():
            raise ValueError("it belongs to another user")
        if info.st_size > limit:
            raise ValueError(f"it is {info.st_size} bytes, more than a part can be")
        with os.fdopen(os.dup(fd), "rb") as handle:
            return handle.read(limit + 1)
    finally:
        os.close(fd)


class PredictionFile:
    """The output of one classify command, built from per-shard parts (see the module docstring)."""

    _PART = re.compile(r"^(\d{8})-(\d+)-([0-9a-f]{24})-r(\d+)-([0-9a-f]{32})(\.[a-z]+)$")

    def __init__(self, path: str | Path, top_k: int, prediction: bool = False):
        """Lock the output for this run (a second run refuses at once); `begin` then says what it holds.
        `prediction`: rows carry the top class or `unknown` (`--min-probability`), as a column of every format."""
        self.path = Path(path).expanduser()
        self.format = self.path.suffix.lower()
        self.top_k, self.prediction = top_k, prediction
        self.parts = self.path.parent / f".{self.path.name}.parts"
        self.joined: list[Path] = []
        self.entries: dict[tuple[int, str], Path] = {}
        self.resumed = 0
        self._lock = self._take_lock()
        remove_stale_partials(self.path.parent, prefix=f".{self.path.name}.")  # a killed join's temporary file
        remove_stale_partials(self.parts)

    def begin(self, settings: dict[str, Any]) -> None:
        """Keep the earlier run's parts when it had these very settings (model, labels, templates…), else
        start the output over."""
        settings_json = json_text(settings, indent=None)
        try:
            same = _read_regular(self.parts / _SETTINGS).decode("utf-8") == settings_json
        except (OSError, ValueError):
            same = False
        self.entries = self._scan()
        if not same and self.entries:
            log.warning("%s: the unfinished output in %s was made with other settings; starting it over",
                        self.path, self.parts)
            for entry in self.entries.values():
                self._remove(entry)
            self.entries = {}
        write_text_atomic(self.parts / _SETTINGS, settings_json)

    # -- the parts folder ------------------------------------------------------------------------------------
    def _take_lock(self) -> int:
        """Create the private parts folder (or check the one there) and lock it for this run."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.parts, 0o700)
        info = os.lstat(self.parts)
        if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            what = "a link" if stat.S_ISLNK(info.st_mode) else "not a folder" if not stat.S_ISDIR(info.st_mode) \
                else "another user's folder"
            raise UsageError(f"{self.parts} (where {self.path.name}'s unfinished parts are kept) is {what}: "
                             "remove it, or write --output elsewhere")
        fd = os.open(self.parts, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            try:
                holder = f" (pid {int(_read_regular(self.parts / _OWNER, 64))})"
            except (OSError, ValueError):
                holder = ""
            raise UsageError(f"another pixprompt run{holder} is writing {self.path}: wait for it to finish, or "
                             "write --output elsewhere") from None
        os.chmod(self.parts, 0o700)  # private, also when an older version made it
        write_text_atomic(self.parts / _OWNER, str(os.getpid()))
        return fd

    def _scan(self) -> dict[tuple[int, str], Path]:
        """The parts folder's sound-looking parts by (shard number, identity); anything else is removed."""
        entries: dict[tuple[int, str], Path] = {}
        for entry in os.scandir(self.parts):
            if entry.name in (_SETTINGS, _OWNER) and entry.is_file(follow_symlinks=False):
                continue
            match = self._PART.match(entry.name)
            if match and match.group(6) == self.format and entry.is_file(follow_symlinks=False):
                entries[(int(match.group(1)), f"{match.group(2)}:{match.group(3)}")] = Path(entry.path)
            elif match:
                what = "a link" if entry.is_symlink() else "not a regular file"
                log.warning("%s: part %s is damaged (it is %s): its images are classified again", self.path,
                            entry.name, what)
                self._remove(Path(entry.path))
            elif not entry.name.endswith(".partial"):  # partials: their writer may be alive
                log.warning("%s: removing %s, which is not a part this output was written with", self.path,
                            entry.path)
                self._remove(Path(entry.path))
        return entries

    @staticmethod
    def _remove(path: Path) -> None:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)

    def _name(self, number: int, identity: str, rows: int, payload: bytes) -> str:
        count, digest = identity.split(":", 1)
        return f"{number:08d}-{count}-{digest}-r{rows}-{hashlib.sha256(payload).hexdigest()[:32]}{self.format}"

    def _verified(self, part: Path) -> bytes:
        """A part's bytes, checked against the checksum and row count its name carries."""
        match = self._PART.match(part.name)
        if not match:
            raise ValueError("its name is not a part's")
        payload = _read_regular(part)
        if hashlib.sha256(payload).hexdigest()[:32] != match.group(5):
            raise ValueError("its bytes do not match its checksum (truncated or changed)")
        if self._row_count(payload) != int(match.group(4)):
            raise ValueError(f"it does not hold the {match.group(4)} rows it was written with")
        return payload

    def _row_count(self, payload: bytes) -> int:
        if self.format == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(io.BytesIO(payload)).metadata.num_rows
        if self.format == ".csv":
            return sum(1 for _ in csv.reader(io.StringIO(payload.decode("utf-8"))))
        return payload.count(b"\n")

    def _payload(self, rows: Sequence[dict[str, Any]]) -> bytes:
        if self.format == ".parquet":
            import pyarrow.parquet as pq

            buffer = io.BytesIO()
            pq.write_table(_parquet_table(rows, self.prediction), buffer)
            return buffer.getvalue()
        if self.format == ".csv":
            text = io.StringIO()
            columns = csv_columns(self.top_k, self.prediction)
            csv.DictWriter(text, columns, lineterminator="\n").writerows(csv_cells(csv_row(row), columns)
                                                                          for row in rows)
            return text.getvalue().encode("utf-8")
        return "".join(json_text(row, indent=None) + "\n" for row in rows).encode("utf-8")

    # -- the run ---------------------------------------------------------------------------------------------
    def has(self, number: int, identity: str) -> bool:
        """Whether an earlier run wrote this shard, with these very files, in a part that is sound (then it is
        joined as it is); a damaged part is removed, so that its shard is written again."""
        part = self.entries.pop((number, identity), None)
        if part is None:
            return False
        try:
            self._verified(part)
        except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
            log.warning("%s: part %s is damaged (%s): its images are classified again", self.path, part.name,
                        error)
            self._remove(part)
            return False
        self.joined.append(part)
        self.resumed += 1
        return True

    def write(self, number: int, identity: str, rows: Sequence[dict[str, Any]]) -> None:
        """Write one shard's rows as a part file, atomically."""
        payload = self._payload(rows)
        part = self.parts / self._name(number, identity, len(rows), payload)
        with atomic_path(part) as tmp:
            tmp.write_bytes(payload)
        self.joined.append(part)

    def finish(self) -> None:
        """Join this run's parts, in shard order, into the output file, checking each again; then remove the
        parts folder."""
        if self.resumed:  # a resume is the normal case after an interruption: said, not warned
            from pixprompt.progress import announce

            announce(f"{self.path}: {self.resumed} shard(s) were already written by an earlier run; joined as they "
                     "were")
        with atomic_path(self.path) as tmp:
            if self.format == ".parquet":
                import pyarrow.parquet as pq

                with pq.ParquetWriter(tmp, _parquet_table([], self.prediction).schema) as writer:
                    for part in self.joined:  # one part in memory at a time
                        writer.write_table(pq.read_table(io.BytesIO(self._checked(part))))
            else:
                with tmp.open("wb") as out:
                    if self.format == ".csv":
                        out.write((",".join(csv_columns(self.top_k, self.prediction)) + "\n").encode())
                    for part in self.joined:
                        out.write(self._checked(part))
        shutil.rmtree(self.parts, ignore_errors=True)
        self.close()

    def _checked(self, part: Path) -> bytes:
        try:
            return self._verified(part)
        except (OSError, ValueError) as error:  # UnicodeDecodeError is a ValueError
            raise InputFailedError(f"part {part.name} of {self.path} changed while this run was writing it "
                                   f"({error}); nothing was joined: run the same command again") from None

    def close(self) -> None:
        """Release the lock; a parts folder that holds no part (a refused or failed run) is removed."""
        if self._lock < 0:
            return
        if self.parts.is_dir() and not self.parts.is_symlink() and not self.joined and not self._holds_parts():
            shutil.rmtree(self.parts, ignore_errors=True)
        os.close(self._lock)
        self._lock = -1

    def _holds_parts(self) -> bool:
        """Whether the parts folder holds any part."""
        return any(self._PART.match(entry.name) for entry in os.scandir(self.parts))
