r"""Attacking CIFS with its masks frozen at their clean-input values (a BPDA-style attack).

A CIFS mask depends on the input only through the probe's top-k choice (discrete: no
gradient) and, for the MLP probe, through the relevance (differentiable only in ``"full"``
mode). An attacker who suspects that this input-dependence hides useful gradient
directions can *freeze* the masks: compute them once on the clean input, then attack the
network in which every CIFS (or CAS) layer multiplies by that fixed mask. The gradient of
the frozen network is a well-behaved surrogate of the real one (the idea of Backward Pass
Differentiable Approximation, Athalye et al. 2018). The resulting ``x_adv`` is then
evaluated on the real, unfrozen model.

- :func:`clean_selections`: the masks and classes of every selector layer for a batch;
- :func:`frozen_masks`: a context manager that installs forward hooks on the selector layers
  so that they return ``z * m_frozen`` (and report ``m_frozen`` and the frozen classes);
  the probe logits are still computed on the current features, so the adaptive loss of
  Eq. 3 is unchanged. The hooks are removed on exit, leaving the model exactly as before;
- :class:`FrozenMask`: wraps an attack so that each call freezes the masks of its batch.

The hooks check the batch size: an attack that re-runs on a subset of the batch (restarts
on the examples not yet fooled) cannot be used with frozen masks; use one restart.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator, Mapping

import torch
from torch import Tensor, nn

from ..cifs import SelectorOutput
from ..errors import ConfigError
from .base import eval_mode, model_device

__all__ = ["selector_layers", "clean_selections", "frozen_masks", "FrozenMask"]


def selector_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The CIFS/CAS layers of a cifs_edu model, by position (``model.selectors``); empty for a vanilla model."""
    selectors = getattr(model, "selectors", None)
    if selectors is None:
        return {}
    return dict(selectors.items())


@torch.no_grad()
def clean_selections(model: nn.Module, x: Tensor) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
    """``(masks, classes)`` of every selector layer for inputs ``x``, computed in eval mode.

    masks: position -> (N, C); classes: position -> (N, k). Detached.
    """
    if not hasattr(model, "forward_with_aux"):
        raise ConfigError("frozen masks need a cifs_edu model with forward_with_aux and CIFS/CAS layers")
    with eval_mode(model):
        out = model.forward_with_aux(x.to(model_device(model)))
    return {p: m.detach() for p, m in out.masks.items()}, {p: c.detach() for p, c in out.classes.items()}


@contextlib.contextmanager
def frozen_masks(
    model: nn.Module, masks: Mapping[str, Tensor], classes: Mapping[str, Tensor] | None = None
) -> Iterator[nn.Module]:
    """Inside the block, each selector layer at a position in ``masks`` multiplies by the given mask.

    Args:
        model: a cifs_edu model with CIFS or CAS layers (``model.selectors``).
        masks: position -> (N, C) masks (e.g. from :func:`clean_selections`); every forward pass
            inside the block must have batch size N.
        classes: position -> (N, k) classes to report in the layer's output (default: the
            classes the layer computes on the current input).

    The hooks are removed on exit (also after an exception).
    """
    layers = selector_layers(model)
    unknown = sorted(set(masks) - set(layers))
    if unknown:
        raise ConfigError(f"frozen_masks: the model has no selector at {unknown} (it has {sorted(layers)})")
    if not masks:
        raise ConfigError("frozen_masks: no mask given")
    handles = []

    def make_hook(pos: str) -> Callable:
        mask = masks[pos]
        cls = None if classes is None else classes.get(pos)

        def hook(module: nn.Module, inputs: tuple, output: SelectorOutput) -> SelectorOutput:
            z = inputs[0]
            if z.shape[0] != mask.shape[0]:
                raise RuntimeError(
                    f"frozen mask at {pos} is for {mask.shape[0]} examples but the batch has {z.shape[0]} "
                    "(an attack that re-runs on a subset, e.g. restarts > 1, cannot use frozen masks)"
                )
            m = mask.to(device=z.device, dtype=z.dtype)
            return SelectorOutput(z * m[:, :, None, None], output.probe_logits, m,
                                  output.classes if cls is None else cls)

        return hook

    try:
        for pos in masks:
            handles.append(layers[pos].register_forward_hook(make_hook(pos)))
        yield model
    finally:
        for h in handles:
            h.remove()


class FrozenMask:
    """Wrap an attack so that it runs with the masks frozen at their values on the clean batch.

    ``FrozenMask(attack)(x, y)`` computes the clean masks of ``x`` (eval mode), runs
    ``attack(x, y)`` inside :func:`frozen_masks` and returns its ``x_adv``; the evaluation
    that follows uses the real model. ``loss``, ``beta_atk``, ``model`` and ``eps`` are the
    wrapped attack's (so :func:`~cifs_edu.attacks.sweep` accepts it).

    Args:
        attack: an attack on a cifs_edu model with CIFS/CAS layers; it must run on whole
            batches (one restart).
        positions: which layers to freeze (default: all).
    """

    def __init__(self, attack: Callable[[Tensor, Tensor], Tensor], positions: tuple[str, ...] | None = None) -> None:
        model = getattr(attack, "model", None)
        if not isinstance(model, nn.Module):
            raise ConfigError("FrozenMask needs an attack with a .model (a cifs_edu Attack)")
        layers = selector_layers(model)
        if not layers:
            raise ConfigError("FrozenMask: the model has no CIFS/CAS layer to freeze")
        if getattr(attack, "restarts", 1) != 1:
            raise ConfigError("FrozenMask: the attack must use restarts=1 (restarts run on subsets of the batch)")
        positions = tuple(layers) if positions is None else tuple(positions)
        bad = [p for p in positions if p not in layers]
        if bad or not positions:
            raise ConfigError(f"FrozenMask: positions must be a non-empty subset of {tuple(layers)} (got {positions})")
        self.attack = attack
        self.positions = positions

    def __getattr__(self, name: str):
        if name != "attack" and name in ("model", "loss", "beta_atk", "eps", "scale", "mask_grad"):
            return getattr(self.attack, name)
        raise AttributeError(name)

    def _frozen(self, x: Tensor) -> contextlib.AbstractContextManager:
        masks, classes = clean_selections(self.model, x)
        masks = {p: masks[p] for p in self.positions}
        classes = {p: classes[p] for p in self.positions}
        return frozen_masks(self.model, masks, classes)

    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        with self._frozen(x):
            return self.attack(x, y)

    def input_gradient(self, x: Tensor, y: Tensor) -> Tensor:
        """The wrapped attack's input gradient at ``x`` with the masks frozen at their values on ``x``."""
        with self._frozen(x):
            return self.attack.input_gradient(x, y)

    def __repr__(self) -> str:
        return f"FrozenMask({self.attack!r}, positions={self.positions})"
