r"""Attacks used to evaluate CIFS (Sec. 4.1 and Appendix B of the paper).

- :class:`FGSM`, :class:`PGD`, :class:`CW` (l_inf PGD on the C&W margin, kappa = 50): on the
  standard loss (final logits) or, with ``loss="adaptive"``, on the joint loss of Eq. 3 with
  the attacker's ``beta_atk`` (a number, ``"inf"``, ``"inf-P1"``, ``"inf-P2"``);
- :func:`sweep`: one attack over the paper's betas, worst case per example (Table B.3);
- :class:`AutoAttack`: the standard AutoAttack through torchattacks, with
  :func:`balanced_subset` for the paper's 2,000-image (200 per class) evaluation;
- :func:`robust_accuracy`, :func:`topk_accuracy`, :func:`per_class_accuracy`: evaluation.

Every attack keeps ``x_adv`` in [0, 1] and in the eps-ball, runs the model in eval mode,
never touches parameter gradients and prints its full configuration (``print(atk)``).
"""
from ..losses import BETA_SWEEP
from .autoattack import AUTOATTACK_COMPONENTS, AutoAttack, balanced_indices, balanced_subset, dataset_labels
from .base import Attack, eval_mode, format_eps
from .criteria import CWMargin, cross_entropy, cw_margin_loss
from .cw import CW
from .accuracy import EvalResult, per_class_accuracy, robust_accuracy, topk_accuracy, true_class_rank
from .fgsm import FGSM
from .pgd import PGD
from .sweep import SweepResult, beta_label, sweep

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
