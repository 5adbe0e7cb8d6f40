"""`classify --output`: predictions written shard by shard, resumable, every image exactly once.

Each finished shard's rows go to a part file, written atomically, in `.NAME.parts/` beside the output
(named by shard number and a digest of the shard's paths). When every shard is done the parts are joined,
in input order, into the output file (atomically) and the folder is removed. A run that dies keeps its
finished parts; the same command again writes only the shards that have none, then joins. A part whose
shard now holds other paths, or parts written under other settings (model, labels, templates, top-k),
are never joined. Under several processes, rank 0 writes the parts and the join.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pixprompt.errors import UsageError
from pixprompt.storage import atomic_path, write_text_atomic

log = logging.getLogger(__name__)

SUFFIXES = (".jsonl", ".csv", ".parquet")


def require_writer(path: str) -> None:
    """Refuse a format that cannot be written here, before any work (Parquet needs pyarrow)."""
    if Path(path).suffix.lower() == ".parquet":
        try:
            import pyarrow  # noqa: F401
        except ImportError:
            raise UsageError("--output FILE.parquet needs pyarrow: pip install pyarrow") from None


def csv_columns(top_k: int) -> list[str]:
    return ["image", "templates", "error"] + [f"{name}_{rank}" for rank in range(1, top_k + 1)
                                              for name in ("label", "probability")]


def csv_row(row: dict[str, Any]) -> dict[str, Any]:
    """One image and template set per CSV line: its top classes side by side."""
    flat = {"image": row["image"], "templates": row["templates"], "error": row.get("error", "")}
    for rank, top in enumerate(row.get("top", []), start=1):
        flat[f"label_{rank}"], flat[f"probability_{rank}"] = top["label"], top["probability"]
    return flat


def _parquet_table(rows: Sequence[dict[str, Any]]):
    import pyarrow as pa

    schema = pa.schema([("image", pa.string()), ("templates", pa.string()), ("labels", pa.list_(pa.string())),
                        ("probabilities", pa.list_(pa.float64())), ("error", pa.string())])
    return pa.Table.from_pylist([{
        "image": row["image"], "templates": row["templates"], "error": row.get("error"),
        "labels": [top["label"] for top in row.get("top", [])],
        "probabilities": [top["probability"] for top in row.get("top", [])],
    } for row in rows], schema=schema)


class PredictionFile:
    """The output of one classify command, built from per-shard parts (see the module docstring)."""

    def __init__(self, path: str | Path, settings: dict[str, Any], top_k: int):
        self.path = Path(path).expanduser()
        self.format = self.path.suffix.lower()
        self.top_k = top_k
        self.parts = self.path.parent / f".{self.path.name}.parts"
        self.joined: list[Path] = []
        self.resumed = 0
        settings_json = json.dumps(settings, sort_keys=True)
        marker = self.parts / "settings.json"
        if self.parts.is_dir() and not (marker.is_file() and marker.read_text(encoding="utf-8") == settings_json):
            log.warning("%s: the unfinished output in %s was made with other settings; starting it over",
                        self.path, self.parts)
            shutil.rmtree(self.parts)
        self.parts.mkdir(exist_ok=True)
        write_text_atomic(marker, settings_json)

    def _part(self, number: int, paths: Sequence[Path]) -> Path:
        digest = hashlib.sha1("\n".join(map(str, paths)).encode("utf-8", "surrogateescape")).hexdigest()[:16]
        return self.parts / f"{number:08d}-{digest}{self.format}"

    def has(self, number: int, paths: Sequence[Path]) -> bool:
        """Whether an earlier run already wrote this shard (then it is joined as it is)."""
        part = self._part(number, paths)
        if part.is_file():
            self.joined.append(part)
            self.resumed += 1
            return True
        return False

    def write(self, number: int, paths: Sequence[Path], rows: Sequence[dict[str, Any]]) -> None:
        """Write one shard's rows as a part file, atomically."""
        part = self._part(number, paths)
        with atomic_path(part) as tmp:
            if self.format == ".parquet":
                import pyarrow.parquet as pq

                pq.write_table(_parquet_table(rows), tmp)
            elif self.format == ".csv":
                text = io.StringIO()
                csv.DictWriter(text, csv_columns(self.top_k), lineterminator="\n").writerows(map(csv_row, rows))
                tmp.write_text(text.getvalue(), encoding="utf-8")
            else:
                tmp.write_text("".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows), encoding="utf-8")
        self.joined.append(part)

    def finish(self) -> None:
        """Join this run's parts, in shard order, into the output file; then remove the parts."""
        if self.resumed:
            log.warning("%s: %d shard(s) were already written by an earlier run; joined as they were", self.path,
                        self.resumed)
        with atomic_path(self.path) as tmp:
            if self.format == ".parquet":
                import pyarrow.parquet as pq

                with pq.ParquetWriter(tmp, _parquet_table([]).schema) as writer:
                    for part in self.joined:  # one part in memory at a time
                        writer.write_table(pq.read_table(part))
            else:
                with tmp.open("wb") as out:
                    if self.format == ".csv":
                        out.write((",".join(csv_columns(self.top_k)) + "\n").encode())
                    for part in self.joined:
                        with part.open("rb") as source:
                            shutil.copyfileobj(source, out)
        shutil.rmtree(self.parts, ignore_errors=True)
