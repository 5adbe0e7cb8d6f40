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
"""
from __future__ import annotations

import datetime
import os
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from itertools import islice
from typing import Any, TypeVar

from pixprompt.errors import InputFailedError, first_line

T = TypeVar("T")
R = TypeVar("R")

#: Items per shard: the unit of work of a rank, of a cache file and of resumable output.
DEFAULT_SHARD_SIZE = 1024
#: Seconds a rank waits for the others in one exchange (a round is one shard per rank).
DEFAULT_TIMEOUT = 1800

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


def discover(environ: dict[str, str] | None = None) -> Ranks:
    """The launcher's rank variables (torchrun, then SLURM, then Open MPI); one process without them."""
    env = os.environ if environ is None else environ
    for rank, world, local in _VARIABLES:
        if rank in env and world in env:
            ranks = Ranks(int(env[rank]), int(env[world]), int(env.get(local, 0)))
            if ranks.world > 1:
                return ranks
    return Ranks()


def shard_size() -> int:
    """Items per shard ($PIXPROMPT_SHARD_SIZE, default 1024)."""
    return int(os.environ.get("PIXPROMPT_SHARD_SIZE", DEFAULT_SHARD_SIZE))


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
        timeout = datetime.timedelta(seconds=float(os.environ.get("PIXPROMPT_DIST_TIMEOUT", DEFAULT_TIMEOUT)))
        dist.init_process_group("gloo", rank=ranks.rank, world_size=ranks.world, timeout=timeout)
    return ranks


def current() -> Ranks:
    """This process's ranks, the process group joined (see `start`)."""
    return start(discover())


class PeerFailed(InputFailedError):
    """Another rank failed (rank 0 names it; the other ranks stop without a message of their own)."""


@dataclass(frozen=True)
class _Failed:
    rank: int
    message: str


def sharded(shards: Iterable[T], work: Callable[[int, T], R],
            ranks: Ranks | None = None) -> Iterator[tuple[int, T, R]]:
    """Run `work(i, shard)` for shard i on rank i mod world; rank 0 yields (i, shard, result) in shard order.

    Every rank must pass the same shard sequence (it may be a stream of unknown length). Other ranks
    yield nothing. A failure on any rank raises on every rank, naming the rank and its reason.
    """
    ranks = ranks or current()
    if ranks.world == 1:
        for number, shard in enumerate(shards):
            yield number, shard, work(number, shard)
        return
    for round_number, group in enumerate(batched(shards, ranks.world)):
        number = round_number * ranks.world + ranks.rank
        result: Any = None
        if ranks.rank < len(group):
            try:
                result = work(number, group[ranks.rank])
            except Exception as error:  # reported by rank 0 for the whole job
                result = _Failed(ranks.rank, first_line(error, 300))
        gathered = exchange(result, ranks)
        failed = next((r for r in gathered if isinstance(r, _Failed)), None)
        if failed:
            raise PeerFailed(f"rank {failed.rank} of {ranks.world} failed: {failed.message}")
        if ranks.is_main:
            for offset, (shard, shard_result) in enumerate(zip(group, gathered)):
                yield round_number * ranks.world + offset, shard, shard_result


def exchange(value: Any, ranks: Ranks) -> list[Any]:
    """Every rank's `value` on rank 0 (others get a list of their own failure flags only); a lost rank or a
    timeout becomes one error line."""
    import torch.distributed as dist

    gathered: list[Any] = [None] * ranks.world if ranks.is_main else []
    try:
        dist.gather_object(value, gathered if ranks.is_main else None, dst=0)
        # rank 0 tells everyone whether to stop (another rank's failure)
        verdict = [next((r for r in gathered if isinstance(r, _Failed)), None)] if ranks.is_main else [None]
        dist.broadcast_object_list(verdict, src=0)
    except RuntimeError as error:  # a peer died (connection closed) or did not answer in time
        raise InputFailedError(f"rank {ranks.rank}: lost contact with the other ranks ({first_line(error, 160)}); "
                               "every finished shard is cached: run the same command again to go on") from None
    return gathered if ranks.is_main else verdict


def stop() -> None:
    """Leave the process group, if this process joined one (importing nothing when it did not)."""
    dist = sys.modules.get("torch.distributed")
    if dist is not None and dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
