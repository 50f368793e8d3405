"""Loading other people's weights: plain CIFAR ResNet / WRN checkpoints and the authors' CIFS models.

- :func:`load_backbone_state_dict` loads a standard CIFAR ResNet-18 (``conv1, bn1,
  layer1..layer4, linear``) or TRADES-style WRN state_dict into our backbone, leaving the
  CIFS probes / CAS heads as they are.
- :func:`load_authors_state_dict` loads a checkpoint of the authors' released models
  (GitHub ``HanshuYAN/CIFS``: ResNet-18 CIFS/CAS on ``layer4``, the gray ResNet-10 with
  probes after ``layer3``/``layer4``, the WRN-28-10 CIFS) by renaming their probe
  parameters to ours (:func:`authors_key_map`). Their backbone names already match.
"""
from __future__ import annotations

import re
from typing import Mapping

import torch
from torch import Tensor

from ..cas import CASLayer
from ..cifs import MLPProbe
from .base import SelectiveNet

__all__ = ["strip_prefix", "load_backbone_state_dict", "authors_key_map", "load_authors_state_dict"]


def strip_prefix(state_dict: Mapping[str, Tensor], prefix: str = "module.") -> dict[str, Tensor]:
    """Remove a ``DataParallel`` prefix (``module.``) from every key that has it."""
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state_dict.items()}


def _unwrap(state_dict):
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]  # the authors' checkpoint dict
    return strip_prefix(state_dict)


def load_backbone_state_dict(model: SelectiveNet, state_dict: Mapping[str, Tensor]) -> list[str]:
    """Load a plain backbone state_dict; return the selector keys left untouched.

    Every backbone parameter and buffer must be present and nothing unknown may be in
    ``state_dict`` (else ``ValueError`` listing the keys); shapes must match.
    """
    sd = _unwrap(state_dict)
    result = model.load_state_dict(sd, strict=False)
    missing_backbone = [k for k in result.missing_keys if not k.startswith("selectors.")]
    if missing_backbone or result.unexpected_keys:
        raise ValueError(
            "state_dict does not match the backbone: "
            f"missing {missing_backbone[:8]}{'...' if len(missing_backbone) > 8 else ''}, "
            f"unexpected {result.unexpected_keys[:8]}{'...' if len(result.unexpected_keys) > 8 else ''}"
        )
    return [k for k in result.missing_keys if k.startswith("selectors.")]


def _probe_key(model: SelectiveNet, pos: str, inner: str) -> str:
    """Their probe ``nn.Sequential`` -> our probe: ``0.fc.*`` -> fc1, ``1.*`` -> fc2 (MLP) / fc (linear)."""
    layer = model.selectors[pos]
    if isinstance(layer, CASLayer):
        raise KeyError(f"a CIFS probe parameter for position {pos}, but the model's {pos} layer is CAS")
    mlp = isinstance(layer.probe, MLPProbe)
    m = re.fullmatch(r"0\.fc\.(weight|bias)", inner)
    if m and mlp:
        return f"selectors.{pos}.probe.fc1.{m.group(1)}"
    m = re.fullmatch(r"1\.(weight|bias)", inner)
    if m:
        return f"selectors.{pos}.probe.{'fc2' if mlp else 'fc'}.{m.group(1)}"
    raise KeyError(f"unknown probe parameter {inner!r} for the {'MLP' if mlp else 'linear'} probe at {pos}")


def authors_key_map(model: SelectiveNet, keys) -> dict[str, str]:
    """Map each of the authors' state_dict keys to ours (keys without ``module.``).

    Their names: ResNet ``layer4.{i}.Probe.Probe.{j}...`` (CIFS) and ``layer4.{i}.CAS.fc.*``
    (CAS); gray ResNet-10 ``Probe_0/Probe_1.Probe.*`` (CIFS) and ``Probe_3/Probe_4.fc.*``
    (CAS); WRN ``block3.layer.{last}.Probe.Probe.*`` (P2) and ``Probe.Probe.*`` (P1).
    """
    block_pos = getattr(model, "block_positions", {})
    out = {}
    for key in keys:
        m = re.fullmatch(r"layer(\d)\.(\d+)\.(Probe\.Probe|CAS\.fc)\.(.+)", key)
        if m:
            pos = block_pos.get((f"layer{m.group(1)}", int(m.group(2))))
            if pos is None:
                raise KeyError(f"{key}: the authors' selector sits on a block that is not P1/P2 here")
            if m.group(3) == "CAS.fc":
                out[key] = f"selectors.{pos}.fc.{m.group(4)}"
            else:
                out[key] = _probe_key(model, pos, m.group(4))
            continue
        m = re.fullmatch(r"Probe_([01])\.Probe\.(.+)", key)
        if m:
            out[key] = _probe_key(model, "P2" if m.group(1) == "0" else "P1", m.group(2))
            continue
        m = re.fullmatch(r"Probe_([34])\.fc\.(.+)", key)
        if m:
            out[key] = f"selectors.{'P2' if m.group(1) == '3' else 'P1'}.fc.{m.group(2)}"
            continue
        m = re.fullmatch(r"block3\.layer\.(\d+)\.Probe\.Probe\.(.+)", key)
        if m:
            out[key] = _probe_key(model, "P2", m.group(2))
            continue
        m = re.fullmatch(r"Probe\.Probe\.(.+)", key)
        if m:
            out[key] = _probe_key(model, "P1", m.group(1))
            continue
        out[key] = key
    return out


def load_authors_state_dict(model: SelectiveNet, state_dict: Mapping[str, Tensor]) -> None:
    """Load the authors' released CIFS (or CAS) weights into our model, strictly.

    ``state_dict`` may be their checkpoint (``{"state_dict": ..., ...}``) or a bare
    state_dict, with or without the ``module.`` prefix. Build the model with the same
    architecture, defense and positions; the default CIFS options are theirs (the paper's
    label rule; see :mod:`cifs_edu.cifs`). Raises ``KeyError`` /
    ``RuntimeError`` on any missing, unexpected or mis-shaped parameter.
    """
    sd = _unwrap(state_dict)
    mapping = authors_key_map(model, sd.keys())
    renamed = {mapping[k]: v for k, v in sd.items()}
    with torch.no_grad():
        model.load_state_dict(renamed, strict=True)
