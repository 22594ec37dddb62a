"""torchrun / DDP setup, nanoGPT style: read the env vars torchrun sets, one process group.

Launch on N GPUs (or N CPU processes with gloo)::

    torchrun --standalone --nproc_per_node=N -m rnnpool.cli train --model ... --data ...
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, List

import torch
import torch.distributed as dist

__all__ = ["DistInfo", "launched_as_main", "setup_distributed", "cleanup_distributed",
           "all_gather_objects", "all_reduce_mean", "barrier", "broadcast_object"]


@dataclass
class DistInfo:
    """Where this process stands: ``rank`` of ``world_size`` processes, ``local_rank`` on its
    node; ``is_main`` gates logging and saving; ``owns_group``: the process group was created
    by :func:`setup_distributed` (and is destroyed by :func:`cleanup_distributed`)."""

    rank: int = 0
    local_rank: int = 0
    world_size: int = 1
    owns_group: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def launched_as_main() -> bool:
    """Whether this process prints a command's messages: rank 0 under torchrun (``RANK``),
    or the only process. Usable before :func:`setup_distributed` runs."""
    return os.environ.get("RANK", "0") == "0"


def setup_distributed(device: str = "auto") -> DistInfo:
    """Join the process group when launched by torchrun (``RANK``/``WORLD_SIZE`` set).

    Uses NCCL when the run is on CUDA, gloo otherwise. A process group that is already
    initialised (by the caller's script or a test harness) is reused and left open by
    :func:`cleanup_distributed`. Returns ``DistInfo()`` (rank 0 of 1) when not distributed.
    """
    if dist.is_available() and dist.is_initialized():
        return DistInfo(dist.get_rank(), int(os.environ.get("LOCAL_RANK", dist.get_rank())),
                        dist.get_world_size())
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    world = int(os.environ["WORLD_SIZE"])
    use_cuda = device != "cpu" and torch.cuda.is_available()
    if use_cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistInfo(rank, local_rank, world, owns_group=True)


def cleanup_distributed(info: DistInfo) -> None:
    """Destroy the process group if :func:`setup_distributed` created it (not one it reused)."""
    if info.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    """Wait for all ranks (nothing when not distributed)."""
    if info.distributed:
        dist.barrier()


def broadcast_object(obj: Any, info: DistInfo) -> Any:
    """Rank 0's ``obj`` (picklable) on every rank; ``obj`` itself when not distributed."""
    if not info.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather_objects(obj: Any, info: DistInfo) -> List[Any]:
    """One picklable object per rank, in rank order (``[obj]`` when not distributed)."""
    if not info.distributed:
        return [obj]
    out: List[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def all_reduce_mean(values: dict, info: DistInfo, device: torch.device) -> dict:
    """Average a dict of floats over ranks (same keys on every rank)."""
    if not info.distributed or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(t)
    t /= info.world_size
    return dict(zip(keys, t.tolist()))
