r"""CAS: channel-wise activation suppressing (Bai et al., ICLR 2021), the paper's baseline.

A CAS layer owns a linear head ``fc`` on the pooled features,
``q = fc(pool(z))`` with shape (N, K), and multiplies the feature map by a *signed*
weight row of that same head:

- train mode with labels ``y``: the row of the true class, ``m = fc.weight[y]``;
- eval mode (or ``y=None``): the row of its own predicted class, ``m = fc.weight[argmax q]``;
- output ``z * m`` broadcast over positions. Nothing is detached, so gradients reach
  the input through both factors, and the head learns from the final loss too.

Unlike a CIFS mask, a CAS mask is not normalised and may be negative. The head's
logits play the role of the probe's raw prediction in the adaptive loss (Eq. 3):
:class:`~cifs_edu.outputs.ModelOutput` stores them under ``probe_logits``. The
authors' CAS baseline for ResNet-18 puts a CAS layer after both blocks of ``layer4``
(our positions P2 and P1).
"""
from __future__ import annotations

import torch
import torch.nn as nn
from torch import Tensor

from .cifs import SelectorOutput, pool

__all__ = ["CASLayer"]


class CASLayer(nn.Module):
    """One CAS layer on a (N, C, H, W) feature map; ``forward(z, y=None)`` -> :class:`SelectorOutput`.

    ``SelectorOutput.classes`` is (N, 1): the class whose weight row was used.
    """

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.channels = channels
        self.num_classes = num_classes
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, z: Tensor, y: Tensor | None = None) -> SelectorOutput:
        logits = self.fc(pool(z))
        if self.training and y is not None:
            cls = y.to(device=z.device, dtype=torch.long).view(-1)
        else:
            cls = logits.detach().argmax(dim=1)
        mask = self.fc.weight[cls]
        return SelectorOutput(z * mask[:, :, None, None], logits, mask, cls.view(-1, 1))

    def extra_repr(self) -> str:
        return f"channels={self.channels}, num_classes={self.num_classes}"
