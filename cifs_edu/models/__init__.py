"""Backbones with optional CIFS or CAS layers, and the factory :func:`build_model`.

>>> from cifs_edu.models import build_model
>>> model = build_model("resnet18", defense="cifs", width=8)       # P1 + P2, the paper's set-up
>>> model(torch.rand(2, 3, 32, 32)).shape                           # doctest: +SKIP
torch.Size([2, 10])
>>> out = model.forward_with_aux(x, y)                              # doctest: +SKIP
>>> out.probe_logits["P2"], out.masks["P1"]                         # doctest: +SKIP

Architectures (inputs in [0, 1], 32x32 or 28x28):

- ``"resnet18"``: CIFAR ResNet-18 (11,173,962 parameters at width 64 without probes);
- ``"resnet10"``: ResNet-10, one block per stage, for Fashion-MNIST (1 input channel by default);
- ``"wrn28_10"``: pre-activation WideResNet-28-10 (36,479,194 parameters); its
  ``width`` is the widen factor (10).

Defenses: ``"none"`` (vanilla), ``"cifs"`` (this paper), ``"cas"`` (Bai et al., 2021).
See :mod:`cifs_edu.cifs` for the CIFS options (which are the paper's and which the
authors' code uses) and :mod:`cifs_edu.cas` for CAS.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Mapping, Sequence

import torch.nn as nn

from .. import _lazy_names
from ..cifs import CIFSConfig, PROBE_KINDS
from ..errors import ConfigError
from ..names import ARCHS, DEFENSES
from .base import FORWARD_ORDER, SelectiveNet
from .normalize import DATASET_STATS, Normalize, NormalizeSpec, normalize_problems
from .resnet import RESNET_BLOCKS, BasicBlock, CIFARResNet

__all__ = [
    "ARCHS",
    "DEFENSES",
    "POSITIONS",
    "build_model",
    "mask_grad",
    "count_parameters",
    "SelectiveNet",
    "CIFARResNet",
    "WideResNet",
    "BasicBlock",
    "Normalize",
    "DATASET_STATS",
    "load_backbone_state_dict",
    "load_authors_state_dict",
    "authors_key_map",
]

#: Loaded on first use (a ResNet chapter never reads them): the WRN and the checkpoint loaders.
_LAZY = {"WideResNet": "wrn", "load_backbone_state_dict": "checkpoints", "load_authors_state_dict": "checkpoints",
         "authors_key_map": "checkpoints"}
__getattr__, __dir__ = _lazy_names(__name__, _LAZY)

POSITIONS = ("P1", "P2")

_DEFAULT_WIDTH = {"resnet18": 64, "resnet10": 64, "wrn28_10": 10}
_DEFAULT_IN_CHANNELS = {"resnet18": 3, "resnet10": 1, "wrn28_10": 3}
_MAX_WIDEN = 20
_CIFS_DEFAULTS = CIFSConfig()


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _default_hidden(arch: str, width: int) -> int:
    """MLP probe width: 128 for ResNets at width 64 (scaled with width), 240 for WRN-28-10."""
    if arch == "wrn28_10":
        return 24 * width
    return max(1, 2 * width)


def build_model(
    arch: str = "resnet18",
    defense: str = "none",
    *,
    num_classes: int = 10,
    in_channels: int | None = None,
    width: int | None = None,
    positions: Sequence[str] | str | None = None,
    probes: str | Mapping[str, str] | None = None,
    probe: str | None = None,
    hidden: int | Mapping[str, int] | None = None,
    k: int = 2,
    label_rule: str = "paper",
    imgf: str = "softmax",
    alpha: float | None = None,
    T: float = 1.0,
    scale: float | str = 1,
    relevance: str = "closed",
    grad_mode: str = "detached",
    softplus_beta: float = 5.0,
    normalize: NormalizeSpec = None,
    drop_rate: float = 0.0,
) -> SelectiveNet:
    """Build a backbone with optional CIFS/CAS layers; every option is validated first.

    Args:
        arch: ``"resnet18"``, ``"resnet10"`` or ``"wrn28_10"``.
        defense: ``"none"``, ``"cifs"`` or ``"cas"``.
        num_classes: K >= 2.
        in_channels: input channels (default 3; 1 for ``"resnet10"``, the FMNIST network).
        width: ResNets: channels of ``layer1`` (default 64, the paper's; e.g. 8 or 16 on a
            CPU); WRN: the widen factor (default 10).
        positions: where the CIFS/CAS layers go, any subset of ``("P1", "P2")`` in any
            order (default both; P1 = last block, P2 = second-to-last). Must be empty for
            ``"none"``. ``model.positions`` is in forward order (``("P2", "P1")``).
        probes: CIFS probe kind for all positions (``"linear"``/``"mlp"``) or a dict per
            position, e.g. ``{"P2": "linear"}`` (default: P1 linear, P2 MLP, as the paper).
            ``probe`` is an alias for the all-positions string.
        hidden: MLP probe width (int or dict per position); default 128 for ResNets at
            width 64 (``2 * width``) and 240 for WRN-28-10 (``24 * widen``).
        k, label_rule, imgf, alpha, T, scale, relevance, grad_mode, softplus_beta:
            CIFS options, see :mod:`cifs_edu.cifs` (Options table). Only ``defense="cifs"``
            may change them from their defaults.
        normalize: None (default, as the authors), ``"cifar10"``, ``"svhn"``, ``"fmnist"``, ``"synthetic"``
            or a ``(mean, std)`` pair: normalisation inside the model.
        drop_rate: dropout in WRN blocks (0 by default; WRN only).

    Raises:
        ConfigError: one error listing every invalid or inconsistent option.
    """
    problems: list[str] = []
    if arch not in ARCHS:
        problems.append(f"arch must be one of {ARCHS} (got {arch!r})")
    if defense not in DEFENSES:
        problems.append(f"defense must be one of {DEFENSES} (got {defense!r})")
    if not _is_int(num_classes) or num_classes < 2:
        problems.append(f"num_classes must be an integer >= 2 (got {num_classes!r})")
    if in_channels is None:
        in_channels = _DEFAULT_IN_CHANNELS.get(arch, 3)
    elif not _is_int(in_channels) or in_channels < 1:
        problems.append(f"in_channels must be an integer >= 1 (got {in_channels!r})")
    if width is None:
        width = _DEFAULT_WIDTH.get(arch, 64)
    elif not _is_int(width) or width < 1:
        problems.append(f"width must be an integer >= 1 (got {width!r})")
    elif arch == "wrn28_10" and width > _MAX_WIDEN:
        problems.append(
            f"for wrn28_10, width is the widen factor (10 = WRN-28-10); got {width}, above {_MAX_WIDEN}"
        )
    if not (isinstance(drop_rate, (int, float)) and 0 <= drop_rate < 1):
        problems.append(f"drop_rate must be in [0, 1) (got {drop_rate!r})")
    elif drop_rate and arch != "wrn28_10":
        problems.append("drop_rate applies only to wrn28_10")

    # positions
    if positions is None:
        pos: tuple[str, ...] = () if defense == "none" else POSITIONS
    else:
        pos = (positions,) if isinstance(positions, str) else tuple(positions)
        bad = [p for p in pos if p not in POSITIONS]
        if bad:
            problems.append(f"positions must be a subset of {POSITIONS} (unknown {bad})")
        if len(set(pos)) != len(pos):
            problems.append(f"positions must not repeat (got {pos})")
        if defense == "none" and pos:
            problems.append(f"defense='none' has no CIFS/CAS layers, but positions={pos} was given")
        if defense in ("cifs", "cas") and not pos:
            problems.append(f"defense={defense!r} needs at least one position of {POSITIONS}")
    pos = tuple(p for p in FORWARD_ORDER if p in pos)

    # CIFS options
    config = CIFSConfig(
        k=k, label_rule=label_rule, imgf=imgf, alpha=alpha, T=T, scale=scale,
        relevance=relevance, grad_mode=grad_mode, softplus_beta=softplus_beta,
    )
    probe_kinds: dict[str, str] = {}
    hidden_sizes: dict[str, int] = {}
    if defense == "cifs":
        problems += config.problems(num_classes if _is_int(num_classes) else None)
        probe_kinds = {"P1": "linear", "P2": "mlp"}
        if probe is not None and probes is not None:
            problems.append("give either probe= or probes=, not both")
        spec = probe if probe is not None else probes
        if isinstance(spec, str):
            if spec not in PROBE_KINDS:
                problems.append(f"probe must be one of {PROBE_KINDS} (got {spec!r})")
            else:
                probe_kinds = {p: spec for p in POSITIONS}
        elif isinstance(spec, Mapping):
            for p, kind in spec.items():
                if p not in pos:
                    problems.append(f"probes names position {p!r}, which is not among positions {pos}")
                elif kind not in PROBE_KINDS:
                    problems.append(f"probes[{p!r}] must be one of {PROBE_KINDS} (got {kind!r})")
                else:
                    probe_kinds[p] = kind
        elif spec is not None:
            problems.append(f"probes must be a string or a dict position -> kind (got {spec!r})")
        default_h = _default_hidden(arch, width) if _is_int(width) and width >= 1 else 1
        hidden_sizes = {p: default_h for p in POSITIONS}
        if isinstance(hidden, Mapping):
            for p, h in hidden.items():
                if p not in pos:
                    problems.append(f"hidden names position {p!r}, which is not among positions {pos}")
                elif not _is_int(h) or h < 1:
                    problems.append(f"hidden[{p!r}] must be an integer >= 1 (got {h!r})")
                else:
                    hidden_sizes[p] = h
        elif hidden is not None:
            if not _is_int(hidden) or hidden < 1:
                problems.append(f"hidden must be an integer >= 1 (got {hidden!r})")
            else:
                hidden_sizes = {p: hidden for p in POSITIONS}
    else:
        changed = [
            name for name in ("k", "label_rule", "imgf", "alpha", "T", "scale", "relevance", "grad_mode", "softplus_beta")
            if getattr(config, name) != getattr(_CIFS_DEFAULTS, name)
        ]
        changed += [name for name, v in (("probes", probes), ("probe", probe), ("hidden", hidden)) if v is not None]
        if changed and defense in DEFENSES:
            problems.append(f"options {changed} apply only to defense='cifs' (defense={defense!r})")
    if _is_int(in_channels) and in_channels >= 1:
        problems += normalize_problems(normalize, in_channels)
    if problems:
        raise ConfigError(f"invalid model configuration ({arch}, defense={defense}): " + "; ".join(problems))

    common = dict(
        num_classes=num_classes,
        in_channels=in_channels,
        defense=defense,
        positions=pos,
        config=config if defense == "cifs" else None,
        probes=probe_kinds,
        hidden=hidden_sizes,
        normalize=normalize,
        arch=arch,
    )
    if arch == "wrn28_10":
        from .wrn import WideResNet

        return WideResNet(depth=28, widen_factor=width, drop_rate=float(drop_rate), **common)
    return CIFARResNet(num_blocks=RESNET_BLOCKS[arch], width=width, **common)


def _selective_modules(model: nn.Module) -> list[SelectiveNet]:
    if isinstance(model, SelectiveNet):
        return [model]
    found = [m for m in model.modules() if isinstance(m, SelectiveNet)]
    if not found:
        raise TypeError(f"{type(model).__name__} contains no cifs_edu model")
    return found


@contextmanager
def mask_grad(model: nn.Module, mode: str) -> Iterator[nn.Module]:
    """Context manager: set the CIFS mask gradient mode (``"detached"`` or ``"full"``), then restore it.

    ``model`` may also be a wrapper (e.g. ``nn.Sequential``) containing cifs_edu models.

    >>> with mask_grad(model, "full"):                   # doctest: +SKIP
    ...     loss = adaptive_loss(model.forward_with_aux(x), y)   # gradients through the masks
    """
    nets = _selective_modules(model)
    previous = [net.set_mask_grad(mode) for net in nets]
    try:
        yield model
    finally:
        for net, prev in zip(nets, previous):
            net.set_mask_grad(prev)


def count_parameters(model: nn.Module, selectors: bool = True) -> int:
    """Number of parameters; ``selectors=False`` leaves out CIFS probes / CAS heads."""
    if selectors or not isinstance(model, SelectiveNet):
        return sum(p.numel() for p in model.parameters())
    return sum(p.numel() for p in model.backbone_parameters())
