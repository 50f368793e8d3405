"""Evaluation in one place: attack name -> accuracy, optionally the worst case over the attacker's beta_atk.

Attack names (shared by configs, the trainer, the CLI and the tables):

=================  ==========================================================  ==============
spec               attack                                                       paper column
=================  ==========================================================  ==============
``natural``        no attack (clean accuracy)                                   Natural
``fgsm``           one step of size eps, no random start                        FGSM
``pgd20``          PGD-20, step eps/10, no random start                         PGD-20
``pgd100``         PGD-100, step eps/10                                         PGD-100
``pgd20@0.01``     PGD-20 with an explicit step size (Fashion-MNIST: 0.01)      --
``cw``             C&W-l_inf: PGD-30 on the margin loss (kappa 50), step eps/10  C&W
``autoattack``     APGD-CE, APGD-T, FAB-T and Square (torchattacks)             AutoAttack
=================  ==========================================================  ==============

Attacks come from :mod:`cifs_edu.attacks` and run with the model in eval mode. For models
with CIFS/CAS layers every gradient attack uses the adaptive loss (Eq. 3) with the
attacker's ``beta_atk`` = the training beta, or, with ``sweep=True``, the paper's sweep
over :data:`cifs_edu.losses.BETA_SWEEP`, reporting the per-example worst case (an example
counts only if it survives every beta: stricter than Table 1, whose numbers are the lowest
per-beta columns of Table B.3, the bracketed ones) and each beta's accuracy (Table B.3).
Vanilla models are attacked with plain CE (and the C&W margin).

Under DDP each process evaluates every ``world``-th example and the counts are summed.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from .engine import distributed as dist
from .losses import BETA_SWEEP

__all__ = ["AttackSpec", "parse_attack", "ATTACK_HELP", "build_attack", "evaluate_model", "accuracy_counts"]

ATTACK_HELP = "natural, fgsm, pgdN (e.g. pgd20, pgd100), pgdN@STEP (e.g. pgd20@0.01), cw, cwN, autoattack"

_PGD = re.compile(r"^(pgd|cw)(\d*)(?:@([0-9.eE+-]+))?$")


@dataclass(frozen=True)
class AttackSpec:
    """A parsed attack name.

    Attributes:
        name: the canonical spelling (``"pgd20"``, ``"cw"``, ``"pgd20@0.01"``).
        kind: ``"natural"``, ``"fgsm"``, ``"pgd"``, ``"cw"`` or ``"autoattack"``.
        steps: iterations (1 for FGSM, 0 for natural / AutoAttack).
        step_size: explicit step size in input units, or ``None`` for ``eps / 10``.
    """

    name: str
    kind: str
    steps: int = 0
    step_size: float | None = None

    @property
    def gradient(self) -> bool:
        """True for the attacks that take the (adaptive) loss: FGSM, PGD, C&W."""
        return self.kind in ("fgsm", "pgd", "cw")


def parse_attack(spec: str) -> AttackSpec:
    """Parse an attack name (see the module table).

    Raises:
        ValueError: for an unknown name, zero steps or a non-positive step size.
    """
    if not isinstance(spec, str):
        raise ValueError(f"attack must be a string ({ATTACK_HELP}); got {spec!r}")
    s = spec.strip().lower().replace("-", "") if "@" not in spec else spec.strip().lower()
    if s in ("natural", "clean"):
        return AttackSpec("natural", "natural")
    if s == "fgsm":
        return AttackSpec("fgsm", "fgsm", steps=1)
    if s in ("autoattack", "aa"):
        return AttackSpec("autoattack", "autoattack")
    m = _PGD.match(s.replace("pgd-", "pgd").replace("cw-", "cw"))
    if m:
        kind, steps, step = m.group(1), m.group(2), m.group(3)
        n = int(steps) if steps else (30 if kind == "cw" else 0)
        if n <= 0:
            raise ValueError(f"attack {spec!r}: give the number of steps, e.g. pgd20")
        step_size = None
        if step is not None:
            try:
                step_size = float(step)
            except ValueError:
                raise ValueError(f"attack {spec!r}: step size {step!r} is not a number") from None
            if not step_size > 0:
                raise ValueError(f"attack {spec!r}: step size must be > 0")
        if kind == "cw":
            name = "cw" if n == 30 and step_size is None else f"cw{n}"
        else:
            name = f"pgd{n}"
        if step_size is not None:
            name += f"@{step_size:g}"
        return AttackSpec(name, kind, steps=n, step_size=step_size)
    raise ValueError(f"unknown attack {spec!r}; choose from {ATTACK_HELP}")


def build_attack(spec: AttackSpec | str, model: nn.Module, *, eps: float, adaptive: bool, beta_atk: Any = 2.0,
                 num_classes: int = 10, seed: int = 0, amp: bool = False):
    """The attack object for a spec (``None`` for ``natural``)."""
    from . import attacks as A

    spec = parse_attack(spec) if isinstance(spec, str) else spec
    loss_kw: dict[str, Any] = {"loss": "adaptive", "beta_atk": beta_atk} if adaptive else {}
    if spec.kind == "natural":
        return None
    if spec.kind == "fgsm":
        return A.FGSM(model, eps, amp=amp, **loss_kw)
    if spec.kind == "pgd":
        return A.PGD(model, eps, alpha=spec.step_size, steps=spec.steps, amp=amp, **loss_kw)
    if spec.kind == "cw":
        return A.CW(model, eps, alpha=spec.step_size, steps=spec.steps, amp=amp, **loss_kw)
    if spec.kind == "autoattack":
        return A.AutoAttack(model, eps, n_classes=num_classes, seed=seed)
    raise ValueError(f"unknown attack kind {spec.kind!r}")


def _shard(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    info = dist.info()
    if info.world_size == 1:
        return x, y
    return x[info.rank :: info.world_size], y[info.rank :: info.world_size]


def accuracy_counts(model: nn.Module, x: Tensor, y: Tensor, attack=None, *, batch_size: int = 500,
                    progress: bool = False) -> Tensor:
    """Per-example correctness (bool, N) of ``model`` on ``(x, y)``, clean or under ``attack``."""
    from .attacks import robust_accuracy

    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.bool)
    res = robust_accuracy(model, (x, y), attack, batch_size=batch_size, progress=progress)
    return res.correct


def _reduce_accuracy(correct: Tensor, device: torch.device) -> tuple[float, int]:
    counts = torch.tensor([float(correct.sum()), float(correct.numel())], dtype=torch.float64, device=device)
    counts = dist.all_reduce_sum(counts)
    hits, n = float(counts[0]), int(counts[1])
    return (100.0 * hits / n if n else float("nan")), n


def evaluate_model(model: nn.Module, x: Tensor, y: Tensor, attacks: Sequence[str], *, eps: float,
                   adaptive: bool, beta: Any = 2.0, sweep: bool = False, betas: Sequence[Any] = BETA_SWEEP,
                   batch_size: int = 500, aa_n: int | None = None, num_classes: int = 10, seed: int = 0,
                   progress: bool = True) -> dict[str, Any]:
    """Accuracy (%) of ``model`` under each attack on ``(x, y)``.

    Args:
        model: the model (its device is used; eval mode is set by the attacks).
        x, y: test images in [0, 1] and labels (the whole evaluation set; sharded under DDP).
        attacks: names (:func:`parse_attack`).
        eps: budget; adaptive: CIFS/CAS model (adaptive loss); beta: attacker's beta when not sweeping.
        sweep: for adaptive models, worst case over ``betas`` per example, and each beta's accuracy.
        aa_n: AutoAttack on a class-balanced subset of this many images (``None``: all).

    Returns:
        ``{"accuracy": {name: %}, "n": {name: images}, "per_beta": {name: {beta: %}}, "attacks": {name: repr}}``.
    """
    from . import attacks as A
    from .attacks import sweep as run_sweep

    device = next(model.parameters()).device
    result: dict[str, Any] = {"accuracy": {}, "n": {}, "per_beta": {}, "attacks": {}}
    for name in attacks:
        spec = parse_attack(name)
        xs, ys = x, y
        if spec.kind == "autoattack" and aa_n is not None and aa_n < x.shape[0]:
            idx = A.balanced_indices(y.cpu(), max(1, aa_n // num_classes), seed=seed).to(x.device)
            xs, ys = x[idx], y[idx]
        xs, ys = _shard(xs, ys)
        if spec.gradient and adaptive and sweep:
            def make(b, spec=spec):
                return build_attack(spec, model, eps=eps, adaptive=True, beta_atk=b, num_classes=num_classes, seed=seed)
            sw = run_sweep(model, (xs, ys), make, betas, batch_size=batch_size, progress=progress)
            acc, n = _reduce_accuracy(sw.worst_correct, device)
            result["per_beta"][spec.name] = {b: _reduce_accuracy(r.correct, device)[0] for b, r in sw.results.items()}
            result["attacks"][spec.name] = f"worst over beta_atk in {list(sw.results)}: {sw.attack}"
        else:
            atk = build_attack(spec, model, eps=eps, adaptive=adaptive and spec.gradient, beta_atk=beta,
                               num_classes=num_classes, seed=seed)
            correct = accuracy_counts(model, xs, ys, atk, batch_size=batch_size, progress=progress)
            acc, n = _reduce_accuracy(correct, device)
            result["attacks"][spec.name] = "clean" if atk is None else repr(atk)
        result["accuracy"][spec.name] = acc
        result["n"][spec.name] = n
    return result
