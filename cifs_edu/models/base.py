"""What every backbone shares: optional selector layers (CIFS or CAS) at P1/P2 and the API.

A backbone calls :meth:`SelectiveNet._select` at the places its architecture defines
as P2 (second-to-last block) and P1 (last block); with ``defense="none"`` there are
no selectors and the network is the plain backbone.
"""
from __future__ import annotations

from typing import Mapping

import torch.nn as nn
from torch import Tensor

from ..cas import CASLayer
from ..cifs import GRAD_MODES, CIFSConfig, CIFSLayer
from ..outputs import ModelOutput
from ..errors import ConfigError

__all__ = ["SelectiveNet", "FORWARD_ORDER", "Recorder"]

#: positions in forward order
FORWARD_ORDER = ("P2", "P1")


class Recorder:
    """Collects each selector's outputs during one forward pass."""

    def __init__(self) -> None:
        self.probe_logits: dict[str, Tensor] = {}
        self.masks: dict[str, Tensor] = {}
        self.features: dict[str, Tensor] = {}
        self.masked: dict[str, Tensor] = {}
        self.classes: dict[str, Tensor] = {}

    def output(self, logits: Tensor, penultimate: Tensor) -> ModelOutput:
        return ModelOutput(
            logits=logits,
            probe_logits=self.probe_logits,
            masks=self.masks,
            features=self.features,
            masked=self.masked,
            penultimate=penultimate,
            classes=self.classes,
        )


class SelectiveNet(nn.Module):
    """Base class of the CIFAR ResNets and the WideResNet.

    Attributes:
        arch: architecture name; defense: ``"none"``, ``"cifs"`` or ``"cas"``;
        positions: selector positions in forward order (e.g. ``("P2", "P1")``);
        num_classes: K; selectors: ``nn.ModuleDict`` position -> CIFSLayer / CASLayer.

    ``forward(x)`` returns logits (N, K) only (attack libraries use it unchanged);
    ``forward_with_aux(x, y=None)`` returns a :class:`~cifs_edu.outputs.ModelOutput`.
    """

    arch: str = ""

    def _init_selectors(
        self,
        defense: str,
        positions: tuple[str, ...],
        channels: Mapping[str, int],
        num_classes: int,
        config: CIFSConfig | None = None,
        probes: Mapping[str, str] | None = None,
        hidden: Mapping[str, int] | None = None,
    ) -> None:
        self.defense = defense
        self.num_classes = num_classes
        self.positions = tuple(p for p in FORWARD_ORDER if p in positions)
        self.selectors = nn.ModuleDict()
        self._mask_grad = (config.grad_mode if config is not None else "detached")
        for p in self.positions:
            if defense == "cifs":
                self.selectors[p] = CIFSLayer(channels[p], num_classes, probes[p], hidden[p], config)
            elif defense == "cas":
                self.selectors[p] = CASLayer(channels[p], num_classes)
            else:
                raise ConfigError(f"defense {defense!r} has no selector layers")

    def _select(self, pos: str, z: Tensor, y: Tensor | None, rec: Recorder) -> Tensor:
        """Apply the selector at ``pos`` (if any) to ``z`` and record what it produced."""
        if pos not in self.selectors:
            return z
        out = self.selectors[pos](z, y)
        rec.features[pos] = z
        rec.masked[pos] = out.masked
        rec.probe_logits[pos] = out.probe_logits
        rec.masks[pos] = out.mask
        rec.classes[pos] = out.classes
        return out.masked

    def forward_with_aux(self, x: Tensor, y: Tensor | None = None) -> ModelOutput:  # pragma: no cover
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        """Final logits (N, K) for inputs x (N, C, H, W) in [0, 1]."""
        return self.forward_with_aux(x).logits

    # -- gradient mode of the CIFS masks --------------------------------------------------

    @property
    def mask_grad(self) -> str:
        """Current gradient mode of the CIFS masks (``"detached"`` or ``"full"``)."""
        return self._mask_grad

    def set_mask_grad(self, mode: str) -> str:
        """Set the gradient mode of every CIFS mask; return the previous mode.

        ``"detached"`` (the authors'): the mask is a constant w.r.t. features and input.
        ``"full"``: gradients flow through the relevance and the mask (adaptive attacks).
        CAS masks are never detached and a vanilla model has no mask: for them the mode is
        only recorded.
        """
        if mode not in GRAD_MODES:
            raise ConfigError(f"mask gradient mode must be one of {GRAD_MODES} (got {mode!r})")
        previous = self._mask_grad
        self._mask_grad = mode
        for layer in self.selectors.values():
            if isinstance(layer, CIFSLayer):
                layer.grad_mode = mode
        return previous

    def probe_parameters(self):
        """Parameters of the CIFS probes / CAS heads (not of the backbone)."""
        return self.selectors.parameters()

    def backbone_parameters(self):
        """Parameters of the backbone (everything except the selectors)."""
        ids = {id(p) for p in self.selectors.parameters()}
        return (p for p in self.parameters() if id(p) not in ids)
