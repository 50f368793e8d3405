r"""The adaptive loss :math:`\ell_\beta` (Eq. 3) used for training and for adaptive attacks.

.. math::

    \ell_\beta(x, y) = \frac{1}{1+\beta}\,\ell(p, y)
        + \frac{\beta}{(1+\beta)|I|} \sum_{i \in I} \ell(p^i, y)

``p`` is the final prediction and ``p^i`` the raw prediction of the CIFS (or CAS)
layer ``i``. ``beta`` may be any number in ``[0, inf)``, ``"inf"`` (probe terms
only, averaged over layers) or ``"inf-P1"`` / ``"inf-P2"`` (a single layer's probe
only). The paper's Table B.3 calls these "inf-1" and "inf-2", "the first (resp. second)
CIFS-modified layer". We read this in forward order, as the authors' code lists its probe
outputs (``[p_P2, p_P1]``): "inf-1" is P2 (second-to-last block) and "inf-2" is P1 (last
block). The CAS row of Table B.3 supports this reading (attacking layer "1" alone is the
strongest attack on CAS there, as attacking P2 alone is in our runs); the paper does not
say it outright. Both spellings are accepted; see :data:`PAPER_LAYER_LABELS`.

Scale conventions (``scale=``):

- ``"paper"`` (default): exactly Eq. 3 above.
- ``"authors"``: the authors' training script,
  ``[l(p) + (beta/|I|) sum_i l(p^i)] * 3 / (beta + 1)``, i.e. 3x Eq. 3 (the factor
  is 1 at beta = 2). Their attack loss, ``l(p) + (beta/|I|) sum_i l(p^i)``, is
  ``(1+beta)`` x Eq. 3: a positive rescaling that sign-gradient attacks (FGSM, PGD)
  do not see.
"""
from __future__ import annotations

import math
from typing import Callable, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .outputs import ModelOutput

__all__ = ["Beta", "parse_beta", "loss_weights", "adaptive_loss", "cross_entropy", "BETA_SWEEP", "PAPER_LAYER_LABELS", "PAPER_LAYER_KEYS"]

Beta = Union[float, int, str]

#: The attacker's beta values of the paper's sweep (Sec. 4.1, Table B.3).
BETA_SWEEP: tuple[Beta, ...] = (0, 0.1, 1, 2, 10, 100, "inf", "inf-P1", "inf-P2")

#: The paper's single-layer beta labels (Table B.3) -> this library's (forward order: layer 1 = P2).
PAPER_LAYER_LABELS: dict[str, str] = {"inf-1": "inf-P2", "inf-2": "inf-P1"}
#: The inverse: this library's single-layer labels -> the paper's (to look up Table B.3 numbers).
PAPER_LAYER_KEYS: dict[str, str] = {ours: paper for paper, ours in PAPER_LAYER_LABELS.items()}

_ALIASES = {**PAPER_LAYER_LABELS, "infinity": "inf", "∞": "inf"}


def parse_beta(beta: Beta) -> float | str:
    """Normalise ``beta``: a float in ``[0, inf)``, ``"inf"`` or ``"inf-<position>"``.

    Raises:
        ValueError: for negative or NaN numbers and unknown strings.
    """
    if isinstance(beta, str):
        key = beta.strip()
        key = _ALIASES.get(key.lower(), key)
        if key.lower() == "inf":
            return "inf"
        if key.lower().startswith("inf-") and len(key) > 4:
            return "inf-" + key[4:].upper()
        try:
            beta = float(key)
        except ValueError:
            raise ValueError(
                f"beta must be a number >= 0, 'inf', or 'inf-P1'/'inf-P2' (got {beta!r})"
            ) from None
    beta = float(beta)
    if math.isnan(beta) or beta < 0:
        raise ValueError(f"beta must be >= 0 (got {beta})")
    if math.isinf(beta):
        return "inf"
    return beta


def loss_weights(beta: Beta, positions: tuple[str, ...], scale: str = "paper") -> tuple[float, dict[str, float]]:
    """Weights ``(w_final, {position: w})`` of Eq. 3 for the given layers.

    With no CIFS/CAS layers (a vanilla model) the loss is plain cross-entropy on the
    final logits: ``(1.0, {})`` for any finite beta.
    """
    b = parse_beta(beta)
    if scale not in ("paper", "authors"):
        raise ValueError(f"scale must be 'paper' or 'authors' (got {scale!r})")
    n = len(positions)
    if isinstance(b, str):
        if n == 0:
            raise ValueError(f"beta={beta!r} attacks only probe outputs, but the model has no CIFS/CAS layer")
        if scale == "authors":
            raise ValueError("scale='authors' is the training script's formula and is undefined for beta=inf")
        if b == "inf":
            return 0.0, {p: 1.0 / n for p in positions}
        pos = b[4:]
        if pos not in positions:
            raise ValueError(f"beta={beta!r} names position {pos!r}, but the model's layers are {positions}")
        return 0.0, {p: (1.0 if p == pos else 0.0) for p in positions}
    if n == 0:
        return 1.0, {}
    if scale == "paper":
        return 1.0 / (1.0 + b), {p: b / ((1.0 + b) * n) for p in positions}
    f = 3.0 / (b + 1.0)
    return f, {p: f * b / n for p in positions}


def cross_entropy(logits: Tensor, y: Tensor) -> Tensor:
    """Per-example cross-entropy, shape (N,), computed in float32."""
    return F.cross_entropy(logits.float(), y, reduction="none")


def adaptive_loss(
    out: ModelOutput,
    y: Tensor,
    beta: Beta = 2.0,
    *,
    scale: str = "paper",
    reduction: str = "mean",
    criterion: Callable[[Tensor, Tensor], Tensor] = cross_entropy,
) -> Tensor:
    """Eq. 3 on a :class:`~cifs_edu.outputs.ModelOutput`.

    Args:
        out: from ``model.forward_with_aux(x, y)``.
        y: labels, shape (N,).
        beta: see :func:`parse_beta`; the paper trains with ``beta = |I| = 2``.
        scale: ``"paper"`` or ``"authors"`` (see the module docstring).
        reduction: ``"mean"`` (a scalar) or ``"none"`` (shape (N,)).
        criterion: per-example loss ``(logits, y) -> (N,)``; cross-entropy by default,
            a margin loss for the C&W attack.
    """
    if reduction not in ("mean", "none"):
        raise ValueError(f"reduction must be 'mean' or 'none' (got {reduction!r})")
    w_final, w_probe = loss_weights(beta, out.positions, scale)
    total = torch.zeros(y.shape[0], device=out.logits.device, dtype=torch.float32)
    if w_final:
        total = total + w_final * criterion(out.logits, y)
    for pos, w in w_probe.items():
        if w:
            total = total + w * criterion(out.probe_logits[pos], y)
    return total.mean() if reduction == "mean" else total
