"""Optional per-dataset input normalisation inside the model.

Every model takes inputs in [0, 1]. The authors train without normalisation, so it is
off by default (``normalize=None``); ``normalize="cifar10"`` (or ``"svhn"``,
``"fmnist"``, ``"synthetic"``, or an explicit ``(mean, std)`` pair) puts ``(x - mean) / std`` as the
model's first operation, so attacks still work in [0, 1] pixel space. The statistics
are constants of the configuration: they are non-persistent buffers and do not appear
in ``state_dict``.
"""
from __future__ import annotations

from typing import Sequence, Union

import torch
import torch.nn as nn
from torch import Tensor

from ..errors import ConfigError

__all__ = ["DATASET_STATS", "Normalize", "NormalizeSpec", "normalize_problems", "make_normalize"]

#: per-channel mean and standard deviation of the training sets, inputs in [0, 1]
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "svhn": ((0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    "fmnist": ((0.2860,), (0.3530,)),
    # the embedded data set of cifs_edu.synthetic (measured on 2,000 training images: means
    # 0.498-0.502, standard deviations 0.124-0.126); the smoke profile normalises with it
    "synthetic": ((0.5, 0.5, 0.5), (0.125, 0.125, 0.125)),
}

NormalizeSpec = Union[None, str, tuple[Sequence[float], Sequence[float]]]


class Normalize(nn.Module):
    """``(x - mean) / std`` per channel; x of shape (N, C, H, W) in [0, 1]."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std

    def extra_repr(self) -> str:
        return f"mean={self.mean.flatten().tolist()}, std={self.std.flatten().tolist()}"


def _resolve(spec: NormalizeSpec) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    if spec is None:
        return None
    if isinstance(spec, str):
        if spec not in DATASET_STATS:
            raise KeyError(spec)
        return DATASET_STATS[spec]
    mean, std = spec
    return tuple(float(v) for v in mean), tuple(float(v) for v in std)


def normalize_problems(spec: NormalizeSpec, in_channels: int) -> list[str]:
    """Every problem with a ``normalize`` option for a model with ``in_channels`` inputs."""
    try:
        stats = _resolve(spec)
    except KeyError:
        return [f"normalize must be None, one of {tuple(DATASET_STATS)} or a (mean, std) pair (got {spec!r})"]
    except (TypeError, ValueError):
        return [f"normalize must be None, a dataset name or a (mean, std) pair of sequences (got {spec!r})"]
    if stats is None:
        return []
    mean, std = stats
    out = []
    if len(mean) != in_channels or len(std) != in_channels:
        out.append(f"normalize {spec!r} has {len(mean)} channel(s) but the model takes {in_channels}")
    if any(s <= 0 for s in std):
        out.append(f"normalize std must be > 0 (got {std})")
    return out


def make_normalize(spec: NormalizeSpec, in_channels: int) -> Normalize | None:
    """A :class:`Normalize` module for ``spec``, or None (validated; raises ConfigError)."""
    problems = normalize_problems(spec, in_channels)
    if problems:
        raise ConfigError("; ".join(problems))
    stats = _resolve(spec)
    return None if stats is None else Normalize(*stats)
