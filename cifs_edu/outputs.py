"""The named structure returned by ``model.forward_with_aux(x, y)``.

``model(x)`` returns logits only (so torchattacks and AutoAttack work unchanged);
everything else a chapter or an adaptive attack needs -- probe logits, masks and
the features before and after each mask -- comes through this explicit call.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from torch import Tensor

__all__ = ["ModelOutput"]


@dataclass
class ModelOutput:
    """Everything one forward pass produced.

    Attributes:
        logits: final prediction p, shape (N, K).
        probe_logits: raw predictions p^l of each CIFS (or CAS) layer, shape (N, K), keyed by
            position name ("P2", "P1") in forward order (empty for a vanilla model).
        masks: importance masks m^l, shape (N, C), same keys.
        features: z^l before the mask, shape (N, C, H, W), same keys.
        masked: z^l after the mask (Eq. 2), shape (N, C, H, W), same keys.
        penultimate: pooled features fed to the final linear layer, shape (N, C).
        classes: the class indices used for the relevance of each CIFS layer, shape (N, k)
            (with repeats when the paper's label rule counts y twice), same keys.
    """

    logits: Tensor
    probe_logits: dict[str, Tensor] = field(default_factory=dict)
    masks: dict[str, Tensor] = field(default_factory=dict)
    features: dict[str, Tensor] = field(default_factory=dict)
    masked: dict[str, Tensor] = field(default_factory=dict)
    penultimate: Tensor | None = None
    classes: dict[str, Tensor] = field(default_factory=dict)

    @property
    def positions(self) -> tuple[str, ...]:
        """Names of the CIFS/CAS layers in forward order (empty for a vanilla model)."""
        return tuple(self.probe_logits)
