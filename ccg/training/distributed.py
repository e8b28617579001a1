"""Data-parallel training with PyTorch's own tools: `torchrun` starts the processes,
`torch.distributed` connects them (NCCL on GPUs, gloo on CPUs) and `DistributedDataParallel`
all-reduces the gradients.

    torchrun --nproc_per_node 4 -m ccg train --steps 20000 --out runs/ddp

Every process (rank) draws its own (z, T) with its own random stream; the gradients are
averaged, so all ranks hold the same parameters after every step; only rank 0 writes files
and prints. The few decisions that must agree across ranks (stop at the time budget or on a
signal, abort on too many non-finite samples, checkpoint now) are made from all-reduced values.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ccg._checks import check_device


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the process that writes files and prints."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world > 1


def launched_world_size() -> int:
    """The number of processes torchrun started (1 when not under torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def setup(device_spec: str) -> tuple[Ranks, torch.device]:
    """Join the process group torchrun set up (if any) and pick this rank's device.

    Under torchrun with `device_spec` "auto" or "cuda", rank r of a node uses cuda:LOCAL_RANK:
    CUDA tensors (the gradients) go through NCCL and the few CPU tensors (stop and abort
    decisions, metrics counts) through gloo; on CPUs the backend is gloo. Outside torchrun:
    (Ranks(), the device).
    """
    world = launched_world_size()
    device = check_device(device_spec, "--device")
    if world <= 1:
        return Ranks(), device
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device.type == "cuda":
        device = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("cpu:gloo,cuda:nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size(), local_rank), device


def current() -> Ranks:
    """The ranks of an initialized process group (Ranks() without one)."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(),
                     int(os.environ.get("LOCAL_RANK", "0")))
    return Ranks()


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """The sum over ranks of `values` (a new tensor; `values` itself without a group)."""
    return _all_reduce(values, dist.ReduceOp.SUM)


def all_reduce_max(values: torch.Tensor) -> torch.Tensor:
    """The elementwise maximum over ranks of `values` (`values` itself without a group)."""
    return _all_reduce(values, dist.ReduceOp.MAX)


def _all_reduce(values: torch.Tensor, op) -> torch.Tensor:
    if not current().distributed:
        return values
    out = values.clone()
    dist.all_reduce(out, op=op)
    return out


def gather_objects(obj: object) -> list[object]:
    """`obj` of every rank, in rank order ([obj] without a group)."""
    ranks = current()
    if not ranks.distributed:
        return [obj]
    out: list[object] = [None] * ranks.world
    dist.all_gather_object(out, obj)
    return out


def rank_seed(seed: int, rank: int) -> int:
    """The seed of rank `rank`'s random stream (rank 0 keeps `seed`)."""
    return seed + 1_000_003 * rank
