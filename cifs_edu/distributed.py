"""Multi-GPU (and multi-process CPU) training with DistributedDataParallel.

Launch exactly as a single-process run, through ``torchrun``::

    torchrun --nproc_per_node=4 -m cifs_edu train --profile paper --defense cifs

``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`init_from_env` then
starts the process group (NCCL on CUDA, Gloo on the CPU) and pins each process to
``cuda:LOCAL_RANK``. The trainer splits every *global* batch of ``batch_size`` images
across the processes (so the schedule is the paper's whatever the number of GPUs),
averages gradients with DDP, sums metrics with :func:`all_reduce_sum`, and lets rank 0
alone write checkpoints, histories and results.

BatchNorm: on CUDA the layers become ``SyncBatchNorm`` (statistics over the global batch,
as on one GPU). ``SyncBatchNorm`` does not run on the CPU, so CPU/Gloo runs normalise each
process's share of the batch; results then match a one-process run only approximately.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist

__all__ = ["DistInfo", "info", "init_from_env", "is_main", "all_reduce_sum", "broadcast_object", "barrier", "shutdown"]


@dataclass(frozen=True)
class DistInfo:
    """Rank, world size and local rank of this process (``world_size == 1`` without DDP)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def info() -> DistInfo:
    """The current process's place in the process group (single process: rank 0 of 1)."""
    if tdist.is_available() and tdist.is_initialized():
        return DistInfo(tdist.get_rank(), tdist.get_world_size(), int(os.environ.get("LOCAL_RANK", tdist.get_rank())))
    return DistInfo()


def is_main() -> bool:
    """True on rank 0 (and without DDP)."""
    return info().rank == 0


def launched_by_torchrun() -> bool:
    """True when ``WORLD_SIZE`` > 1 is set (by ``torchrun`` or a test harness)."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def init_from_env(backend: str | None = None) -> DistInfo:
    """Initialise the default process group from the torchrun environment (no-op when WORLD_SIZE <= 1).

    Args:
        backend: ``"nccl"`` or ``"gloo"``; default NCCL when CUDA is available, else Gloo.

    Returns:
        this process's :class:`DistInfo`.
    """
    if not launched_by_torchrun():
        return DistInfo()
    if tdist.is_initialized():
        return info()
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if backend == "nccl":
        torch.cuda.set_device(local_rank)
    tdist.init_process_group(backend=backend)
    return info()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum ``t`` over processes (returns ``t`` itself without DDP). NCCL needs CUDA tensors."""
    if not info().active:
        return t
    if tdist.get_backend() == "nccl" and t.device.type != "cuda":
        out = t.to(f"cuda:{info().local_rank}")
        tdist.all_reduce(out)
        return out.to(t.device)
    tdist.all_reduce(t)
    return t


def broadcast_object(obj, src: int = 0):
    """Broadcast a picklable object from ``src`` (identity without DDP)."""
    if not info().active:
        return obj
    box = [obj]
    tdist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    """Wait for every process (no-op without DDP)."""
    if info().active:
        if tdist.get_backend() == "nccl":
            tdist.barrier(device_ids=[info().local_rank])
        else:
            tdist.barrier()


def shutdown() -> None:
    """Destroy the process group if one exists."""
    if tdist.is_available() and tdist.is_initialized():
        tdist.destroy_process_group()
