r"""AutoAttack (Croce & Hein, 2020) through torchattacks, and the paper's balanced subset.

The official AutoAttack package (``fra31/auto-attack``) is not on PyPI. ``torchattacks``
(3.5.1, on PyPI; install it with ``pip install --no-deps torchattacks`` since its metadata
pins an old ``requests``) implements the same four attacks of the *standard* version:
APGD-CE, APGD-T (targeted DLR loss, 9 target classes), FAB-T (9 target classes) and
Square (5,000 queries), each run only on the examples the previous ones did not fool.

One difference matters: torchattacks' ``AutoAttack`` leaves APGD, APGD-T and FAB at their
own default of 10 iterations, while the official standard version uses 100. This wrapper
sets ``steps=100`` (the official value) unless told otherwise, and prints it.

The attacks see only ``model(x)`` (logits): AutoAttack is not adaptive to CIFS probes.
The paper (Appendix B) evaluates it on 2,000 CIFAR-10 test images, 200 per class:
:func:`balanced_indices` / :func:`balanced_subset` draw such a subset reproducibly.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset, Subset

from ..errors import ConfigError
from .base import Attack, format_eps, model_name

__all__ = ["AutoAttack", "balanced_indices", "balanced_subset", "dataset_labels", "AUTOATTACK_COMPONENTS"]

#: component names of the standard version, in the order they run
AUTOATTACK_COMPONENTS = ("apgd-ce", "apgd-t", "fab-t", "square")


class _LogitsOnly(nn.Module):
    """``model(x)`` as a module that must return a logits tensor (what torchattacks expects)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: Tensor) -> Tensor:
        out = self.model(x)
        if not torch.is_tensor(out):
            raise TypeError(f"AutoAttack needs model(x) to return a logits tensor (got {type(out).__name__})")
        return out


def _import_torchattacks():
    try:
        import torchattacks
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "AutoAttack needs torchattacks: pip install scipy tqdm numpy && pip install --no-deps torchattacks==3.5.1"
        ) from e
    return torchattacks


class AutoAttack(Attack):
    """AutoAttack, l_inf, via torchattacks, on the logits-only model.

    Args:
        model: classifier; ``model(x)`` returns logits.
        eps: l_inf budget (the paper: 8/255).
        version: ``"standard"`` (APGD-CE, APGD-T, FAB-T, Square: torchattacks.AutoAttack) or
            ``"custom"`` (only the components in ``attacks_to_run``, in the standard order).
        n_classes: number of classes (APGD-T and FAB-T target the ``n_classes - 1`` others).
        seed: seed of each component's random start (the global torch RNG is restored afterwards).
        steps: iterations of APGD-CE, APGD-T and FAB-T (official: 100; torchattacks' default: 10).
        n_queries: Square's query budget (official: 5,000).
        attacks_to_run: for ``version="custom"``: a subset of ``AUTOATTACK_COMPONENTS``,
            e.g. ``("apgd-ce", "apgd-t", "square")``.
        eval_mode: run with the model in eval mode (default).
        verbose: let torchattacks print each component's progress.
        fold_bn: the components attack a private copy of the model with its eval-mode
            BatchNorms folded (default: when ``eval_mode``; see :mod:`cifs_edu.engine.fast`).
        channels_last: must stay ``None``/``False``: torchattacks' FAB reshapes input
            gradients with ``.view``, which fails on channels_last tensors.
    """

    def __init__(
        self,
        model: nn.Module,
        eps: float = 8 / 255,
        version: str = "standard",
        n_classes: int = 10,
        seed: int = 0,
        *,
        steps: int = 100,
        n_queries: int = 5000,
        attacks_to_run: Sequence[str] | None = None,
        eval_mode: bool = True,
        verbose: bool = False,
        fold_bn: bool | None = None,
        channels_last: bool | None = None,
    ) -> None:
        if channels_last:
            raise ConfigError("AutoAttack: channels_last=True is not supported (torchattacks' FAB reshapes "
                              "input gradients with .view, which needs contiguous tensors)")
        super().__init__(model, eps, loss="ce", eval_mode=eval_mode, fold_bn=fold_bn, channels_last=False)
        if version not in ("standard", "custom"):
            raise ConfigError(f"version must be 'standard' or 'custom' (got {version!r})")
        if version == "standard" and attacks_to_run is not None:
            raise ConfigError("attacks_to_run is for version='custom'")
        if version == "custom":
            if not attacks_to_run:
                raise ConfigError(f"version='custom' needs attacks_to_run, a subset of {AUTOATTACK_COMPONENTS}")
            unknown = set(attacks_to_run) - set(AUTOATTACK_COMPONENTS)
            if unknown:
                raise ConfigError(
                    f"unknown AutoAttack components {sorted(unknown)}; choose from {AUTOATTACK_COMPONENTS}"
                )
        ints = (("n_classes", n_classes, 2), ("seed", seed, 0), ("steps", steps, 1), ("n_queries", n_queries, 1))
        for name, value, low in ints:
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"{name} must be an int >= {low} (got {value!r})")
        self.version = version
        self.n_classes = n_classes
        self.seed = seed
        self.steps = steps
        self.n_queries = n_queries
        self.components = AUTOATTACK_COMPONENTS if version == "standard" else tuple(
            c for c in AUTOATTACK_COMPONENTS if c in set(attacks_to_run)
        )
        self.verbose = verbose
        self._logits_model = _LogitsOnly(model)
        #: the underlying torchattacks attack (AutoAttack, MultiAttack or one component), for inspection
        self.torchattacks = self._build()

    def _build(self):
        ta = _import_torchattacks()
        m, common = self._logits_model, dict(norm="Linf", eps=self.eps, seed=self.seed)
        if self.version == "standard":
            atk = ta.AutoAttack(m, version="standard", n_classes=self.n_classes, **common)
            parts = atk._autoattack.attacks  # torchattacks 3.5.1: [APGD, APGDT, FAB, Square]
            names = [type(p).__name__ for p in parts]
            if names != ["APGD", "APGDT", "FAB", "Square"]:
                raise RuntimeError(f"unexpected torchattacks AutoAttack components: {names}")
        else:
            k = self.n_classes
            makers = {
                "apgd-ce": lambda: ta.APGD(m, loss="ce", n_restarts=1, **common),
                "apgd-t": lambda: ta.APGDT(m, n_classes=k, n_restarts=1, **common),
                "fab-t": lambda: ta.FAB(m, multi_targeted=True, n_classes=k, n_restarts=1, **common),
                "square": lambda: ta.Square(m, n_queries=self.n_queries, n_restarts=1, **common),
            }
            parts = [makers[c]() for c in self.components]
            atk = ta.MultiAttack(parts) if len(parts) > 1 else parts[0]
        for p in parts:
            if type(p).__name__ == "Square":
                p.n_queries = self.n_queries
            else:
                p.steps = self.steps
            p.verbose = self.verbose
        if not self.eval_mode:
            atk.set_model_training_mode(model_training=True, batchnorm_training=True, dropout_training=True)
        return atk

    def _repr_fields(self) -> list[tuple[str, str]]:
        return [
            ("eps", format_eps(self.eps)),
            ("version", repr(self.version)),
            ("components", "+".join(self.components)),
            ("n_classes", str(self.n_classes)),
            ("steps", str(self.steps)),
            ("n_queries", str(self.n_queries)),
            ("seed", str(self.seed)),
        ]

    def __repr__(self) -> str:
        fields = self._repr_fields() + [("eval_mode", str(self.eval_mode)), ("model", model_name(self.model))]
        return "AutoAttack(" + ", ".join(f"{k}={v}" for k, v in fields) + ")"

    def _perturb(self, x: Tensor, y: Tensor) -> Tensor:
        devices = [x.device] if x.device.type == "cuda" else []
        self._logits_model.model = self.network  # the fast copy (if enabled) for this call
        try:
            with torch.random.fork_rng(devices=devices):  # torchattacks reseeds the global RNG
                x_adv = self.torchattacks(x, y)
        finally:
            self._logits_model.model = self.model
        # the components project onto the ball already; this only removes float rounding
        return torch.min(torch.max(x_adv, x - self.eps), x + self.eps).clamp_(0, 1)


def balanced_indices(labels: Sequence[int] | Tensor | np.ndarray, per_class: int, seed: int = 0) -> Tensor:
    """Indices of ``per_class`` examples of every class, drawn without replacement.

    The paper's AutoAttack subset is ``balanced_indices(test_labels, 200, seed)`` (2,000
    CIFAR-10 images). Deterministic for a seed; returned sorted (shape (K * per_class,)).

    Raises:
        ConfigError: if some class has fewer than ``per_class`` examples.
    """
    if isinstance(per_class, bool) or not isinstance(per_class, int) or per_class < 1:
        raise ConfigError(f"per_class must be an int >= 1 (got {per_class!r})")
    labels = torch.as_tensor(np.asarray(labels)).long().flatten()
    g = torch.Generator().manual_seed(seed)
    chosen = []
    for c in torch.unique(labels).tolist():
        idx = (labels == c).nonzero().squeeze(1)
        if idx.numel() < per_class:
            raise ConfigError(f"class {c} has {idx.numel()} examples, fewer than per_class={per_class}")
        chosen.append(idx[torch.randperm(idx.numel(), generator=g)[:per_class]])
    return torch.cat(chosen).sort().values


def dataset_labels(dataset: Dataset) -> Tensor:
    """Labels of a dataset: ``dataset.targets`` / ``.labels`` when present, else read item by item."""
    for attr in ("targets", "labels"):
        if hasattr(dataset, attr):
            return torch.as_tensor(np.asarray(getattr(dataset, attr))).long()
    if isinstance(dataset, Subset):
        return dataset_labels(dataset.dataset)[torch.as_tensor(dataset.indices)]
    return torch.tensor([int(dataset[i][1]) for i in range(len(dataset))])


def balanced_subset(dataset: Dataset, per_class: int = 200, seed: int = 0) -> Subset:
    """A :class:`~torch.utils.data.Subset` with ``per_class`` examples of each class (see :func:`balanced_indices`)."""
    return Subset(dataset, balanced_indices(dataset_labels(dataset), per_class, seed).tolist())
