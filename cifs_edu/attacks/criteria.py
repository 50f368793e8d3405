r"""Per-example criteria that attacks maximise: cross-entropy and the C&W margin.

Each criterion maps ``(logits (N, K), y (N,))`` to a float32 loss of shape (N,), so it can
be passed to :func:`cifs_edu.losses.adaptive_loss` as ``criterion=`` and combined over the
final and probe logits (Eq. 3).
"""
from __future__ import annotations

import math

from torch import Tensor

from ..losses import cross_entropy
from ..errors import ConfigError

__all__ = ["cross_entropy", "cw_margin_loss", "CWMargin"]


def cw_margin_loss(logits: Tensor, y: Tensor, kappa: float = 50.0) -> Tensor:
    r"""The C&W margin as the paper's code uses it, to be *maximised* by the attacker.

    .. math::  -\max\big(z_y - \max_{j \ne y} z_j + \kappa,\ 0\big)

    With ``kappa = 50`` the clamp is almost never active, so the attack simply pushes the
    best wrong logit above the true one. Shape (N,), float32.
    """
    z = logits.float()
    true = z.gather(1, y[:, None]).squeeze(1)
    others = z.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return -(true - others + kappa).clamp(min=0)


class CWMargin:
    """:func:`cw_margin_loss` with a fixed ``kappa``, usable as ``adaptive_loss(criterion=...)``."""

    def __init__(self, kappa: float = 50.0) -> None:
        kappa = float(kappa)
        if not math.isfinite(kappa) or kappa < 0:
            raise ConfigError(f"kappa must be a finite number >= 0 (got {kappa})")
        self.kappa = kappa

    def __call__(self, logits: Tensor, y: Tensor) -> Tensor:
        return cw_margin_loss(logits, y, self.kappa)

    def __repr__(self) -> str:
        return f"CWMargin(kappa={self.kappa:g})"

