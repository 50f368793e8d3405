r"""The fast gradient sign method (Goodfellow et al., 2015), l_inf.

One step of size ``eps`` along the sign of the input gradient, then clipping to [0, 1]:

.. math::  x_{adv} = \mathrm{clip}_{[0,1]}\big(x + \epsilon\,\mathrm{sign}(\nabla_x \ell(x, y))\big)

No random start (as in the paper's evaluation). With ``loss="adaptive"`` the gradient is
that of the joint loss of Eq. 3 with the attacker's ``beta_atk``.
"""
from __future__ import annotations

from torch import nn

from ..losses import Beta
from .base import format_eps
from .pgd import PGD

__all__ = ["FGSM"]


class FGSM(PGD):
    """FGSM: PGD with one step of size ``eps`` from the clean input.

    Args:
        model, eps, loss, beta_atk, scale, eval_mode, amp, mask_grad, fold_bn, channels_last: see :class:`~cifs_edu.attacks.Attack`.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        *,
        loss: str = "ce",
        beta_atk: Beta = 2.0,
        scale: str = "paper",
        eval_mode: bool = True,
        amp: bool = False,
        mask_grad: str | None = None,
        fold_bn: bool | None = None,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__(
            model, eps, alpha=None, steps=1, random_start=False, restarts=1,
            loss=loss, beta_atk=beta_atk, scale=scale, eval_mode=eval_mode, amp=amp, mask_grad=mask_grad,
            fold_bn=fold_bn, channels_last=channels_last,
        )
        self.alpha = self.eps

    def _repr_fields(self) -> list[tuple[str, str]]:
        return [("eps", format_eps(self.eps))]
