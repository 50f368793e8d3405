r"""Projected gradient descent (Madry et al., 2018) in l_inf, batched.

Each step moves every pixel by ``alpha`` in the direction of the sign of the input
gradient of the attacker's loss, then projects back onto the eps-ball around ``x`` and
onto the image box [0, 1]:

.. math::  x^{t+1} = \Pi_{[0,1] \cap B_\infty(x, \epsilon)}\big(x^t + \alpha\,\mathrm{sign}(\nabla_x \ell(x^t, y))\big)

The paper evaluates with PGD-20 and PGD-100, step ``eps/10``, no random start (our
defaults: ``steps=20``, ``alpha=eps/10``, ``random_start=False``); it trains with PGD-10,
step ``2/255``, uniform random start. There is no early stopping: every example gets
every step (so results match torchattacks step for step).

Restarts (``restarts > 1`` needs ``random_start=True``): each restart draws a new random
start; per example we keep the *first successful* restart (the adversarial example is
misclassified), and for examples no restart fools, the restart with the *highest final
loss*. Like the official AutoAttack/torchattacks APGD, later restarts are run only on
examples not yet fooled.

The step and the loop are module functions, :func:`sign_step` and :func:`pgd_loop`, shared by
:class:`PGD` and by the training attacks of :mod:`cifs_edu.training.methods` (PGD-AT, FAT and
TRADES' inner maximisation, and through them the CUDA-graph replay): one step for training and
evaluation.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor, nn

from ..losses import Beta
from ..errors import ConfigError
from .base import Attack, format_eps

__all__ = ["PGD", "delta_bounds", "sign_step", "pgd_loop"]

LossFn = Callable[[Tensor], "tuple[Tensor, Tensor | None]"]
StepFn = Callable[[Tensor, Tensor, "Tensor | None", Tensor, Tensor], Tensor]


def delta_bounds(x: Tensor, eps: float) -> tuple[Tensor, Tensor]:
    """Bounds ``lo, hi`` of the perturbation delta, shaped like ``x``: the eps-ball intersected with
    the image box, ``[max(-eps, -x), min(eps, 1 - x)]`` (both projections of PGD in one clamp)."""
    return x.neg().clamp(min=-eps), (1 - x).clamp(max=eps)


def sign_step(delta: Tensor, grad: Tensor, alpha: float, lo: Tensor, hi: Tensor) -> Tensor:
    """One PGD step: ``clamp(delta + alpha * sign(grad), lo, hi)`` (the update of the module docstring)."""
    return (delta + alpha * grad.sign()).clamp(lo, hi)


def pgd_loop(loss_fn: LossFn, x: Tensor, delta: Tensor, *, steps: int, alpha: float, eps: float,
             step: StepFn | None = None) -> Tensor:
    """``steps`` gradient-ascent steps on ``loss_fn`` from ``x + delta``; returns the final delta (detached).

    Args:
        loss_fn: ``x_adv -> (per-example loss (N,), logits or None)``; the loss is summed before
            differentiating (the batch size does not scale the gradient).
        x: clean inputs (N, C, H, W) in [0, 1]; delta: the start, projected first.
        step: ``(delta, grad, logits, lo, hi) -> new delta``; default :func:`sign_step` with ``alpha``
            (FAT passes its early-stopping step).
    """
    lo, hi = delta_bounds(x, eps)
    delta = delta.detach().clamp(lo, hi)
    for _ in range(steps):
        delta.requires_grad_(True)
        loss, logits = loss_fn(x + delta)
        (grad,) = torch.autograd.grad(loss.sum(), delta)
        delta = delta.detach()
        delta = sign_step(delta, grad, alpha, lo, hi) if step is None else step(delta, grad, logits, lo, hi)
    return delta.detach()


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum} (got {value!r})")
    return value


class PGD(Attack):
    """l_inf PGD on the standard (CE) or adaptive (Eq. 3) loss.

    Args:
        model, eps, loss, beta_atk, scale, eval_mode, amp, mask_grad, fold_bn, channels_last: see :class:`~cifs_edu.attacks.Attack`.
        alpha: step size (default ``eps / 10``, the paper's evaluation).
        steps: number of steps (default 20: PGD-20).
        random_start: start from a uniform random point of the eps-ball (clipped to [0, 1]).
        restarts: number of random restarts (see the module docstring for which one is kept).
        seed: seed of a private generator for the random starts (``None``: torch's global RNG).

    Example::

        >>> atk = PGD(model, eps=8/255, steps=20, loss="adaptive", beta_atk=2)
        >>> print(atk)
        PGD(eps=8/255, alpha=0.8/255, steps=20, random_start=False, restarts=1, loss='adaptive', ...)
        >>> x_adv = atk(x, y)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        *,
        alpha: float | None = None,
        steps: int = 20,
        random_start: bool = False,
        restarts: int = 1,
        seed: int | None = None,
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
            model, eps, loss=loss, beta_atk=beta_atk, scale=scale, eval_mode=eval_mode, amp=amp, mask_grad=mask_grad,
            fold_bn=fold_bn, channels_last=channels_last
        )
        alpha = self.eps / 10 if alpha is None else alpha
        try:
            alpha = float(alpha)
        except (TypeError, ValueError):
            raise ConfigError(f"alpha must be a number (got {alpha!r})") from None
        if not math.isfinite(alpha) or alpha < 0 or (alpha == 0 and self.eps > 0):
            raise ConfigError(f"alpha (step size) must be > 0 (got {alpha})")
        self.alpha = alpha
        self.steps = _check_int("steps", steps, 1)
        if not isinstance(random_start, bool):
            raise ConfigError(f"random_start must be True or False (got {random_start!r})")
        self.random_start = random_start
        self.restarts = _check_int("restarts", restarts, 1)
        if restarts > 1 and not random_start:
            raise ConfigError("restarts > 1 needs random_start=True (otherwise every restart is identical)")
        if seed is not None:
            _check_int("seed", seed, 0)
        self.seed = seed
        self._generators: dict[torch.device, torch.Generator] = {}

    def _repr_fields(self) -> list[tuple[str, str]]:
        fields = [
            ("eps", format_eps(self.eps)),
            ("alpha", format_eps(self.alpha)),
            ("steps", str(self.steps)),
            ("random_start", str(self.random_start)),
            ("restarts", str(self.restarts)),
        ]
        if self.seed is not None:
            fields.append(("seed", str(self.seed)))
        return fields

    # ------------------------------------------------------------------ the attack
    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        if device not in self._generators:
            g = torch.Generator(device=device)
            g.manual_seed(self.seed)
            self._generators[device] = g
        return self._generators[device]

    def _initial_delta(self, x: Tensor) -> Tensor:
        if not self.random_start:
            return torch.zeros_like(x)
        delta = torch.empty_like(x)
        return delta.uniform_(-self.eps, self.eps, generator=self._generator(x.device))

    def _run(self, x: Tensor, y: Tensor, delta: Tensor) -> Tensor:
        """``steps`` sign-gradient steps from ``x + delta`` (:func:`pgd_loop`); returns the final delta."""
        return pgd_loop(lambda xa: self.per_example_loss(xa, y), x, delta, steps=self.steps, alpha=self.alpha,
                        eps=self.eps)

    def _perturb(self, x: Tensor, y: Tensor) -> Tensor:
        if self.restarts == 1:
            return (x + self._run(x, y, self._initial_delta(x))).clamp_(0, 1)
        best = x.clone()
        best_loss = torch.full((x.shape[0],), float("-inf"), device=x.device)
        fooled = torch.zeros(x.shape[0], dtype=torch.bool, device=x.device)
        for _ in range(self.restarts):
            idx = (~fooled).nonzero().squeeze(1)  # one host sync per restart
            if idx.numel() == 0:
                break
            xs, ys = x[idx], y[idx]
            x_adv = (xs + self._run(xs, ys, self._initial_delta(xs))).clamp_(0, 1)
            with torch.no_grad():
                loss, logits = self.per_example_loss(x_adv, ys)
            success = logits.argmax(dim=1) != ys
            take = success | (loss > best_loss[idx])
            best[idx[take]] = x_adv[take]
            best_loss[idx[take]] = loss[take]
            fooled[idx] = success
        return best
