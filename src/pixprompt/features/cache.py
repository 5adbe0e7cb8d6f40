"""Image features computed once per (model, weights, preprocessing, dataset item), kept on disk.

Each chunk file holds the features of up to `chunk_size` items, keyed by a hash of the model and
the item's id (path, size, modification time). Chunks are written atomically as they complete, so an
interrupted run keeps every finished chunk, the next run encodes only what is missing, and a changed
or added file invalidates exactly its own entry.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from pixprompt.errors import first_line
from pixprompt.features.encoding import iter_encoded
from pixprompt.progress import announce
from pixprompt.storage import atomic_path, cache_write, payload_checksum, remove_stale_partials

if TYPE_CHECKING:
    from pixprompt.data.datasets import ImageDataset
    from pixprompt.models.base import VisionLanguageModel

log = logging.getLogger(__name__)

#: Bump when pixprompt's own image decoding changes, so older cached features are not reused.
DECODING_VERSION = "1"


def _digest(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:20]


def model_key(model: VisionLanguageModel) -> str:
    """What the features depend on: model and weights (local files by size and time), precision, decoding."""
    return _digest(model.info.identity, str(model.dtype), DECODING_VERSION, model.weights_stamp)


def _chunk_checksum(rows: torch.Tensor, keys_json: str, failed_json: str) -> str:
    return payload_checksum([rows.contiguous().numpy().tobytes(), keys_json.encode(), failed_json.encode()])


@dataclass
class FeatureSet:
    """Features of every item of a dataset (rows of failed items are zero, `valid` False)."""

    features: torch.Tensor
    labels: torch.Tensor
    valid: torch.Tensor
    failures: dict[int, str]
    encoded: int
    from_cache: int


class FeatureStore:
    """The chunk files of one (model, dataset) pair.

    Each chunk stores a SHA-256 of its payload (features, keys, failures): a chunk whose bytes changed
    on disk is removed with a warning and its images are encoded again.
    """

    def __init__(self, root: Path, model: VisionLanguageModel, group: str):
        slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", group)
        self.model_key = model_key(model)
        self.folder = root / "features" / self.model_key / slug
        self.writable = True  # until a write fails (disk full): then the run goes on uncached

    def item_keys(self, item_ids: Sequence[str]) -> list[str]:
        return [_digest(self.model_key, item_id) for item_id in item_ids]

    def read(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Stored features and failures by item key; unreadable chunks are removed."""
        features: dict[str, torch.Tensor] = {}
        failures: dict[str, str] = {}
        remove_stale_partials(self.folder)
        for chunk in sorted(self.folder.glob("chunk-*.safetensors")):
            try:
                with safe_open(str(chunk), framework="pt") as handle:
                    meta = handle.metadata()
                    rows = handle.get_tensor("features")
                if _chunk_checksum(rows, meta["keys"], meta["failed"]) != meta.get("sha256"):
                    raise ValueError("its checksum does not match: the file changed on disk")
                keys = json.loads(meta["keys"])
                chunk_failures = json.loads(meta["failed"])
            except Exception as error:  # a damaged chunk costs only its own re-encoding
                log.warning("removing damaged cache chunk %s (%s); its images are encoded again", chunk,
                            first_line(error))
                chunk.unlink(missing_ok=True)
                continue
            failures.update(chunk_failures)
            features.update(zip(keys, rows))
        return features, failures

    def write(self, keys: list[str], rows: list[torch.Tensor], failed: dict[str, str]) -> None:
        """Write one chunk atomically (a crash mid-write leaves no chunk, never a partial one)."""
        if not self.writable or (not keys and not failed):
            return
        path = self.folder / f"chunk-{_digest(*keys, *failed)}.safetensors"
        dim = rows[0].shape[0] if rows else 0
        tensor = (torch.stack(rows) if rows else torch.zeros(0, dim)).contiguous()
        keys_json, failed_json = json.dumps(keys), json.dumps(failed)
        metadata = {"keys": keys_json, "failed": failed_json,
                    "sha256": _chunk_checksum(tensor, keys_json, failed_json)}

        def save() -> None:
            with atomic_path(path) as tmp:
                save_file({"features": tensor}, str(tmp), metadata=metadata)

        self.writable = cache_write(save, path)


def extract_features(model: VisionLanguageModel, dataset: ImageDataset, cache_root: Path | None,
                     batch_size: int | None = None, workers: int | None = None, chunk_size: int = 512) -> FeatureSet:
    """Features of all images of `dataset`, reading what the cache has and encoding (and storing) the rest."""
    count = len(dataset.images)
    store = FeatureStore(cache_root, model, dataset.cache_group) if cache_root else None
    keys = store.item_keys([dataset.images.item_id(i) for i in range(count)]) if store else [""] * count
    stored, stored_failures = store.read() if store else ({}, {})
    todo = [i for i, key in enumerate(keys) if key not in stored and key not in stored_failures]
    if store and 0 < len(todo) < count:  # an earlier run stopped part-way (or the data changed)
        log.warning("resuming from the cache: %d of %d images already encoded, %d to go", count - len(todo),
                    count, len(todo))
    for index, key in enumerate(keys):
        if key in stored_failures:
            log.warning("skipped %s: %s (remembered from an earlier run until the file changes)",
                        dataset.images.describe(index), stored_failures[key])

    pending_keys: list[str] = []
    pending_rows: list[torch.Tensor] = []
    pending_failed: dict[str, str] = {}
    new_rows: dict[int, torch.Tensor] = {}
    new_failures: dict[int, str] = {}

    def flush() -> None:
        if store:
            store.write(list(pending_keys), list(pending_rows), dict(pending_failed))
        pending_keys.clear(), pending_rows.clear(), pending_failed.clear()

    announce(f"encoding {len(todo)} of {count} images" if todo else f"all {count} images found in the cache")
    try:
        for batch in iter_encoded(model, dataset.images, todo, batch_size=batch_size, workers=workers):
            for index, row in zip(batch.indices.tolist(), batch.features):
                new_rows[index] = row
                pending_keys.append(keys[index])
                pending_rows.append(row)
            for failure in batch.failures:
                new_failures[failure.index] = failure.message
                if failure.lasting:  # I/O errors and settings-dependent refusals are retried next run
                    pending_failed[keys[failure.index]] = failure.message
            if len(pending_keys) + len(pending_failed) >= chunk_size:
                flush()
    except BaseException as error:  # a crash or Ctrl-C keeps every image encoded so far
        flush()
        if isinstance(error, KeyboardInterrupt):  # and says truthfully what was kept
            done = len(new_rows) + len(new_failures)
            kept = "kept in the cache; the next run goes on from there" if store and store.writable else \
                "not kept (no cache)" if not store else "not kept (the cache could not be written)"
            log.warning("interrupted after %d of %d images: the %d encoded in this run are %s", done, len(todo),
                        done, kept)
        raise
    flush()

    rows = {i: stored[k] for i, k in enumerate(keys) if k in stored} | new_rows
    failures = {i: stored_failures[k] for i, k in enumerate(keys) if k in stored_failures} | new_failures
    dim = next(iter(rows.values())).shape[0] if rows else 1
    features = torch.zeros(count, dim)
    valid = torch.zeros(count, dtype=torch.bool)
    for index, row in rows.items():
        features[index] = row
        valid[index] = True
    return FeatureSet(features, torch.tensor(dataset.labels, dtype=torch.long), valid, failures,
                      encoded=len(todo), from_cache=count - len(todo))


def classifier_path(cache_root: Path, model: VisionLanguageModel, classnames: Sequence[str],
                    prompt_set_json: str) -> Path:
    """Where the text classifier for these inputs is cached."""
    name = _digest(model_key(model), json.dumps(list(classnames)), prompt_set_json)
    return cache_root / "classifiers" / f"{name}.safetensors"
