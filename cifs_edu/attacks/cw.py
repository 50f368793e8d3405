r"""The "C&W" attack of the paper's evaluation: l_inf PGD on the C&W margin loss.

The paper (Appendix B) and the authors' evaluation code do not run Carlini & Wagner's
original l_2 optimisation: they run PGD in the eps-ball (30 steps, step ``eps/10``, no
random start) on the margin

.. math::  -\max\big(z_y - \max_{j \ne y} z_j + \kappa,\ 0\big), \qquad \kappa = 50

(:func:`~cifs_edu.attacks.criteria.cw_margin_loss`). With ``loss="adaptive"`` the margin is
the criterion of Eq. 3, i.e. the attacker maximises the joint margin over the final and
the probe logits with weights set by ``beta_atk``.
"""
from __future__ import annotations

from torch import nn

from ..losses import Beta
from .criteria import CWMargin
from .pgd import PGD

__all__ = ["CW"]


class CW(PGD):
    """C&W-l_inf: PGD on the margin loss with confidence ``kappa``.

    Args:
        model, eps, loss, beta_atk, scale, eval_mode, amp, mask_grad, fold_bn, channels_last: see :class:`~cifs_edu.attacks.Attack`
            (the standard loss is called ``"margin"`` here).
        steps: default 30; alpha: default ``eps/10``; kappa: default 50 (the authors' value).
        random_start, restarts, seed: as in :class:`~cifs_edu.attacks.PGD`.
    """

    standard_loss = "margin"

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        *,
        alpha: float | None = None,
        steps: int = 30,
        kappa: float = 50.0,
        random_start: bool = False,
        restarts: int = 1,
        seed: int | None = None,
        loss: str = "margin",
        beta_atk: Beta = 2.0,
        scale: str = "paper",
        eval_mode: bool = True,
        amp: bool = False,
        mask_grad: str | None = None,
        fold_bn: bool | None = None,
        channels_last: bool | None = None,
    ) -> None:
        super().__init__(
            model, eps, alpha=alpha, steps=steps, random_start=random_start, restarts=restarts, seed=seed,
            loss=loss, beta_atk=beta_atk, scale=scale, eval_mode=eval_mode, amp=amp, mask_grad=mask_grad,
            fold_bn=fold_bn, channels_last=channels_last,
        )
        self.criterion = CWMargin(kappa)
        self.kappa = self.criterion.kappa

    def _repr_fields(self) -> list[tuple[str, str]]:
        fields = super()._repr_fields()
        fields.insert(3, ("kappa", f"{self.kappa:g}"))
        return fields
