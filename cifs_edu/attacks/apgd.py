r"""Auto-PGD (Croce & Hein, 2020) on any per-example loss, including the joint loss of Eq. 3.

APGD is PGD with two changes that remove the step size as a free parameter:

1. **momentum** (``momentum = 0.75``): after the first step,

   .. math::
      z^{k+1} &= \Pi\big(x^k + \eta^k \,\mathrm{sign}(\nabla f(x^k))\big) \\
      x^{k+1} &= \Pi\big(x^k + \alpha (z^{k+1} - x^k) + (1 - \alpha)(x^k - x^{k-1})\big)

   with :math:`\Pi` the projection onto the eps-ball and [0, 1];
2. **step-size halving at checkpoints**: the step starts at :math:`\eta = 2\epsilon`. At the
   checkpoints :math:`w_j = \lceil p_j N \rceil` with :math:`p_0 = 0, p_1 = 0.22,
   p_{j+1} = p_j + \max(p_j - p_{j-1} - 0.03, 0.06)`, an example's step is halved and its
   iterate reset to the best point found so far when

   - the loss went up in at most a fraction ``rho = 0.75`` of the steps since the last
     checkpoint (the official code's ``<=``), or
   - the step was not halved at the last checkpoint and the best loss has not improved since.

The start is a random point at l_inf distance eps from ``x`` (a uniform draw rescaled so its
largest coordinate has size eps), clipped to [0, 1]. Every example gets every step; the
result is, per example, a misclassified iterate if one was met (the first restart that met
one wins), else the iterate with the highest loss. Restarts after the first run only on the
examples not yet fooled, as in the official code.

Unlike ``torchattacks.APGD`` (logits only, CE or DLR), this implementation maximises the
attacker's loss of :class:`~cifs_edu.attacks.Attack`: CE or DLR on the final logits, or
``loss="adaptive"``: Eq. 3 over the final and probe logits with ``beta_atk`` and a per-logit
``criterion`` (CE or DLR), with ``mask_grad="full"`` when the gradient should also flow
through the CIFS masks.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ..losses import Beta
from ..errors import ConfigError
from .base import Attack, format_eps
from .criteria import cross_entropy

__all__ = ["APGD", "dlr_loss", "apgd_checkpoints"]


def dlr_loss(logits: Tensor, y: Tensor) -> Tensor:
    r"""The difference-of-logits-ratio loss of Croce & Hein (2020), to be maximised.

    .. math:: -\frac{z_y - \max_{j \ne y} z_j}{z_{\pi_1} - z_{\pi_3} + 10^{-12}}

    with :math:`z_{\pi_1} \ge z_{\pi_2} \ge z_{\pi_3}` the three largest logits. Invariant to a
    shift and a positive rescaling of the logits. Shape (N,), float32; needs K >= 3.
    """
    z = logits.float()
    if z.shape[1] < 3:
        raise ValueError(f"the DLR loss needs at least 3 classes (got {z.shape[1]})")
    top = z.topk(3, dim=1).values
    true = z.gather(1, y[:, None]).squeeze(1)
    best_other = z.scatter(1, y[:, None], float("-inf")).amax(dim=1)
    return -(true - best_other) / (top[:, 0] - top[:, 2] + 1e-12)


_CRITERIA = {"ce": cross_entropy, "dlr": dlr_loss}


def apgd_checkpoints(steps: int) -> list[int]:
    """The iterations ``w_j = ceil(p_j * steps)`` (j >= 1, ``w_j <= steps``) at which APGD checks its step size.

    >>> apgd_checkpoints(100)
    [22, 41, 57, 70, 80, 87, 93, 99]
    """
    p = [0.0, 0.22]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - 0.03, 0.06)
        if math.ceil(round(nxt * steps, 9)) > steps:
            break
        p.append(nxt)
    marks = sorted({math.ceil(round(q * steps, 9)) for q in p[1:]})
    return [w for w in marks if 1 <= w <= steps]


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{name} must be an int >= {minimum} (got {value!r})")
    return value


class APGD(Attack):
    """l_inf APGD on CE, DLR or the adaptive joint loss (Eq. 3).

    Args:
        model, eps, beta_atk, scale, eval_mode, amp, mask_grad: see :class:`~cifs_edu.attacks.Attack`.
        loss: ``"ce"`` or ``"dlr"`` (on the final logits), or ``"adaptive"`` (Eq. 3).
        criterion: per-logit criterion of the adaptive loss, ``"ce"`` or ``"dlr"``.
        steps: iterations N (official AutoAttack: 100).
        restarts: random restarts (later ones only on examples not yet fooled).
        rho: fraction of loss-increasing steps below which the step is halved (0.75).
        momentum: alpha of the momentum update (0.75).
        seed: seed of a private generator for the random starts.

    Example::

        >>> atk = APGD(model, 8/255, steps=100, loss="adaptive", beta_atk="inf", mask_grad="full")
        >>> x_adv = atk(x, y)
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        *,
        steps: int = 100,
        restarts: int = 1,
        loss: str = "ce",
        criterion: str = "ce",
        beta_atk: Beta = 2.0,
        scale: str = "paper",
        rho: float = 0.75,
        momentum: float = 0.75,
        seed: int = 0,
        eval_mode: bool = True,
        amp: bool = False,
        mask_grad: str | None = None,
    ) -> None:
        if loss not in ("ce", "dlr", "adaptive"):
            raise ConfigError(f"APGD: loss must be 'ce', 'dlr' or 'adaptive' (got {loss!r})")
        if criterion not in _CRITERIA:
            raise ConfigError(f"APGD: criterion must be 'ce' or 'dlr' (got {criterion!r})")
        if loss in ("ce", "dlr") and criterion != "ce" and criterion != loss:
            raise ConfigError("APGD: criterion is for loss='adaptive'; use loss='dlr' for DLR on the logits")
        self.standard_loss = loss if loss != "adaptive" else "ce"  # read by Attack.__init__'s check
        super().__init__(
            model, eps, loss=loss, beta_atk=beta_atk, scale=scale, eval_mode=eval_mode, amp=amp, mask_grad=mask_grad
        )
        self.criterion_name = loss if loss != "adaptive" else criterion
        self.criterion = _CRITERIA[self.criterion_name]
        self.steps = _check_int("steps", steps, 1)
        self.restarts = _check_int("restarts", restarts, 1)
        _check_int("seed", seed, 0)
        self.seed = seed
        for name, v in (("rho", rho), ("momentum", momentum)):
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= 1:
                raise ConfigError(f"{name} must be in (0, 1] (got {v!r})")
        self.rho = float(rho)
        self.momentum = float(momentum)
        self.checkpoints = apgd_checkpoints(self.steps)

    def _repr_fields(self) -> list[tuple[str, str]]:
        fields = [
            ("eps", format_eps(self.eps)),
            ("steps", str(self.steps)),
            ("restarts", str(self.restarts)),
            ("seed", str(self.seed)),
        ]
        if self.loss == "adaptive":
            fields.append(("criterion", repr(self.criterion_name)))
        return fields

    # ------------------------------------------------------------------ the attack
    def _loss_grad(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Per-example loss (N,), its input gradient and whether each example is still correct."""
        x = x.detach().requires_grad_(True)
        loss, logits = self.per_example_loss(x, y)
        (grad,) = torch.autograd.grad(loss.sum(), x)
        return loss.detach(), grad.detach(), logits.detach().argmax(dim=1) == y

    def _start(self, x: Tensor, generator: torch.Generator) -> Tensor:
        t = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype).mul_(2).sub_(1)
        scale = t.flatten(1).abs().amax(dim=1).clamp_min(1e-12).view(-1, *([1] * (x.dim() - 1)))
        return (x + self.eps * t / scale).clamp_(0, 1)

    def _run(self, x: Tensor, y: Tensor, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """One APGD run: ``(x_out, fooled, best_loss)``; x_out as described in the module docstring."""
        n = x.shape[0]
        shape = (n,) + (1,) * (x.dim() - 1)
        lo, hi = (x - self.eps).clamp_(min=0), (x + self.eps).clamp_(max=1)

        def project(v: Tensor) -> Tensor:
            return torch.max(torch.min(v, hi), lo)

        x_cur = self._start(x, generator)
        loss, grad, correct = self._loss_grad(x_cur, y)
        fooled = ~correct
        x_found = torch.where(fooled.view(shape), x_cur, x)
        x_best, grad_best, loss_best = x_cur.clone(), grad.clone(), loss.clone()
        eta = torch.full(shape, 2.0 * self.eps, device=x.device, dtype=x.dtype)
        x_prev = x_cur.clone()
        loss_prev = loss
        increases = torch.zeros(n, device=x.device)
        loss_best_at_check = loss_best.clone()
        reduced_at_check = torch.ones(n, dtype=torch.bool, device=x.device)
        last_check = 0
        checkpoints = set(self.checkpoints)
        for k in range(self.steps):
            with torch.no_grad():
                a = self.momentum if k > 0 else 1.0
                z = project(x_cur + eta * grad.sign())
                x_next = project(x_cur + a * (z - x_cur) + (1 - a) * (x_cur - x_prev))
            x_prev = x_cur
            x_cur = x_next
            loss, grad, correct = self._loss_grad(x_cur, y)
            with torch.no_grad():
                newly = ~correct
                x_found = torch.where((newly & ~fooled).view(shape), x_cur, x_found)
                fooled |= newly
                increases += (loss > loss_prev).float()
                loss_prev = loss
                better = loss > loss_best
                x_best = torch.where(better.view(shape), x_cur, x_best)
                grad_best = torch.where(better.view(shape), grad, grad_best)
                loss_best = torch.where(better, loss, loss_best)
                if k + 1 in checkpoints:
                    span = k + 1 - last_check
                    oscillating = increases <= self.rho * span
                    stalled = ~reduced_at_check & (loss_best <= loss_best_at_check)
                    reduce = oscillating | stalled
                    eta = torch.where(reduce.view(shape), eta / 2, eta)
                    x_cur = torch.where(reduce.view(shape), x_best, x_cur)
                    grad = torch.where(reduce.view(shape), grad_best, grad)
                    reduced_at_check = reduce
                    loss_best_at_check = loss_best.clone()
                    increases.zero_()
                    last_check = k + 1
        x_out = torch.where(fooled.view(shape), x_found, x_best)
        return x_out, fooled, loss_best

    def _perturb(self, x: Tensor, y: Tensor) -> Tensor:
        generator = torch.Generator(device=x.device)
        generator.manual_seed(self.seed)
        out, fooled, best_loss = self._run(x, y, generator)
        for _ in range(self.restarts - 1):
            idx = (~fooled).nonzero().squeeze(1)
            if idx.numel() == 0:
                break
            x_r, fooled_r, loss_r = self._run(x[idx], y[idx], generator)
            take = fooled_r | (loss_r > best_loss[idx])
            out[idx[take]] = x_r[take]
            best_loss[idx[take]] = loss_r[take]
            fooled[idx] = fooled_r
        return out
