"""Multi-GPU (and multi-process CPU) training with DistributedDataParallel.

Launch exactly as a single-process run, through ``torchrun``::

    torchrun --nproc_per_node=4 -m cifs_edu train --profile paper --defense cifs

``torchrun`` sets ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK``; :func:`init_from_env` then
starts the process group (NCCL on CUDA, Gloo on the CPU) and pins each process to
``cuda:LOCAL_RANK``. The trainer splits every *global* batch of ``batch_size`` images
across the processes (so the schedule is the paper's whatever the number of GPUs),
averages gradients with DDP, sums metrics with :func:`all_reduce_sum`, and lets rank 0
alone write checkpoints, histories and results.

BatchNorm: :func:`global_batchnorm` makes every BatchNorm layer normalise with the
statistics of the *global* batch (PyTorch's ``SyncBatchNorm`` on CUDA; on the CPU, where
``SyncBatchNorm`` does not run, :class:`GlobalBatchNorm2d`, which sums the per-channel
moments with a differentiable all-reduce). Training with N processes is then the same
computation as on one device, up to the order of floating-point reductions.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
import torch.nn as nn

__all__ = ["GlobalBatchNorm2d", "global_batchnorm", "DistInfo", "info", "init_from_env", "is_main", "all_reduce_sum", "broadcast_object", "barrier", "shutdown"]


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


class GlobalBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose training-mode statistics are those of the global batch over all processes.

    Per channel, the sums of ``x`` and ``x**2`` and the element count are added across
    processes with ``torch.distributed.nn.functional.all_reduce`` (which is differentiable:
    its backward all-reduces the gradients), so forward and backward equal one-device
    BatchNorm on the concatenated batch. Eval mode, and a single process, behave exactly
    as ``nn.BatchNorm2d``. Parameter and buffer names are those of ``nn.BatchNorm2d``.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and info().active):
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        dims = [0] + list(range(2, x.dim()))
        xf = x.float()
        count = torch.full((1,), float(x.numel() // c), device=x.device, dtype=torch.float32)
        stats = all_reduce(torch.cat([xf.sum(dims), (xf * xf).sum(dims), count]))
        total = stats[-1]
        mean = stats[:c] / total
        var = (stats[c : 2 * c] / total - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = (1.0 / float(self.num_batches_tracked)) if self.momentum is None else self.momentum
                unbiased = var * (total / (total - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(mean.detach().to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.detach().to(self.running_var.dtype), alpha=m)
        shape = (1, c) + (1,) * (x.dim() - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def global_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Replace every BatchNorm by a global-batch one: ``SyncBatchNorm`` on CUDA, :class:`GlobalBatchNorm2d` otherwise.

    Parameters and buffers are moved over (same names), so checkpoints are unchanged.
    """
    if device_type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(module)
    if type(module) is nn.BatchNorm2d:
        new = GlobalBatchNorm2d(module.num_features, module.eps, module.momentum, module.affine,
                                module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        if module.track_running_stats:
            new.running_mean, new.running_var = module.running_mean, module.running_var
            new.num_batches_tracked = module.num_batches_tracked
        new.train(module.training)
        return new
    for name, child in module.named_children():
        new_child = global_batchnorm(child, device_type)
        if new_child is not child:
            setattr(module, name, new_child)
    return module
