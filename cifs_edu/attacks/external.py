r"""Single torchattacks attacks as :class:`~cifs_edu.attacks.Attack` objects: Square and APGD.

- :class:`Square` (Andriushchenko et al., 2020): a score-based *black-box* attack. It never
  computes a gradient: it proposes random square-shaped patches of +-eps and keeps a
  proposal when it lowers the margin of the true class. If it beats the white-box attacks,
  the gradients they follow are not informative (Carlini et al., 2019).
- :class:`TorchattacksAPGD`: torchattacks' APGD with the CE or DLR loss, the reference
  implementation for the non-adaptive case (our :class:`~cifs_edu.attacks.APGD` also takes the
  joint loss of Eq. 3).

Both see only ``model(x)`` (logits) and run in eval mode. torchattacks reseeds the global
torch RNG; the wrappers restore it afterwards, so they do not change later random draws.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..errors import ConfigError
from .autoattack import _import_torchattacks, _LogitsOnly
from .base import Attack, format_eps

__all__ = ["Square", "TorchattacksAPGD"]


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum} (got {value!r})")
    return value


class _Torchattack(Attack):
    """Common part: the logits-only model, RNG isolation, final projection."""

    def _make(self):  # pragma: no cover - subclasses
        raise NotImplementedError

    def _perturb(self, x: Tensor, y: Tensor) -> Tensor:
        devices = [x.device] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            x_adv = self.torchattacks(x, y)
        return torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp_(0, 1)


class Square(_Torchattack):
    """The l_inf Square attack (score-based black-box), via ``torchattacks.Square``.

    Args:
        model: classifier; only ``model(x)`` (logits) is queried.
        eps: l_inf budget.
        n_queries: query budget per example (AutoAttack's standard version: 5,000).
        p_init: initial fraction of pixels changed by a square (0.8, the authors' value for l_inf).
        restarts: random restarts.
        seed: seed of the random search.
        loss: ``"margin"`` (default, as AutoAttack) or ``"ce"``.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        *,
        n_queries: int = 5000,
        p_init: float = 0.8,
        restarts: int = 1,
        seed: int = 0,
        loss: str = "margin",
        eval_mode: bool = True,
    ) -> None:
        super().__init__(model, eps, loss="ce", eval_mode=eval_mode)
        self.n_queries = _check_int("n_queries", n_queries, 1)
        self.restarts = _check_int("restarts", restarts, 1)
        self.seed = _check_int("seed", seed, 0)
        if isinstance(p_init, bool) or not isinstance(p_init, (int, float)) or not 0 < p_init <= 1:
            raise ConfigError(f"p_init must be in (0, 1] (got {p_init!r})")
        self.p_init = float(p_init)
        if loss not in ("margin", "ce"):
            raise ConfigError(f"Square: loss must be 'margin' or 'ce' (got {loss!r})")
        self.square_loss = loss
        self._logits_model = _LogitsOnly(model)
        self.torchattacks = self._make()

    def _make(self):
        ta = _import_torchattacks()
        return ta.Square(
            self._logits_model, norm="Linf", eps=self.eps, n_queries=self.n_queries, n_restarts=self.restarts,
            p_init=self.p_init, loss=self.square_loss, resc_schedule=True, seed=self.seed, verbose=False,
        )

    def _repr_fields(self) -> list[tuple[str, str]]:
        return [("eps", format_eps(self.eps)), ("n_queries", str(self.n_queries)), ("p_init", f"{self.p_init:g}"),
                ("restarts", str(self.restarts)), ("seed", str(self.seed)), ("loss", repr(self.square_loss))]

    def __repr__(self) -> str:
        fields = self._repr_fields() + [("eval_mode", str(self.eval_mode))]
        return "Square(" + ", ".join(f"{k}={v}" for k, v in fields) + f", model={type(self.model).__name__})"


class TorchattacksAPGD(_Torchattack):
    """``torchattacks.APGD`` (l_inf, CE or DLR) on the logits-only model.

    Args:
        model: classifier; eps: l_inf budget; loss: ``"ce"`` or ``"dlr"``;
        steps: iterations (official: 100); restarts; seed.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        *,
        loss: str = "ce",
        steps: int = 100,
        restarts: int = 1,
        seed: int = 0,
        eval_mode: bool = True,
    ) -> None:
        if loss not in ("ce", "dlr"):
            raise ConfigError(f"TorchattacksAPGD: loss must be 'ce' or 'dlr' (got {loss!r})")
        super().__init__(model, eps, loss="ce", eval_mode=eval_mode)
        self.apgd_loss = loss
        self.steps = _check_int("steps", steps, 1)
        self.restarts = _check_int("restarts", restarts, 1)
        self.seed = _check_int("seed", seed, 0)
        self._logits_model = _LogitsOnly(model)
        self.torchattacks = self._make()

    def _make(self):
        ta = _import_torchattacks()
        return ta.APGD(self._logits_model, norm="Linf", eps=self.eps, steps=self.steps, n_restarts=self.restarts,
                       seed=self.seed, loss=self.apgd_loss, rho=0.75, verbose=False)

    def __repr__(self) -> str:
        return (f"TorchattacksAPGD(eps={format_eps(self.eps)}, loss={self.apgd_loss!r}, steps={self.steps}, "
                f"restarts={self.restarts}, seed={self.seed}, eval_mode={self.eval_mode}, "
                f"model={type(self.model).__name__})")
