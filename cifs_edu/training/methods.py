r"""The training objectives: standard, PGD-AT (Madry), TRADES and FAT, for vanilla, CIFS and CAS models.

As the authors do, adversarial examples are generated with the model in **eval mode**
(BatchNorm running statistics; CIFS masks from the model's own predictions) and the
update runs in **train mode** (CIFS puts the true label among its top-k).

The loss of a model with CIFS/CAS layers is the adaptive loss :math:`\ell_\beta` of Eq. 3
(with the training beta); a vanilla model uses plain cross-entropy. The training attacks
maximise the same loss (the vanilla baseline is attacked with plain CE).

- ``pgd_at``: :math:`\min_\theta \mathbb{E}\max_{x'\in B(x,\epsilon)} \ell_\beta(x', y)` (Eq. 4),
  inner max by PGD with a uniform random start (PGD-10, step eps/4 in the paper).
- ``trades``: :math:`\ell_\beta(x, y) + \lambda\, \mathrm{KL}_\beta(x, x')`, with
  :math:`x'` maximising :math:`\mathrm{KL}_\beta` from :math:`x + 0.001\,\mathcal{N}(0, I)`.
  Our choice for CIFS/CAS (the paper does not spell it out): :math:`\mathrm{KL}_\beta` weighs
  the KL divergence of the final output and of each probe output with the weights of Eq. 3,
  ``KL(p(x) || p(x'))`` per output, as TRADES does for the final output. For a vanilla model this
  is exactly TRADES (lambda = ``trades_beta`` = 6).
- ``fat``: early-stopped PGD-K-tau (Zhang et al., 2020): each example stops ``tau`` steps
  after it is first misclassified (by the final prediction), then the update is as in
  ``pgd_at``. Examples are processed as a whole batch with a per-example "still moving"
  mask, which gives the same examples as FAT's loop over shrinking batches because every
  example's computation in eval mode is independent of the others.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from ..engine.fast import fast_copy
from ..attacks.pgd import pgd_loop
from ..losses import adaptive_loss, cross_entropy, loss_weights
from ..outputs import ModelOutput

__all__ = ["TrainForward", "attack_loss", "pgd_examples", "fat_examples", "trades_examples", "batch_loss"]

Draw = Callable[[str], Tensor]  # "uniform" -> U(-1, 1), "normal" -> N(0, 1), shaped like the local batch


class TrainForward(nn.Module):
    """Train-mode forward passes in one call: ``forward([x1, x2, ...], y) -> [(logits, probe_logits), ...]``.

    DistributedDataParallel hooks only ``forward``; routing ``forward_with_aux`` (and the
    two passes of TRADES) through this module keeps gradient synchronisation correct.
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, xs: Sequence[Tensor], y: Tensor) -> list[tuple[Tensor, dict[str, Tensor]]]:
        outs = []
        for x in xs:
            if hasattr(self.model, "forward_with_aux"):
                o = self.model.forward_with_aux(x, y)
                outs.append((o.logits, dict(o.probe_logits)))
            else:
                outs.append((self.model(x), {}))
        return outs


def _output(model: nn.Module, x: Tensor, adaptive: bool) -> ModelOutput:
    if adaptive:
        return model.forward_with_aux(x)
    return ModelOutput(logits=model(x))


def attack_loss(model: nn.Module, x: Tensor, y: Tensor, config) -> tuple[Tensor, Tensor]:
    """Per-example training-attack loss (N,) and final logits, model as it is (eval mode by the caller).

    Eq. 3 with the training beta for CIFS/CAS, CE for vanilla.
    """
    out = _output(model, x, config.adaptive)
    if config.adaptive:
        return adaptive_loss(out, y, config.beta, scale=config.loss_scale, reduction="none"), out.logits
    return cross_entropy(out.logits, y), out.logits


@contextlib.contextmanager
def _eval(model: nn.Module, fast: bool = False):
    """Eval mode (restored after) with gradients on; yields the module the attack differentiates:
    ``model`` itself, or with ``fast`` its private fast copy (BN folded, frozen, channels_last;
    :func:`cifs_edu.engine.fast.fast_copy`), made after the switch to eval mode."""
    was = model.training
    model.eval()
    try:
        with torch.enable_grad():
            yield fast_copy(model).model if fast else model
    finally:
        model.train(was)


def _start(x: Tensor, config, draw: Draw) -> Tensor:
    """The random start: uniform in the eps-ball (``random_start``) or zero."""
    return draw("uniform") * config.eps if config.random_start else torch.zeros_like(x)


def _under(autocast, loss_fn):
    """``loss_fn`` evaluated inside ``autocast()`` (the gradient is taken outside, as before)."""
    def wrapped(xa: Tensor):
        with autocast():
            return loss_fn(xa)
    return wrapped


def pgd_examples(model: nn.Module, x: Tensor, y: Tensor, config, draw: Draw, autocast=contextlib.nullcontext,
                 fast: bool = False) -> Tensor:
    """PGD-``train_steps`` adversarial examples (eval mode, uniform random start if ``random_start``).

    ``fast``: differentiate the model's fast copy (see :func:`_eval`; equal up to float rounding).
    """
    with _eval(model, fast) as net:
        delta = pgd_loop(_under(autocast, lambda xa: attack_loss(net, xa, y, config)), x, _start(x, config, draw),
                         steps=config.train_steps, alpha=config.train_step_size, eps=config.eps)
    return (x + delta).detach()


def fat_examples(model: nn.Module, x: Tensor, y: Tensor, config, draw: Draw, tau: int,
                 autocast=contextlib.nullcontext, fast: bool = False) -> Tensor:
    """Friendly adversarial examples: early-stopped PGD-K-tau (FAT, Zhang et al. 2020, Alg. 1).

    At each of the K steps, an example whose current point is misclassified stops if its
    budget ``tau`` is used up, otherwise spends one unit of it; the others take a signed
    gradient step (plus ``fat_omega`` Gaussian noise, as FAT's code) and are projected.
    """
    budget = torch.full((x.shape[0],), int(tau), device=x.device, dtype=torch.long)
    moving = torch.ones(x.shape[0], device=x.device, dtype=torch.bool)
    shape = (-1,) + (1,) * (x.dim() - 1)

    def step(delta: Tensor, grad: Tensor, logits: Tensor, lo: Tensor, hi: Tensor) -> Tensor:
        nonlocal budget, moving
        wrong = logits.detach().argmax(1) != y
        stop = moving & wrong & (budget == 0)
        budget = budget - (moving & wrong & (budget > 0)).long()
        moving = moving & ~stop
        move = config.train_step_size * grad.sign()
        if config.fat_omega > 0:
            move = move + config.fat_omega * draw("normal")
        return torch.where(moving.view(shape), (delta + move).clamp(lo, hi), delta)

    with _eval(model, fast) as net:
        delta = pgd_loop(_under(autocast, lambda xa: attack_loss(net, xa, y, config)), x, _start(x, config, draw),
                         steps=config.train_steps, alpha=config.train_step_size, eps=config.eps, step=step)
    return (x + delta).detach()


def _log_probs(logits: Tensor) -> Tensor:
    return F.log_softmax(logits.float(), dim=1)


def _weighted_kl(nat: ModelOutput, adv: ModelOutput, config) -> Tensor:
    """Per-example sum over outputs of w * KL(p_nat || p_adv) with Eq. 3's weights (N,)."""
    if config.adaptive:
        w_final, w_probe = loss_weights(config.beta, adv.positions, config.loss_scale)
    else:
        w_final, w_probe = 1.0, {}
    total = torch.zeros(adv.logits.shape[0], device=adv.logits.device, dtype=torch.float32)
    pairs = [(w_final, nat.logits, adv.logits)] + [(w, nat.probe_logits[p], adv.probe_logits[p]) for p, w in w_probe.items()]
    for w, ln, la in pairs:
        if w:
            lp_nat = _log_probs(ln)
            total = total + w * F.kl_div(_log_probs(la), lp_nat, reduction="none", log_target=True).sum(1)
    return total


def trades_examples(model: nn.Module, x: Tensor, y: Tensor, config, draw: Draw,
                    autocast=contextlib.nullcontext, fast: bool = False) -> Tensor:
    """TRADES' inner maximisation: PGD on KL(p(x) || p(x')) from x + 0.001 N(0, I), eval mode."""
    with _eval(model, fast) as net:
        with torch.no_grad(), autocast():
            nat = _output(net, x, config.adaptive)
            nat = ModelOutput(logits=nat.logits.detach().float(),
                              probe_logits={k: v.detach().float() for k, v in nat.probe_logits.items()})

        def kl(xa: Tensor) -> tuple[Tensor, None]:
            with autocast():
                adv = _output(net, xa, config.adaptive)
            return _weighted_kl(nat, adv, config), None

        delta = pgd_loop(kl, x, 0.001 * draw("normal"), steps=config.train_steps, alpha=config.train_step_size,
                         eps=config.eps)
    return (x + delta).detach()


def batch_loss(forward: nn.Module, x: Tensor, x_adv: Tensor | None, y: Tensor, config,
               autocast=contextlib.nullcontext) -> tuple[Tensor, Tensor]:
    """Per-example training loss (N,) and the logits whose accuracy is logged (train mode).

    ``standard`` (or ``x_adv is None``: a warm-start epoch): Eq. 3 / CE on ``x``; ``pgd_at`` and ``fat``: on ``x_adv``;
    ``trades``: Eq. 3 / CE on ``x`` + ``trades_beta`` * weighted KL(p(x) || p(x_adv)).
    """
    def loss_of(logits: Tensor, probes: dict[str, Tensor]) -> Tensor:
        out = ModelOutput(logits=logits, probe_logits=probes)
        if config.adaptive:
            return adaptive_loss(out, y, config.beta, scale=config.loss_scale, reduction="none")
        return cross_entropy(logits, y)

    with autocast():
        if config.method == "standard" or x_adv is None:
            ((logits, probes),) = forward([x], y)
            return loss_of(logits, probes), logits
        if config.method in ("pgd_at", "fat"):
            ((logits, probes),) = forward([x_adv], y)
            return loss_of(logits, probes), logits
        (ln, pn), (la, pa) = forward([x, x_adv], y)
    nat = ModelOutput(logits=ln, probe_logits=pn)
    adv = ModelOutput(logits=la, probe_logits=pa)
    return loss_of(ln, pn) + config.trades_beta * _weighted_kl(nat, adv, config), la
