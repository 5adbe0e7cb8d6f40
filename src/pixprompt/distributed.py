"""Several processes on one job: rank discovery, fixed shards dealt round-robin, results merged on rank 0.

pixprompt schedules nothing itself: torchrun (`RANK`, `WORLD_SIZE`, `LOCAL_RANK`), SLURM's srun
(`SLURM_PROCID`, `SLURM_NTASKS`, `SLURM_LOCALID`) or Open MPI's mpirun start the processes; without
those variables the world is one process and nothing here does any communication.

A dataset is cut into shards of `shard_size()` items that do not depend on the number of processes, so
a rerun with another world size finds every shard it cached. Shard i is worked on by rank i mod world,
in rounds: after each round the ranks' results go to rank 0 (through torch.distributed, over gloo, so a
cache folder need not be shared), which merges them in shard order. A rank that fails says so in the
round's exchange and the whole job stops with one line naming it; a rank that dies makes the others'
exchange fail, and every exchange has a timeout, so nothing hangs.

Every rank lists the data itself, so every exchanged shard carries the identity of its items (a digest
of their ids: path, size, modification time) and the sender's shard size; rank 0 checks both against its
own listing and stops the job with one line naming the first shard that differs, so a rank that sees
another folder (a stale mount, a folder still being written, another working directory) can never put
its results under other items' names.
"""
from __future__ import annotations

import datetime
import hashlib
import itertools
import json
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeVar

from pixprompt.errors import InputFailedError, UsageError, first_line, shown
from pixprompt.storage import identity_digest

T = TypeVar("T")
R = TypeVar("R")

#: Items per shard: the unit of work of a rank, of a cache file and of resumable output.
DEFAULT_SHARD_SIZE = 1024
#: Seconds a rank waits for the others in one exchange (a round is one shard per rank).
DEFAULT_TIMEOUT = 1800

#: The largest shard size accepted: a shard's rows are held in memory at once.
MAX_SHARD_SIZE = 1 << 20

_VARIABLES = (("RANK", "WORLD_SIZE", "LOCAL_RANK"),  # torchrun
              ("SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"),  # srun
              ("OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK"))  # mpirun


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def env_number(name: str, default: float, minimum: float, maximum: float, integer: bool = True,
               environ: dict[str, str] | None = None) -> Any:
    """A numeric environment variable, checked: a bad value is one usage line naming the variable."""
    env = os.environ if environ is None else environ
    text = env.get(name, "").strip()
    if not text:
        return default
    kind = "a whole number" if integer else "a number"
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        raise UsageError(f"{name}={text[:40]!r} is not {kind} (from {minimum:g} to {maximum:g})") from None
    if not minimum <= value <= maximum:
        raise UsageError(f"{name}={text[:40]} is out of range: give {kind} from {minimum:g} to {maximum:g}")
    return value


def discover(environ: dict[str, str] | None = None) -> Ranks:
    """The launcher's rank variables (torchrun, then SLURM, then Open MPI); one process without them.

    Values that are not whole numbers, or a rank outside its world, are one usage line naming them."""
    env = os.environ if environ is None else environ
    for rank, world, local in _VARIABLES:
        if rank in env and world in env:
            size = env_number(world, 1, 1, 1 << 24, environ=env)
            ranks = Ranks(env_number(rank, 0, 0, 1 << 24, environ=env), size,
                          env_number(local, 0, 0, 1 << 24, environ=env))
            if ranks.rank >= ranks.world:
                raise UsageError(f"{rank}={ranks.rank} is not a rank of a job of {world}={ranks.world} processes "
                                 f"(ranks are 0 to {ranks.world - 1}): check the launcher's settings")
            if ranks.world > 1:
                return ranks
    return Ranks()


def shard_size() -> int:
    """Items per shard ($PIXPROMPT_SHARD_SIZE, default 1024; a bad value is a usage error naming it)."""
    return env_number("PIXPROMPT_SHARD_SIZE", DEFAULT_SHARD_SIZE, 1, MAX_SHARD_SIZE)


def shard_ranges(count: int, size: int | None = None) -> list[range]:
    """Positions 0…count-1 cut into consecutive fixed shards."""
    size = size or shard_size()
    return [range(start, min(start + size, count)) for start in range(0, count, size)]


def batched(items: Iterable[T], size: int | None = None) -> Iterator[list[T]]:
    """Consecutive lists of `size` items from a stream (the last may be shorter)."""
    size, iterator = size or shard_size(), iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def start(ranks: Ranks | None = None) -> Ranks:
    """Join the job's process group (gloo: CPU tensors, any network) when there are several ranks.

    Called early (before models load) so that a rank that dies later breaks its peers' connections at
    once instead of leaving them waiting. Rank 0's address comes from MASTER_ADDR / MASTER_PORT, which
    torchrun sets; under SLURM or MPI the job script exports them (see examples/).
    """
    ranks = ranks or discover()
    if ranks.world == 1:
        return ranks
    import torch.distributed as dist

    if not dist.is_initialized():
        if "MASTER_ADDR" not in os.environ:
            raise InputFailedError(f"rank {ranks.rank} of {ranks.world}: MASTER_ADDR is not set; export the "
                                   "first node's host name as MASTER_ADDR (and a free MASTER_PORT) in the job "
                                   "script, as examples/slurm.sbatch does")
        os.environ.setdefault("MASTER_PORT", "29500")
        timeout = datetime.timedelta(seconds=env_number("PIXPROMPT_DIST_TIMEOUT", DEFAULT_TIMEOUT, 1, 7 * 24 * 3600,
                                                        integer=False))
        dist.init_process_group("gloo", rank=ranks.rank, world_size=ranks.world, timeout=timeout)
    return ranks


def check_settings(ranks: Ranks) -> None:
    """Stop the job at once, with one line, when a rank's settings are bad or differ from rank 0's (each
    rank reads its own environment: a job script may set them per node)."""
    if ranks.world == 1:
        shard_size()
        return
    try:
        mine: Any = shard_size()
    except UsageError as error:
        mine = _Failed(ranks.rank, str(error))

    def judge(sizes: list[Any]) -> str | None:
        failed = next((s for s in sizes if isinstance(s, _Failed)), None)
        if failed:
            return f"rank {failed.rank} of {ranks.world}: {failed.message}"
        return _sizes_differ(sizes)

    verdict, _ = exchange(mine, ranks, judge)
    if verdict:
        raise SettingsDiffer(verdict)


def facts_digest(facts: Mapping[str, str]) -> str:
    """A short digest of named settings: equal only for the same settings (the `run_digest` records carry)."""
    text = json.dumps(sorted(facts.items()), ensure_ascii=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def agree(facts: Mapping[str, str], ranks: Ranks | None = None) -> None:
    """Stop the job before any work, with one line naming the first setting and the rank, unless every rank has the
    same `facts` (everything that shapes its results: options, file contents, model, weights, precision, image
    options). One process exchanges nothing."""
    ranks = ranks or current()
    if ranks.world > 1:
        verdict, _ = exchange(dict(facts), ranks, lambda gathered: _facts_differ(gathered, ranks.world))
        if verdict:
            raise SettingsDiffer(verdict)


def _facts_differ(gathered: list[dict[str, str]], world: int) -> str | None:
    """One line naming the first rank and setting that differ from rank 0's, or None."""
    ours = gathered[0]
    for rank, theirs in enumerate(gathered[1:], start=1):
        for name in [*ours, *(name for name in theirs if name not in ours)]:
            if ours.get(name) != theirs.get(name):
                there, here = (shown(value) if value is not None else "none"
                               for value in (theirs.get(name), ours.get(name)))
                return (f"rank {rank} of {world} runs with another {name} than rank 0 ({there} there, {here} on rank "
                        "0): every rank must run the same settings; nothing was written")
    return None


def current() -> Ranks:
    """This process's ranks, the process group joined (see `start`)."""
    return start(discover())


class JobStopped:
    """Rank 0's verdict for the whole job: rank 0 prints it, the other ranks stop without a message."""


class PeerFailed(JobStopped, InputFailedError):
    """A rank failed, or the ranks disagree on their data (exit code 1)."""


class SettingsDiffer(JobStopped, UsageError):
    """A rank's settings are bad or differ from rank 0's (exit code 2)."""


@dataclass(frozen=True)
class _Failed:
    rank: int
    message: str


@dataclass(frozen=True)
class _Slot:
    """What a rank sends after one round: its shard size, the identity of its shard (None: it had none)
    and the work's result (or its failure)."""

    shard_size: int
    identity: str | None
    result: Any


#: Rank 0's verdict after a round when every rank's listing has ended.
_END = "end"


def sharded(shards: Iterable[T], work: Callable[[int, T], R], ranks: Ranks | None = None,
            identity: Callable[[T], str] | None = None) -> Iterator[tuple[int, T, R]]:
    """Run `work(i, shard)` for shard i on rank i mod world; rank 0 yields (i, shard, result) in shard order.

    Every rank must list the same shard sequence (it may be a stream of unknown length): `identity(shard)`
    (by default its items' repr) is sent with every result and rank 0 compares it with its own listing, so
    ranks that see different items, or another number of shards, or use another shard size, stop the job
    with one line naming the first differing shard. Other ranks yield nothing. A failure on any rank raises
    on every rank, naming the rank and its reason.
    """
    ranks = ranks or current()
    if ranks.world == 1:
        for number, shard in enumerate(shards):
            yield number, shard, work(number, shard)
        return
    identify = identity or (lambda shard: identity_digest(map(repr, shard)))  # type: ignore[arg-type]
    size, iterator = shard_size(), iter(shards)
    for round_number in itertools.count():
        group = list(islice(iterator, ranks.world))
        number = round_number * ranks.world + ranks.rank
        slot = _Slot(size, None, None)
        if ranks.rank < len(group):
            try:
                slot = _Slot(size, identify(group[ranks.rank]), None)
                slot = _Slot(size, slot.identity, work(number, group[ranks.rank]))
            except Exception as error:  # reported by rank 0 for the whole job
                slot = _Slot(size, slot.identity, _Failed(ranks.rank, first_line(error, 300)))
        verdict, gathered = exchange(slot, ranks, lambda slots: _verdict(slots, group, round_number,  # noqa: B023
                                                                         ranks, identify))
        if verdict == _END:
            return
        if verdict:
            raise PeerFailed(verdict)
        if ranks.is_main:
            for offset, (shard, got) in enumerate(zip(group, gathered)):
                yield round_number * ranks.world + offset, shard, got.result


def _sizes_differ(sizes: list[int]) -> str | None:
    """One line naming the first rank whose shard size differs from rank 0's, or None."""
    other = next((rank for rank, size in enumerate(sizes) if size != sizes[0]), None)
    return None if other is None else (
        f"the ranks cut the data into shards of different sizes: rank 0 uses {sizes[0]} items, rank {other} "
        f"{sizes[other]} (PIXPROMPT_SHARD_SIZE differs): give every rank the same value")


def _verdict(slots: list[_Slot], group: list, round_number: int, ranks: Ranks,
             identify: Callable[[Any], str]) -> str | None:
    """Rank 0's judgement of one round: a failure or a mismatch (one line), the end of the data, or None."""
    failed = next((s.result for s in slots if isinstance(s.result, _Failed)), None)
    if failed:
        return f"rank {failed.rank} of {ranks.world} failed: {failed.message}"
    differ = _sizes_differ([slot.shard_size for slot in slots])
    if differ:
        return differ
    for rank, slot in enumerate(slots):
        number = round_number * ranks.world + rank
        expected = identify(group[rank]) if rank < len(group) else None
        if slot.identity == expected:
            continue
        if expected is None:
            how = f"rank {rank} lists more items than rank 0 (shard {number} exists on rank {rank} only)"
        elif slot.identity is None:
            how = f"rank {rank} lists fewer items than rank 0 (shard {number} is missing there)"
        else:
            ours, theirs = expected.split(":", 1)[0], slot.identity.split(":", 1)[0]
            how = (f"rank {rank} sees other items than rank 0 in shard {number} ({theirs} item(s) there, {ours} "
                   "here, or files of other names, sizes or modification times)")
        return (f"{how}: every rank must list the same files; is a folder still being written, a mount stale, "
                "or a rank started in another working directory? nothing was written")
    return _END if all(slot.identity is None for slot in slots) else None


def exchange(value: Any, ranks: Ranks,
             judge: Callable[[list[Any]], str | None] | None = None) -> tuple[str | None, list[Any]]:
    """Every rank's `value` on rank 0, and rank 0's verdict on them (`judge`; by default the first failure)
    on every rank; others get an empty list of values. A lost rank or a timeout becomes one error line."""
    import torch.distributed as dist

    judge = judge or (lambda values: next((f"rank {v.rank} of {ranks.world} failed: {v.message}"
                                          for v in values if isinstance(v, _Failed)), None))
    gathered: list[Any] = [None] * ranks.world if ranks.is_main else []
    try:
        dist.gather_object(value, gathered if ranks.is_main else None, dst=0)
        verdict = [judge(gathered)] if ranks.is_main else [None]  # rank 0 tells everyone whether to stop
        dist.broadcast_object_list(verdict, src=0)
    except RuntimeError as error:  # a peer died (connection closed) or did not answer in time
        raise InputFailedError(f"rank {ranks.rank}: lost contact with the other ranks ({first_line(error, 160)}); "
                               "every finished shard is cached: run the same command again to go on") from None
    return verdict[0], gathered


def stop() -> None:
    """Leave the process group, if this process joined one (importing nothing when it did not)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
