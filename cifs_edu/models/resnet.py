"""CIFAR ResNets (He et al., 2016, CIFAR variant): ResNet-18 and ResNet-10.

3x3 stem without max-pool, four stages of BasicBlocks with ``width * (1, 2, 4, 8)``
channels (``width=64`` is the paper's network), global average pooling and a linear
classifier. Parameter names and order follow the common CIFAR layout
(``conv1, bn1, layer1..layer4, linear``; blocks ``conv1, bn1, conv2, bn2, shortcut``),
so standard CIFAR ResNet-18 state_dicts load into the backbone.

CIFS/CAS positions (Appendix E.2): P1 = the last residual block, P2 = the one before.
For ResNet-18 ([2, 2, 2, 2] blocks) both are in ``layer4``: P2 = ``layer4.0`` (stride 2),
P1 = ``layer4.1``. For ResNet-10 ([1, 1, 1, 1]): P2 = ``layer3.0``, P1 = ``layer4.0``.
The selector acts on the block output after the residual addition and the final ReLU;
the masked P2 output is the input of the P1 block (and so also flows through P1's
identity shortcut); the masked P1 output goes to pooling and ``linear``.
"""
from __future__ import annotations

from typing import Mapping

import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..cifs import CIFSConfig, pool
from ..outputs import ModelOutput
from .base import Recorder, SelectiveNet
from .normalize import NormalizeSpec, make_normalize

__all__ = ["BasicBlock", "CIFARResNet", "RESNET_BLOCKS"]

#: blocks per stage
RESNET_BLOCKS = {"resnet18": (2, 2, 2, 2), "resnet10": (1, 1, 1, 1)}


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with BN and an identity (or 1x1 conv + BN) shortcut."""

    expansion = 1
    #: (conv, bn) pairs where the conv output feeds only that BN (foldable in eval mode;
    #: used by :mod:`cifs_edu.engine.fast`); the shortcut is an nn.Sequential(conv, bn)
    bn_fold_pairs = (("conv1", "bn1"), ("conv2", "bn2"))

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, kernel_size=3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_planes, planes, kernel_size=1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CIFARResNet(SelectiveNet):
    """A CIFAR ResNet with optional CIFS or CAS layers at P1/P2.

    Args:
        num_blocks: blocks per stage, e.g. (2, 2, 2, 2) for ResNet-18.
        num_classes: K. in_channels: input channels (3 for CIFAR/SVHN, 1 for FMNIST).
        width: channels of ``layer1`` (64 = the paper; smaller for CPU profiles).
        defense: ``"none"``, ``"cifs"`` or ``"cas"``; positions: subset of ("P1", "P2").
        config: CIFS options; probes / hidden: probe kind and MLP width per position.
        normalize: see :mod:`cifs_edu.models.normalize` (None = inputs used as given).

    Prefer :func:`cifs_edu.models.build_model`, which validates every option.
    """

    #: the stem's conv feeds only bn1 (see :mod:`cifs_edu.engine.fast`)
    bn_fold_pairs = (("conv1", "bn1"),)

    def __init__(
        self,
        num_blocks: tuple[int, ...] = (2, 2, 2, 2),
        num_classes: int = 10,
        in_channels: int = 3,
        width: int = 64,
        defense: str = "none",
        positions: tuple[str, ...] = (),
        config: CIFSConfig | None = None,
        probes: Mapping[str, str] | None = None,
        hidden: Mapping[str, int] | None = None,
        normalize: NormalizeSpec = None,
        arch: str = "resnet",
    ) -> None:
        super().__init__()
        self.arch = arch
        planes = [width, 2 * width, 4 * width, 8 * width]
        self.in_planes = width
        self.conv1 = nn.Conv2d(in_channels, width, kernel_size=3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.layer1 = self._make_layer(planes[0], num_blocks[0], 1)
        self.layer2 = self._make_layer(planes[1], num_blocks[1], 2)
        self.layer3 = self._make_layer(planes[2], num_blocks[2], 2)
        self.layer4 = self._make_layer(planes[3], num_blocks[3], 2)
        self.linear = nn.Linear(planes[3], num_classes)
        del self.in_planes

        # P1 = last block, P2 = second-to-last block (over all stages)
        blocks = [(f"layer{s + 1}", i, planes[s]) for s in range(4) for i in range(num_blocks[s])]
        self.block_positions: dict[tuple[str, int], str] = {}
        channels = {}
        for pos, (name, i, c) in zip(("P1", "P2"), reversed(blocks)):
            self.block_positions[(name, i)] = pos
            channels[pos] = c
        self._init_selectors(defense, positions, channels, num_classes, config, probes, hidden)
        self.normalize = make_normalize(normalize, in_channels)

    def _make_layer(self, planes: int, n: int, stride: int) -> nn.Sequential:
        layers = []
        for s in [stride] + [1] * (n - 1):
            layers.append(BasicBlock(self.in_planes, planes, s))
            self.in_planes = planes
        return nn.Sequential(*layers)

    def forward_with_aux(self, x: Tensor, y: Tensor | None = None) -> ModelOutput:
        """Logits and every selector's probe logits, masks and features (see ModelOutput)."""
        rec = Recorder()
        out = self.normalize(x) if self.normalize is not None else x
        out = F.relu(self.bn1(self.conv1(out)))
        for name in ("layer1", "layer2", "layer3", "layer4"):
            for i, block in enumerate(getattr(self, name)):
                out = block(out)
                pos = self.block_positions.get((name, i))
                if pos is not None:
                    out = self._select(pos, out, y, rec)
        pooled = pool(out)
        return rec.output(self.linear(pooled), pooled)
