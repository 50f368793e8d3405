"""Training data held as tensors, with order and augmentation that depend only on (seed, epoch).

The trainer keeps each split as one tensor on the training device (CIFAR-10's 50,000
images are 600 MB in float32: small for a GPU) and draws, at the start of each epoch,
one permutation, one crop offset and one flip per image from a generator seeded with
``(seed, epoch)``. Hence:

- resuming after epoch ``e`` replays epoch ``e + 1`` exactly (no loader state to save);
- with ``N`` processes (DDP), process ``r`` takes its slice of every *global* batch, so
  the examples, crops and flips of a global batch do not depend on ``N``;
- no worker processes, no per-image Python transforms: a GPU is never starved.

The augmentation is the standard CIFAR one (zero-pad 4 pixels, random 32x32 crop,
horizontal flip with probability 1/2), applied to the whole batch at once.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = ["derive_seed", "TensorSplits", "load_tensors", "EpochPlan", "augment_batch"]


def derive_seed(seed: int, *parts: object) -> int:
    """A 63-bit seed from ``seed`` and labels (e.g. the epoch and a stream name)."""
    text = ":".join(str(p) for p in (seed, *parts))
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


@dataclass
class TensorSplits:
    """Train / validation / test tensors: images float32 in [0, 1] (N, C, H, W), labels int64 (N,)."""

    x_train: Tensor
    y_train: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: tuple[str, ...]
    in_channels: int
    num_classes: int

    def to(self, device: torch.device) -> "TensorSplits":
        move = lambda t: t.to(device, non_blocking=True)  # noqa: E731
        return TensorSplits(
            move(self.x_train), move(self.y_train), move(self.x_val), move(self.y_val),
            move(self.x_test), move(self.y_test), self.classes, self.in_channels, self.num_classes,
        )


def load_tensors(config) -> TensorSplits:
    """The config's splits from :func:`cifs_edu.datasets.load_data`, as float32 tensors in [0, 1]
    (the trainer augments its batches itself, see :func:`augment_batch`).

    Raises:
        cifs_edu.datasets.DataNotFoundError: when the data is not on disk (and cannot be
            downloaded); raised before any training starts.
    """
    from ..datasets import load_data
    from ..paths import data_dir

    splits = load_data(
        config.dataset, n_train=config.n_train, n_val=config.n_val, n_test=config.n_test,
        root=data_dir(), seed=config.seed, download=True,
    )
    x_tr, y_tr = splits.train.x, splits.train.y
    if config.n_val and splits.val is not None and len(splits.val):
        x_va, y_va = splits.val.x, splits.val.y
    else:
        x_va, y_va = x_tr[:0], y_tr[:0]
    x_te, y_te = splits.test.x, splits.test.y
    return TensorSplits(x_tr, y_tr, x_va, y_va, x_te, y_te, tuple(splits.classes),
                        int(splits.in_channels), int(splits.num_classes))


@dataclass
class EpochPlan:
    """The random choices of one epoch: order, crop offsets and flips (all on the CPU)."""

    order: Tensor  # (N,) permutation of the training set
    offsets: Tensor  # (N, 2) crop offsets in [0, 2 * pad]
    flips: Tensor  # (N,) bool

    @classmethod
    def make(cls, n: int, seed: int, epoch: int, pad: int = 4) -> "EpochPlan":
        g = torch.Generator().manual_seed(derive_seed(seed, "epoch", epoch, "data"))
        order = torch.randperm(n, generator=g)
        offsets = torch.randint(0, 2 * pad + 1, (n, 2), generator=g)
        flips = torch.rand(n, generator=g) < 0.5
        return cls(order, offsets, flips)

    def batches(self, batch_size: int, min_last: int = 2) -> list[Tensor]:
        """Positions (into ``order``) of each global batch; a last batch below ``min_last`` is dropped."""
        n = self.order.numel()
        out = [torch.arange(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]
        if out and out[-1].numel() < min_last:
            out.pop()
        return out


def augment_batch(x: Tensor, offsets: Tensor, flips: Tensor, mode: str, pad: int = 4) -> Tensor:
    """Random crop (zero padding ``pad``) and/or horizontal flip of a batch.

    Args:
        x: (N, C, H, W) images on any device.
        offsets: (N, 2) integer (row, column) offsets in ``[0, 2 * pad]``.
        flips: (N,) bool, flip where True.
        mode: ``"crop_flip"``, ``"crop"`` or ``"none"``.
    """
    if mode == "none":
        return x
    n, c, h, w = x.shape
    if mode in ("crop_flip", "crop"):
        offsets = offsets.to(x.device)
        padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
        rows = (offsets[:, 0:1] + torch.arange(h, device=x.device)).view(n, 1, h, 1)
        cols = (offsets[:, 1:2] + torch.arange(w, device=x.device)).view(n, 1, 1, w)
        idx_n = torch.arange(n, device=x.device).view(n, 1, 1, 1)
        idx_c = torch.arange(c, device=x.device).view(1, c, 1, 1)
        x = padded[idx_n, idx_c, rows, cols]
    if mode == "crop_flip":
        f = flips.to(x.device).view(n, 1, 1, 1)
        x = torch.where(f, x.flip(3), x)
    return x
