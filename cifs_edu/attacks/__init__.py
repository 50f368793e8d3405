r"""Attacks used to evaluate CIFS (Sec. 4.1 and Appendix B of the paper).

- :class:`FGSM`, :class:`PGD`, :class:`CW` (l_inf PGD on the C&W margin, kappa = 50): on the
  standard loss (final logits) or, with ``loss="adaptive"``, on the joint loss of Eq. 3 with
  the attacker's ``beta_atk`` (a number, ``"inf"``, ``"inf-P1"``, ``"inf-P2"``);
- :func:`sweep` (module ``beta_sweep``): one attack over the paper's betas, worst case per example (Table B.3);
- :class:`AutoAttack`: the standard AutoAttack through torchattacks, with
  :func:`balanced_subset` for the paper's 2,000-image (200 per class) evaluation;
- :func:`robust_accuracy`, :func:`topk_accuracy`, :func:`per_class_accuracy`: evaluation.

Every attack keeps ``x_adv`` in [0, 1] and in the eps-ball, runs the model in eval mode,
never touches parameter gradients and prints its full configuration (``print(atk)``).
"""
from __future__ import annotations

from .. import _lazy_names

#: Where each public name lives (module of this package, or ``..losses``). Nothing is imported
#: until it is used, so ``from cifs_edu.attacks import PGD`` loads PGD and its base, not AutoAttack.
_HOME = {
    "Attack": "base", "eval_mode": "base", "format_eps": "base",
    "FGSM": "fgsm", "PGD": "pgd", "CW": "cw",
    "CWMargin": "criteria", "cw_margin_loss": "criteria", "cross_entropy": "criteria",
    "AutoAttack": "autoattack", "AUTOATTACK_COMPONENTS": "autoattack", "balanced_indices": "autoattack",
    "balanced_subset": "autoattack", "dataset_labels": "autoattack",
    "sweep": "beta_sweep", "SweepResult": "beta_sweep", "beta_label": "beta_sweep",
    "BETA_SWEEP": "..losses",
    "EvalResult": "accuracy", "robust_accuracy": "accuracy", "topk_accuracy": "accuracy",
    "per_class_accuracy": "accuracy", "true_class_rank": "accuracy",
}


__getattr__, __dir__ = _lazy_names(__name__, _HOME)

__all__ = [
    "Attack",
    "FGSM",
    "PGD",
    "CW",
    "AutoAttack",
    "AUTOATTACK_COMPONENTS",
    "CWMargin",
    "cw_margin_loss",
    "cross_entropy",
    "sweep",
    "SweepResult",
    "beta_label",
    "BETA_SWEEP",
    "EvalResult",
    "robust_accuracy",
    "topk_accuracy",
    "per_class_accuracy",
    "true_class_rank",
    "balanced_indices",
    "balanced_subset",
    "dataset_labels",
    "eval_mode",
    "format_eps",
]
