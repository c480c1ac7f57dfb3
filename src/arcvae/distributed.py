"""Training on several processes with ``torch.distributed``, as launched by ``torchrun``.

``torchrun --nproc_per_node=N -m arcvae train ...`` starts N copies of the
command with ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and a rendezvous in the
environment. :func:`join_group` joins them into one process group (NCCL on CUDA,
gloo on CPU); the trainer then wraps the model in ``DistributedDataParallel``
and uses the few collectives below. Without ``torchrun`` nothing here does
anything: :data:`SINGLE` stands for the one process. Which device each
process computes on is :mod:`arcvae.runtime`'s choice.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from .errors import ArcvaeError

T = TypeVar("T")


@dataclass(frozen=True)
class Dist:
    """This process's place in the group."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone prints, writes the run folder and the caches."""
        return self.rank == 0

    def shard(self, n: int) -> slice:
        """This rank's contiguous part of ``n`` items; the parts of the ranks differ in size by one at most."""
        return slice(n * self.rank // self.world, n * (self.rank + 1) // self.world)

    # --------------------------------------------------------- collectives ----

    def sum_(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum ``tensor`` over the ranks, in place; returns it."""
        if self.enabled:
            import torch.distributed as dist

            dist.all_reduce(tensor)
        return tensor

    def broadcast(self, value: T) -> T:
        """Rank 0's ``value``, on every rank (any picklable object)."""
        if not self.enabled:
            return value
        import torch.distributed as dist

        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: T) -> list[T]:
        """Every rank's ``value``, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        import torch.distributed as dist

        values: list[Any] = [None] * self.world
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.enabled:
            import torch.distributed as dist

            dist.barrier()

    def check_identical(self, tensor: torch.Tensor, what: str) -> None:
        """Raise unless ``tensor`` is bit-for-bit the same on every rank."""
        if not self.enabled:
            return
        flat = tensor.detach().reshape(-1).to(torch.float64)
        low, high = flat.clone(), flat.clone()
        import torch.distributed as dist

        dist.all_reduce(low, op=dist.ReduceOp.MIN)
        dist.all_reduce(high, op=dist.ReduceOp.MAX)
        if not torch.equal(low, high):
            raise ArcvaeError(f"{what} differ between the {self.world} processes; the run cannot continue consistently")


SINGLE = Dist()


def launched_by_torchrun() -> bool:
    return "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1


def join_group(device: torch.device) -> Dist:
    """Join the process group ``torchrun`` prepared, this rank computing on ``device`` (NCCL on CUDA, gloo else)."""
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # Imported once the group exists (torch.optim does it, through torch._dynamo), torch.distributed.nn would
        # capture the default group in its functions' default arguments and keep it alive after
        # destroy_process_group(): its gloo threads would then outlive Python and abort the process at exit when
        # one of them still frees a tensor. Imported first, it captures nothing.
        import torch.distributed.nn as _dist_nn  # noqa: F401

        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        # Kept for the life of the process (several runs may share it: a group cannot
        # always be re-created under the same rendezvous), and closed on exit.
        atexit.register(_destroy)
    return Dist(int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), local_rank())


def local_rank() -> int:
    """This process's index on its machine (``LOCAL_RANK``, set by ``torchrun``)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def _destroy() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()
