"""Image features computed once per (model, weights, preprocessing, dataset item), kept on disk.

A dataset is worked on in fixed shards (`pixprompt.distributed`); each shard's new features are written
as one chunk file, atomically, holding the rows, a 16-byte key per row (a hash of the model and the
item's id: path, size, modification time) and the failures worth remembering. Items are found by key,
through a sorted index of every chunk's keys, so an interrupted run keeps every finished shard, the
next run (with any number of processes) encodes only what is missing, and a changed or added file
invalidates exactly its own entry. Rows are copied chunk by chunk into one preallocated matrix: reading
the cache builds no Python object per item.
"""
from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load as load_safetensors
from safetensors.torch import save_file

from pixprompt import distributed
from pixprompt.errors import first_line
from pixprompt.features.encoding import iter_encoded
from pixprompt.models.device import precision_name
from pixprompt.progress import announce, progress_bar
from pixprompt.storage import (
    atomic_path,
    cache_write,
    identity_digest,
    is_regular_file,
    payload_checksum,
    remove_stale_partials,
)

if TYPE_CHECKING:
    from pixprompt.data.datasets import ImageDataset, ImageSource
    from pixprompt.models.base import VisionLanguageModel

log = logging.getLogger(__name__)

#: Bump when pixprompt's own image decoding changes, so older cached features are not reused.
DECODING_VERSION = "1"
#: Bump when the chunk file layout changes: chunks of another layout sit in another folder, unread.
CHUNK_FORMAT = "2"
KEY_BYTES = 16
#: The error row of an image whose embedding is not finite: it never reaches a score, a cache or a method.
NON_FINITE = "the model gave a non-finite embedding (NaN or inf)"


def _digest(*parts: str) -> str:
    return hashlib.sha1("\x1f".join(parts).encode()).hexdigest()[:20]


def model_key(model: VisionLanguageModel) -> str:
    """What the features depend on: model and weights (local files by size and time), precision, decoding."""
    return _digest(model.info.identity, str(model.dtype), DECODING_VERSION, model.weights_stamp)


def feature_facts(model: VisionLanguageModel, images: Any) -> dict[str, str]:
    """Everything that shapes an image's features: what the ranks of a job must agree on before any work (see
    `distributed.agree`), and what a record's `run_digest` is made from."""
    return {"model": model.info.identity, "weights": model.weights_fingerprint,
            "weights files": model.weights_stamp or "-", "precision": precision_name(model.dtype),
            "preprocessing": model.info.preprocess or "-", "decoding": DECODING_VERSION,
            "--draft-jpeg size": str(getattr(images, "draft_size", None)),
            "--max-pixels": str(getattr(images, "max_pixels", None)),
            "image tokens": str(model.info.image_tokens)}


def _key_rows(keys: np.ndarray) -> np.ndarray:
    """(n, 16) uint8 view of keys (numpy's bytes scalars would drop trailing zero bytes)."""
    return keys.view(np.uint8).reshape(-1, KEY_BYTES)


def _hex(keys: np.ndarray) -> list[str]:
    return [row.tobytes().hex() for row in _key_rows(keys)]


def _chunk_checksum(rows: torch.Tensor, keys: torch.Tensor, failed_json: str) -> str:
    return payload_checksum([rows.contiguous().numpy().tobytes(), keys.contiguous().numpy().tobytes(),
                             failed_json.encode()])


def _read_verified(chunk: Path) -> torch.Tensor:
    """A chunk's feature rows, after checking its checksum. The file is read, not memory-mapped: mapped
    chunks would stay in the process's memory until their handles are collected."""
    data = chunk.read_bytes()
    header_size = int.from_bytes(data[:8], "little")
    meta = json.loads(data[8:8 + header_size])["__metadata__"]
    tensors = load_safetensors(data)
    if _chunk_checksum(tensors["features"], tensors["keys"], meta["failed"]) != meta.get("sha256"):
        raise ValueError("its checksum does not match: the file changed on disk")
    if not torch.isfinite(tensors["features"]).all():  # written by another tool, or before this gate
        raise ValueError("it holds non-finite features")
    return tensors["features"]


@dataclass
class ChunkIndex:
    """Where each stored item's row is: sorted keys with their chunk and row, and remembered failures."""

    chunks: list[Path] = field(default_factory=list)
    keys: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=f"S{KEY_BYTES}"))
    chunk: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32))
    row: np.ndarray = field(default_factory=lambda: np.empty(0, dtype=np.int32))
    failures: dict[str, str] = field(default_factory=dict)

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """For each key: whether it is stored, and its chunk number and row (vectorised)."""
        if not len(self.keys) or not len(keys):
            return np.zeros(len(keys), dtype=bool), np.zeros(len(keys), np.int32), np.zeros(len(keys), np.int32)
        at = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return self.keys[at] == keys, self.chunk[at], self.row[at]

    def remembered(self, keys: np.ndarray, among: np.ndarray) -> dict[int, str]:
        """Failures remembered for the keys at positions `among`."""
        if not self.failures or not len(among):
            return {}
        hexes = _hex(keys[among])
        return {int(j): self.failures[h] for j, h in zip(among, hexes) if h in self.failures}


class FeatureStore:
    """The chunk files of one model (with its weights, precision and decoding).

    An item's key is made from its id (a file's resolved path, size and modification time), never from the
    command or dataset spec that reached it: `eval -d imagenette`, `eval -d imagenet --data-dir …` and
    `classify` of the same files share their features. New chunks go to one folder per model; chunks that
    older pixprompt releases kept in per-dataset folders beside it are read too. Each chunk stores a SHA-256 of
    its payload (features, keys, failures): a chunk whose bytes changed on disk is removed with a warning and
    its images are encoded again.
    """

    def __init__(self, root: Path, model: VisionLanguageModel):
        self.model_key = model_key(model)
        self.folder = root / "features" / self.model_key / f"items@v{CHUNK_FORMAT}"
        self.writable = True  # until a write fails (disk full): then the run goes on uncached

    def chunk_files(self) -> list[Path]:
        """Every chunk of this model: the shared folder's and those of older per-dataset folders."""
        for folder in self.folder.parent.glob(f"*@v{CHUNK_FORMAT}"):
            remove_stale_partials(folder)
        return sorted(self.folder.parent.glob(f"*@v{CHUNK_FORMAT}/chunk-*.safetensors"))

    def item_keys(self, item_ids: Iterable[str]) -> np.ndarray:
        """16-byte keys of the items, as a numpy bytes array."""
        prefix = hashlib.sha1(f"{self.model_key}\x1f".encode())
        keys = []
        for item_id in item_ids:
            digest = prefix.copy()
            digest.update(item_id.encode("utf-8", "surrogateescape"))
            keys.append(digest.digest()[:KEY_BYTES])
        return np.frombuffer(b"".join(keys), dtype=f"S{KEY_BYTES}") if keys else np.empty(0, f"S{KEY_BYTES}")

    def index(self) -> ChunkIndex:
        """Every stored key (reading only the key arrays); unreadable chunks are removed."""
        index = ChunkIndex()
        key_parts, chunk_parts, row_parts = [], [], []
        for chunk in self.chunk_files():
            if not is_regular_file(chunk):  # a FIFO would hang the read, a link point anywhere
                self._discard(chunk, ValueError("not a regular file"))
                continue
            try:
                with safe_open(str(chunk), framework="pt") as handle:
                    meta = handle.metadata()
                    keys = handle.get_tensor("keys")
                    failures = json.loads(meta["failed"])
                if failures:  # failure-only chunks are never loaded: check them here
                    _read_verified(chunk)
            except Exception as error:  # a damaged chunk costs only its own re-encoding
                self._discard(chunk, error)
                continue
            index.failures.update(failures)
            key_parts.append(np.frombuffer(keys.numpy().tobytes(), dtype=f"S{KEY_BYTES}"))
            chunk_parts.append(np.full(len(keys), len(index.chunks), dtype=np.int32))
            row_parts.append(np.arange(len(keys), dtype=np.int32))
            index.chunks.append(chunk)
        if key_parts:
            keys = np.concatenate(key_parts)
            order = np.argsort(keys, kind="stable")
            index.keys, index.chunk, index.row = keys[order], np.concatenate(chunk_parts)[order], \
                np.concatenate(row_parts)[order]
        return index

    @staticmethod
    def _discard(chunk: Path, error: BaseException) -> None:
        """Remove a damaged chunk (a folder standing in its place is left, never deleted with what it holds)."""
        try:
            if chunk.is_dir() and not chunk.is_symlink():
                raise IsADirectoryError(21, "a folder stands where the chunk belongs")
            chunk.unlink(missing_ok=True)
        except OSError as failure:
            log.warning("ignoring damaged cache chunk %s (%s), which cannot be removed (%s); its images are encoded "
                        "again", chunk, first_line(error), failure.strerror or failure)
            return
        log.warning("removing damaged cache chunk %s (%s); its images are encoded again", chunk, first_line(error))

    def load(self, index: ChunkIndex, keys: np.ndarray) -> tuple[np.ndarray, torch.Tensor | None]:
        """The stored rows of `keys` in one (n, D) matrix (zeros where absent) and which were found."""
        found, chunks, rows = index.find(keys)
        got = np.zeros(len(keys), dtype=bool)
        matrix = None
        wanted = np.flatnonzero(found)
        for number in np.unique(chunks[wanted]):
            chunk = index.chunks[number]
            try:
                stored = _read_verified(chunk)
            except Exception as error:
                self._discard(chunk, error)
                continue
            here = wanted[chunks[wanted] == number]
            if matrix is None:
                matrix = torch.zeros(len(keys), stored.shape[1])
            matrix[torch.from_numpy(here)] = stored[torch.from_numpy(rows[here].astype(np.int64))]
            got[here] = True
        return got, matrix

    def write(self, keys: np.ndarray, rows: torch.Tensor, failed: dict[str, str]) -> None:
        """Write one chunk atomically (a crash mid-write leaves no chunk, never a partial one)."""
        if not self.writable or (not len(keys) and not failed):
            return
        key_tensor = torch.from_numpy(_key_rows(keys).copy())
        failed_json = json.dumps(failed)
        name = hashlib.sha1(key_tensor.numpy().tobytes() + failed_json.encode()).hexdigest()[:20]
        path = self.folder / f"chunk-{name}.safetensors"
        tensor = rows.float().contiguous()
        metadata = {"failed": failed_json, "sha256": _chunk_checksum(tensor, key_tensor, failed_json)}

        def save() -> None:
            with atomic_path(path) as tmp:
                save_file({"features": tensor, "keys": key_tensor}, str(tmp), metadata=metadata)

        self.writable = cache_write(save, path)


def refuse_broken_model(model: VisionLanguageModel, failures: dict[int, str], valid: int, of: str) -> None:
    """Stop the run, with one line naming the model, when it gave no finite embedding for any image (a broken model,
    damaged weights, an fp16 overflow), instead of an error row per image."""
    if valid or not failures or any(message != NON_FINITE for message in failures.values()):
        return
    from pixprompt.errors import UnavailableError

    raise UnavailableError(f"model {model.info.label} gave a non-finite embedding (NaN or inf) for every one of the "
                           f"{len(failures):,} images of {of} in {precision_name(model.dtype)}: its "
                           "weights are broken or the precision overflowed (try --precision fp32)")


@dataclass
class ShardPlan:
    """One shard's keys and what the cache holds of it, known before anything is encoded."""

    keys: np.ndarray | None
    cached: int
    remembered: dict[int, str]

    @property
    def size(self) -> int:
        return len(self.keys) if self.keys is not None else 0


@dataclass
class ShardFeatures:
    """Features of one shard's items (rows of failed items are zero, `valid` False)."""

    features: torch.Tensor | None
    valid: torch.Tensor
    failures: dict[int, str]
    encoded: int  # items given to the model (some may have failed)
    cached: int  # items the cache answered: features, or a failure remembered from an earlier run
    remembered: int = 0  # of those, remembered failures

    @property
    def counts(self) -> tuple[int, int, int]:
        """(encoded, read from the cache, failed): every item in exactly one."""
        failed = len(self.failures)
        return self.encoded - (failed - self.remembered), self.cached - self.remembered, failed


class ShardEncoder:
    """Features of one shard at a time for one model: the cache first, the model for the rest, and the
    new rows stored as one chunk (also when interrupted, so that only unfinished work is lost)."""

    def __init__(self, model: VisionLanguageModel, store: FeatureStore | None, batch_size: int | None = None,
                 workers: int | None = None, bar: Any = None):
        self.model, self.store, self.batch_size, self.workers, self.bar = model, store, batch_size, workers, bar
        self.index = store.index() if store else ChunkIndex()
        self.done = 0  # images encoded (or failed) by this process, for the interruption message

    def say_interrupted(self, of: str = "") -> None:
        """Say truthfully, after Ctrl-C, what was kept of this process's work."""
        store = self.store
        kept = "kept in the cache; the next run goes on from there" if store and store.writable \
            else "not cached (--no-cache): the next run encodes them again" if not store \
            else "not cached (the cache could not be written): the next run encodes them again"
        log.warning("interrupted after %d%s images: the features of the %d encoded in this run are %s", self.done,
                    of, self.done, kept)

    def plan(self, images: ImageSource, positions: Sequence[int]) -> ShardPlan:
        """Keys of the shard's items and what the cache already has."""
        if not self.store:
            return ShardPlan(None, 0, {})
        keys = self.store.item_keys(images.item_id(i) for i in positions)
        found = self.index.find(keys)[0]
        remembered = self.index.remembered(keys, np.flatnonzero(~found))
        return ShardPlan(keys, int(found.sum()), remembered)

    def features(self, images: ImageSource, positions: Sequence[int], plan: ShardPlan | None = None) -> ShardFeatures:
        """The shard's features, read from the cache or encoded."""
        plan = plan or self.plan(images, positions)
        count = len(positions)
        got, matrix = self.store.load(self.index, plan.keys) if self.store else (np.zeros(count, bool), None)
        failures = dict(plan.remembered)
        todo = [j for j in range(count) if not got[j] and j not in failures]
        local = {positions[j]: j for j in todo}
        valid = torch.from_numpy(got.copy())
        new_rows: list[int] = []
        new_failed: dict[str, str] = {}
        try:
            for batch in iter_encoded(self.model, images, [positions[j] for j in todo], self.batch_size,
                                      self.workers, bar=self.bar):
                finite = torch.isfinite(batch.features).all(dim=1).tolist() if len(batch.indices) else []
                rows = [local[i] for i, ok in zip(batch.indices.tolist(), finite) if ok]
                for i in (i for i, ok in zip(batch.indices.tolist(), finite) if not ok):
                    failures[local[i]] = NON_FINITE  # not remembered: another precision or model may do
                if rows:
                    if matrix is None:
                        matrix = torch.zeros(count, batch.features.shape[1])
                    matrix[rows] = batch.features[torch.tensor(finite)].float()
                    valid[rows] = True
                    new_rows += rows
                for failure in batch.failures:
                    failures[local[failure.index]] = failure.message
                    if failure.lasting and plan.keys is not None:  # I/O errors and settings-dependent refusals
                        new_failed[_hex(plan.keys[[local[failure.index]]])[0]] = failure.message  # are retried
                self.done += len(finite) + len(batch.failures)
        finally:  # a crash or Ctrl-C keeps every image of the shard encoded so far
            if self.store and (new_rows or new_failed):
                self.store.write(plan.keys[new_rows], matrix[new_rows] if new_rows else torch.zeros(0, 1),
                                 new_failed)
        return ShardFeatures(matrix, valid, failures, encoded=len(todo), cached=count - len(todo),
                             remembered=len(plan.remembered))


@dataclass
class FeatureSet:
    """Features of every item of a dataset (rows of failed items are zero, `valid` False)."""

    features: torch.Tensor
    labels: torch.Tensor
    valid: torch.Tensor
    failures: dict[int, str]
    encoded: int
    from_cache: int


def extract_features(model: VisionLanguageModel, dataset: ImageDataset, cache_root: Path | None,
                     batch_size: int | None = None, workers: int | None = None) -> FeatureSet | None:
    """Features of all images of `dataset`, reading what the cache has and encoding (and storing) the rest.

    Under a launcher with several processes each encodes its shards and rank 0 gets the whole set; the
    other ranks get None.
    """
    ranks = distributed.current()
    images, count = dataset.images, len(dataset.images)
    distributed.agree(feature_facts(model, images), ranks)
    encoder = ShardEncoder(model, FeatureStore(cache_root, model) if cache_root else None,
                           batch_size, workers)
    shards = distributed.shard_ranges(count)
    plans: dict[int, ShardPlan] = {}

    def plan(number: int, shard: range) -> tuple[int, dict[int, str]]:
        plans[number] = encoder.plan(images, shard)
        return plans[number].cached, {shard[j]: message for j, message in plans[number].remembered.items()}

    def identity(shard: range) -> str:  # the ranks must mean the same files by the same positions
        return identity_digest(images.item_id(i) for i in shard)

    cached = 0
    for _, _, (shard_cached, remembered) in distributed.sharded(shards, plan, ranks, identity):
        cached += shard_cached
        for index, message in remembered.items():
            log.warning("skipped %s: %s (remembered from an earlier run until the file changes)",
                        images.describe(index), message)
            cached += 1
    to_encode = count - cached
    if ranks.is_main:
        workers_note = f" on {ranks.world} processes" if ranks.world > 1 and to_encode else ""
        found = f" ({cached:,} found in the cache)" if encoder.store and cached else ""
        announce(f"encoding {to_encode:,} of {count:,} images{workers_note}{found}" if to_encode
                 else f"all {count:,} images found in the cache")

    matrix: torch.Tensor | None = None
    valid = torch.zeros(count, dtype=torch.bool)
    failures: dict[int, str] = {}
    encoded = 0
    with progress_bar(to_encode, "encode images", "img", show=ranks.is_main) as bar:
        encoder.bar = bar
        try:
            for number, shard, part in distributed.sharded(
                    shards, lambda number, shard: encoder.features(images, shard, plans.pop(number)), ranks,
                    identity):
                if part.features is not None:
                    if matrix is None:  # one contiguous matrix, filled shard by shard
                        matrix = torch.zeros(count, part.features.shape[1])
                    matrix[shard.start:shard.stop] = part.features
                valid[shard.start:shard.stop] = part.valid
                failures.update({shard[j]: message for j, message in part.failures.items()})
                encoded += part.encoded
                if number % ranks.world:  # another rank's shard: its images count here once received
                    bar.update(part.encoded)
        except KeyboardInterrupt:
            encoder.say_interrupted(f" of {to_encode}")
            raise
    if not ranks.is_main:
        return None
    return FeatureSet(matrix if matrix is not None else torch.zeros(count, 1),
                      torch.tensor(dataset.labels, dtype=torch.long), valid, failures,
                      encoded=encoded, from_cache=count - encoded)


def classifier_path(cache_root: Path, model: VisionLanguageModel, classnames: Sequence[str],
                    prompt_set_json: str) -> Path:
    """Where the text classifier for these inputs is cached."""
    name = _digest(model_key(model), json.dumps(list(classnames)), prompt_set_json)
    return cache_root / "classifiers" / f"{name}.safetensors"
