r"""The attacker's beta sweep of the paper (Sec. 4.1, Table B.3).

An adaptive attacker does not know which weighting of the final and probe losses in
Eq. 3 hurts a CIFS model most, so the paper runs every attack for
``beta_atk in {0, 0.1, 1, 2, 10, 100, inf, inf-P1, inf-P2}`` and reports, per attack, the
lowest single-beta accuracy (the per-column worst case). :func:`sweep` runs the same attacks,
keeps every beta's accuracy, and adds a stricter per-example summary: an example counts as
robust only if it survives *every* beta (the worst case per example), which can be lower
than the lowest single-beta accuracy.

Usage::

    res = sweep(model, test_data, lambda b: PGD(model, 8/255, steps=20, loss="adaptive", beta_atk=b))
    res.table()          # one row per beta, plus the worst case
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import pandas as pd
import torch
from torch import Tensor, nn

from ..losses import BETA_SWEEP, Beta, loss_weights, parse_beta
from ..errors import ConfigError
from .base import Attack, eval_mode, model_device
from .accuracy import Data, EvalResult, iterate_batches, robust_accuracy

__all__ = ["sweep", "SweepResult", "beta_label", "BETA_SWEEP"]


def beta_label(beta: Beta) -> str:
    """Text of a beta for tables: ``"0"``, ``"0.1"``, ``"inf"``, ``"inf-P1"``."""
    b = parse_beta(beta)
    return f"{b:g}" if isinstance(b, float) else b


@dataclass
class SweepResult:
    """Outcome of :func:`sweep`.

    Attributes:
        results: beta label -> :class:`~cifs_edu.attacks.EvalResult`, in the order run.
        skipped: beta label -> why it was not run (e.g. the model has no such layer).
        attack: ``repr`` of the attack at the first beta run.
    """

    results: dict[str, EvalResult]
    skipped: dict[str, str] = field(default_factory=dict)
    attack: str = ""

    @property
    def accuracy(self) -> dict[str, float]:
        """Robust accuracy (%) per beta."""
        return {b: r.accuracy for b, r in self.results.items()}

    @property
    def worst_correct(self) -> Tensor:
        """Bool (N,): the example survives every beta (the AND of the per-beta ``correct``)."""
        if not self.results:
            raise ValueError("no beta was run")
        return torch.stack([r.correct for r in self.results.values()]).all(dim=0)

    @property
    def worst_accuracy(self) -> float:
        """Per-example worst-case robust accuracy (%) over all betas run."""
        return 100.0 * self.worst_correct.double().mean().item()

    @property
    def worst_beta(self) -> str:
        """The single beta with the lowest accuracy (the first one on ties)."""
        acc = self.accuracy
        return min(acc, key=acc.__getitem__)

    def table(self) -> pd.DataFrame:
        """One row per beta (accuracy %, or NaN and the reason if skipped) and a worst-case row."""
        rows = [{"beta_atk": b, "accuracy": r.accuracy, "note": ""} for b, r in self.results.items()]
        nan = float("nan")
        rows += [{"beta_atk": b, "accuracy": nan, "note": f"skipped: {why}"} for b, why in self.skipped.items()]
        note = f"per example; worst single beta: {self.worst_beta}"
        rows.append({"beta_atk": "worst case", "accuracy": self.worst_accuracy, "note": note})
        return pd.DataFrame(rows).set_index("beta_atk")

    def __repr__(self) -> str:
        accs = ", ".join(f"{b}: {a:.2f}" for b, a in self.accuracy.items())
        text = f"SweepResult(worst={self.worst_accuracy:.2f}% (worst beta {self.worst_beta}); {accs}"
        if self.skipped:
            text += f"; skipped {list(self.skipped)}"
        return text + ")"


def _probe_positions(model: nn.Module, data: Data, device: torch.device) -> tuple[str, ...]:
    """The model's CIFS/CAS positions: ``model.positions``, else read from one forward pass."""
    if not hasattr(model, "forward_with_aux"):
        return ()
    positions = getattr(model, "positions", None)
    if positions is not None:
        return tuple(positions)
    batches, _ = iterate_batches(data, 1)
    x, _ = next(iter(batches))
    with eval_mode(model), torch.no_grad():
        return model.forward_with_aux(x[:1].to(device)).positions


def sweep(
    model: nn.Module,
    data: Data,
    make_attack: Callable[[Beta], Attack],
    betas: Sequence[Beta] = BETA_SWEEP,
    *,
    batch_size: int = 500,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> SweepResult:
    """Run ``make_attack(beta)`` for each attacker's beta and combine the results.

    Args:
        model: the attacked model (the one the attacks were built on).
        data: a Dataset, a DataLoader or an ``(X, Y)`` pair (see :func:`robust_accuracy`).
        make_attack: ``beta -> attack``; the attack must use ``loss="adaptive"`` with that beta,
            e.g. ``lambda b: PGD(model, 8/255, steps=20, loss="adaptive", beta_atk=b)``.
        betas: the betas (default the paper's :data:`~cifs_edu.losses.BETA_SWEEP`). A beta the
            model cannot support (``"inf-P2"`` on a model with only P1, any ``"inf*"`` on a
            model without probes) is skipped and listed in ``SweepResult.skipped``.
        batch_size, device, progress: as in :func:`robust_accuracy`.
    """
    if not betas:
        raise ConfigError("betas is empty")
    parsed = [parse_beta(b) for b in betas]  # bad betas fail here, before any work
    device = torch.device(device) if device is not None else model_device(model)
    positions = _probe_positions(model, data, device)
    results: dict[str, EvalResult] = {}
    skipped: dict[str, str] = {}
    first = ""
    for beta in parsed:
        label = beta_label(beta)
        try:
            loss_weights(beta, positions)
        except ValueError as e:
            skipped[label] = str(e)
            continue
        attack = make_attack(beta)
        if getattr(attack, "loss", None) != "adaptive" or getattr(attack, "beta_atk", None) != beta:
            raise ConfigError(
                f"make_attack({label!r}) returned {attack!r}: a sweep needs loss='adaptive' with beta_atk={label}"
            )
        if attack.model is not model:
            raise ConfigError("make_attack(beta) built the attack on a different model than the one evaluated")
        first = first or repr(attack)
        results[label] = robust_accuracy(model, data, attack, batch_size=batch_size, device=device, progress=progress)
    if not results:
        raise ConfigError(f"no beta in {list(map(beta_label, parsed))} applies to this model: {skipped}")
    return SweepResult(results, skipped, first)
