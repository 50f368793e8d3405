"""Pre-activation WideResNet-28-10 (Zagoruyko & Komodakis, 2016) for 32x32 inputs.

Naming follows the common TRADES/MART code, so their checkpoints load:
``conv1``, ``block1..block3`` (each ``.layer.N`` with ``bn1, relu1, conv1, bn2, relu2,
conv2, convShortcut``), ``bn1``, ``relu``, ``fc``. Depth 28 gives 4 blocks per group;
``widen_factor`` (the ``width`` of :func:`~cifs_edu.models.build_model`) 10 gives
160-320-640 channels and 36.48M parameters.

CIFS/CAS positions, as in the authors' WRN code:

- P2: on the pre-activated input ``relu1(bn1(x))`` of the LAST block of ``block3``,
  before that block's first convolution; the block's residual adds the UNMASKED ``x``.
- P1: after the final ``relu(bn1(.))``, before average pooling and ``fc``.
"""
from __future__ import annotations

import math
from typing import Callable, Mapping

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..cifs import CIFSConfig, pool
from ..outputs import ModelOutput
from .base import Recorder, SelectiveNet
from .normalize import NormalizeSpec, make_normalize

__all__ = ["WideBasic", "NetworkBlock", "WideResNet"]


class WideBasic(nn.Module):
    """Pre-activation block: BN-ReLU-conv3x3-BN-ReLU-(dropout)-conv3x3 plus shortcut.

    ``forward(x, mid=None)``: ``mid`` (optional) transforms the pre-activated input
    ``relu1(bn1(x))`` before ``conv1`` (this is where the P2 selector acts); the shortcut
    uses ``x`` itself (equal widths) or ``convShortcut(relu1(bn1(x)))`` unmasked.
    """

    #: conv1's output feeds only bn2 (foldable in eval mode, see :mod:`cifs_edu.engine.fast`);
    #: bn1 pre-activates the block input and is not foldable
    bn_fold_pairs = (("conv1", "bn2"),)

    def __init__(self, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(in_planes, out_planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_planes)
        self.relu2 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(out_planes, out_planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.drop_rate = drop_rate
        self.equal_in_out = in_planes == out_planes
        self.convShortcut = (
            None
            if self.equal_in_out
            else nn.Conv2d(in_planes, out_planes, kernel_size=1, stride=stride, padding=0, bias=False)
        )

    def forward(self, x: Tensor, mid: Callable[[Tensor], Tensor] | None = None) -> Tensor:
        a = self.relu1(self.bn1(x))
        h = mid(a) if mid is not None else a
        out = self.relu2(self.bn2(self.conv1(h)))
        if self.drop_rate > 0:
            out = F.dropout(out, p=self.drop_rate, training=self.training)
        out = self.conv2(out)
        return out + (x if self.equal_in_out else self.convShortcut(a))


class NetworkBlock(nn.Module):
    """A group of ``nb_layers`` WideBasic blocks (``.layer``: nn.Sequential)."""

    def __init__(self, nb_layers: int, in_planes: int, out_planes: int, stride: int, drop_rate: float = 0.0) -> None:
        super().__init__()
        self.layer = nn.Sequential(
            *[
                WideBasic(in_planes if i == 0 else out_planes, out_planes, stride if i == 0 else 1, drop_rate)
                for i in range(nb_layers)
            ]
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.layer(x)


class WideResNet(SelectiveNet):
    """WRN-depth-widen_factor with optional CIFS or CAS layers at P1/P2.

    Args:
        depth: 28 (``(depth - 4) % 6 == 0``); widen_factor: 10 for WRN-28-10.
        num_classes, in_channels, defense, positions, config, probes, hidden, normalize:
            as for :class:`~cifs_edu.models.resnet.CIFARResNet`.
        drop_rate: dropout inside blocks (0, as in TRADES and the authors).
    """

    def __init__(
        self,
        depth: int = 28,
        widen_factor: int = 10,
        num_classes: int = 10,
        in_channels: int = 3,
        drop_rate: float = 0.0,
        defense: str = "none",
        positions: tuple[str, ...] = (),
        config: CIFSConfig | None = None,
        probes: Mapping[str, str] | None = None,
        hidden: Mapping[str, int] | None = None,
        normalize: NormalizeSpec = None,
        arch: str = "wrn",
    ) -> None:
        super().__init__()
        if (depth - 4) % 6 != 0:
            raise ValueError(f"WRN depth must satisfy (depth - 4) % 6 == 0 (got {depth})")
        self.arch = arch
        n = (depth - 4) // 6
        ch = [16, 16 * widen_factor, 32 * widen_factor, 64 * widen_factor]
        self.conv1 = nn.Conv2d(in_channels, ch[0], kernel_size=3, stride=1, padding=1, bias=False)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1, drop_rate)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2, drop_rate)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2, drop_rate)
        self.bn1 = nn.BatchNorm2d(ch[3])
        self.relu = nn.ReLU(inplace=False)
        self.fc = nn.Linear(ch[3], num_classes)
        self.n_channels = ch[3]
        self._init_weights()
        # the P2 selector sees the input of the last block of block3 (ch[3] channels
        # whenever that block is not the group's first, i.e. depth >= 16)
        p2_channels = ch[3] if n > 1 else ch[2]
        self._init_selectors(defense, positions, {"P1": ch[3], "P2": p2_channels}, num_classes, config, probes, hidden)
        self.normalize = make_normalize(normalize, in_channels)

    def _init_weights(self) -> None:
        """The WRN initialisation of the TRADES code: He-normal convs, BN (1, 0), zero linear bias."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                m.weight.data.normal_(0, math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.data.fill_(1)
                m.bias.data.zero_()
            elif isinstance(m, nn.Linear):
                m.bias.data.zero_()

    def forward_with_aux(self, x: Tensor, y: Tensor | None = None) -> ModelOutput:
        """Logits and every selector's probe logits, masks and features (see ModelOutput)."""
        rec = Recorder()
        out = self.normalize(x) if self.normalize is not None else x
        out = self.conv1(out)
        out = self.block1(out)
        out = self.block2(out)
        *first, last = self.block3.layer
        for block in first:
            out = block(out)
        out = last(out, mid=lambda a: self._select("P2", a, y, rec))
        out = self.relu(self.bn1(out))
        out = self._select("P1", out, y, rec)
        pooled = pool(out)
        return rec.output(self.fc(pooled), pooled)
