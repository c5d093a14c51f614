"""Data-parallel probing under torch's own launcher (`torchrun --nproc-per-node N -m thermocal probe ...`).

Every rank holds the model and the whole (small) sample, shuffles it with the same seed, and
takes every N-th minibatch and micro-batch. Minibatch gradients are all-gathered back into
their single-process order; Hessian-vector products are summed over ranks. From there every
rank runs the same deterministic solvers on the same numbers, so the result equals a single
process's to float tolerance (summation order). Rank 0 alone prints and writes.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Sequence, TypeVar

import torch

T = TypeVar("T")


@dataclass(frozen=True)
class Group:
    """This process's place among the probe's processes (a single process is rank 0 of 1)."""

    rank: int = 0
    world: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, items: Sequence[T]) -> list[T]:
        """Every world-th item, starting at this rank."""
        return list(items[self.rank::self.world])

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The elementwise sum of `tensor` over ranks (every rank gets it)."""
        if not self.distributed:
            return tensor
        torch.distributed.all_reduce(tensor, op=torch.distributed.ReduceOp.SUM)
        return tensor


SINGLE = Group()


def launched() -> bool:
    """True under torchrun (or any launcher setting WORLD_SIZE > 1)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def start(device: torch.device) -> tuple[Group, torch.device]:
    """Join the launcher's process group: nccl for CUDA (one GPU per local rank), gloo on CPU."""
    if not launched():
        return SINGLE, device
    if not torch.distributed.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    return Group(torch.distributed.get_rank(), torch.distributed.get_world_size()), device


def default_threads() -> int:
    """Threads for torch when `--threads` is not given: OMP_NUM_THREADS when it is set, else the
    CPUs this process may use that are not already busy (minus the 1-minute load average),
    shared among the processes of this node under torchrun, at least 1. On a shared machine
    torch's own default (every core) made the probe's threads wait for each other: the Quick
    start took 45 s instead of 8."""
    if os.environ.get("OMP_NUM_THREADS", "").isdigit() and int(os.environ["OMP_NUM_THREADS"]) > 0:
        return int(os.environ["OMP_NUM_THREADS"])
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        idle = cpus - round(os.getloadavg()[0])
    except OSError:
        idle = cpus
    return max(1, min(cpus, idle) // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))


def stop() -> None:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


@contextlib.contextmanager
def distributed(device: torch.device) -> Iterator[tuple[Group, torch.device]]:
    """`start`, then `stop` however the block ends."""
    try:
        yield start(device)
    finally:
        stop()
