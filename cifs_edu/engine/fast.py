r"""A faster, private copy of a model for the duration of an attack (speed only).

An attack needs only ``d loss / d x`` of the model **in eval mode**. Three things make
that cheaper without changing what is computed (beyond float rounding):

1. **BatchNorm folding.** In eval mode a BatchNorm that directly follows a convolution is
   an affine map per channel, ``bn(conv(x)) = conv(x) * s + t`` with
   ``s = gamma / sqrt(running_var + eps)`` and ``t = beta - running_mean * s``, so it can be
   folded into the convolution: ``W' = W * s`` (per output channel), ``b' = b * s + t``
   (``torch.nn.utils.fusion.fuse_conv_bn_weights``). The BN layer is replaced by ``nn.Identity``. This
   removes one pass over every activation map in the forward and one in the backward.
   Only pairs whose convolution output feeds *nothing but* that BatchNorm are folded: the
   pairs a module declares in its ``bn_fold_pairs`` class attribute (``(conv_name,
   bn_name)`` tuples; the CIFAR ResNet, its BasicBlock and the WideResNet block declare
   theirs) and adjacent ``Conv2d`` -> ``BatchNorm2d`` entries of an ``nn.Sequential``. A
   BatchNorm without running statistics (which normalises with batch statistics even in
   eval mode) is never folded.
2. **channels_last** memory format for the copy's 4-D weights (and the attack's inputs):
   oneDNN runs convolutions in NHWC without re-ordering (about 1.8x faster for a
   ResNet-18 attack step on the 2-core CPU machines, see ``benchmarks/``).
3. **frozen parameters** (``requires_grad=False``): autograd then neither records nor
   saves what only the parameter gradients would need.

The copy (:func:`private_copy`: new module objects and new frozen parameter objects that
share the original's storage; folded weights are new tensors) is made *after* the
caller's model was put in eval mode (and its CIFS mask-gradient mode set), so it behaves
as that model; the caller's model (its training flags, BatchNorm statistics, parameters,
``.grad`` fields and memory format) is never modified. Results are equal to those of the original model up to float
rounding (logits to ~1e-6 relative); an attack's sign steps may therefore differ on the
rare pixels whose input gradient is within rounding of zero.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_weights

__all__ = ["FastCopy", "fold_batchnorm", "foldable_pairs", "private_copy", "fast_copy"]


def _is_plain(conv: nn.Module) -> bool:
    """A Conv2d whose weight is a plain parameter (not parametrised, e.g. weight-normed)."""
    if not isinstance(conv, nn.Conv2d):
        return False
    return not getattr(conv, "parametrizations", None) and isinstance(conv.weight, nn.Parameter)


def _is_foldable(conv: nn.Module, bn: nn.Module) -> bool:
    return (
        _is_plain(conv)
        and isinstance(bn, nn.BatchNorm2d)
        and bn.running_mean is not None
        and bn.running_var is not None
        and bn.num_features == conv.out_channels
        and not bn.training
    )


def foldable_pairs(model: nn.Module) -> list[tuple[nn.Module, str, str]]:
    """``(parent, conv_name, bn_name)`` of every conv -> BatchNorm pair that is safe to fold.

    Safe = declared by the parent's ``bn_fold_pairs`` or adjacent in an ``nn.Sequential``,
    and the BatchNorm is in eval mode with running statistics.
    """
    pairs: list[tuple[nn.Module, str, str]] = []
    for parent in model.modules():
        declared = getattr(type(parent), "bn_fold_pairs", ())
        candidates = list(declared)
        if isinstance(parent, nn.Sequential):
            names = list(parent._modules)
            candidates += list(zip(names[:-1], names[1:]))
        for conv_name, bn_name in candidates:
            conv = parent._modules.get(conv_name)
            bn = parent._modules.get(bn_name)
            if conv is not None and bn is not None and _is_foldable(conv, bn):
                pairs.append((parent, conv_name, bn_name))
    return pairs


@torch.no_grad()
def _fold(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    """``torch.nn.utils.fusion.fuse_conv_bn_weights`` into ``conv``, in place. (An earlier hand-written
    fold in float64 was no more accurate: measured on the smoke vanilla_at and cifs_at models, 256 test
    images, the largest logit error against a float64 model was the same for both folds, 4.3e-6 and
    9.0e-6; the two folds differ by at most 2.4e-7 per weight.)"""
    w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    conv.weight = nn.Parameter(w.detach().contiguous(memory_format=torch.contiguous_format),
                               requires_grad=conv.weight.requires_grad)
    conv.bias = nn.Parameter(b.detach(), requires_grad=conv.weight.requires_grad)


def fold_batchnorm(model: nn.Module) -> int:
    """Fold every safe eval-mode BatchNorm into its convolution, **in place**; return how many.

    Use on a copy (see :func:`fast_copy`): the model's BN layers become ``nn.Identity`` and
    it must stay in eval mode afterwards.
    """
    pairs = foldable_pairs(model)
    for parent, conv_name, bn_name in pairs:
        _fold(parent._modules[conv_name], parent._modules[bn_name])
        setattr(parent, bn_name, nn.Identity())
    return len(pairs)


@dataclass
class FastCopy:
    """What :func:`fast_copy` returns: the copy and what was done to it."""

    model: nn.Module
    folded: int
    channels_last: bool

    def prepare(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` in the copy's preferred memory format (channels_last for 4-D inputs when enabled)."""
        if self.channels_last and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x


def private_copy(model: nn.Module) -> nn.Module:
    """A structural copy of ``model`` whose parameters are new, frozen ``Parameter`` objects.

    Every module is copied (``copy.copy``: plain attributes, hooks and other Python state
    are shared with the original) with its own ``_modules``, ``_parameters`` and
    ``_buffers`` dicts; each parameter becomes a new ``Parameter`` with
    ``requires_grad=False`` that shares the original's storage (tied parameters stay tied).
    Replacing a submodule, a parameter or a buffer of the copy, or converting it with
    ``.to()``, therefore never changes the original; in-place writes to the copy's tensors
    would, so callers (like :func:`fold_batchnorm`) assign new tensors instead.
    """
    params: dict[int, nn.Parameter] = {}
    modules: dict[int, nn.Module] = {}

    def new_param(p):
        if p is None:
            return None
        if id(p) not in params:
            params[id(p)] = nn.Parameter(p.detach(), requires_grad=False)
        return params[id(p)]

    def copy_module(m: nn.Module) -> nn.Module:
        if id(m) in modules:
            return modules[id(m)]
        c = copy.copy(m)
        modules[id(m)] = c
        c._parameters = {k: new_param(v) for k, v in m._parameters.items()}
        c._buffers = dict(m._buffers)
        c._modules = {k: (copy_module(v) if v is not None else None) for k, v in m._modules.items()}
        return c

    return copy_module(model)


def fast_copy(model: nn.Module, *, fold_bn: bool = True, channels_last: bool = True) -> FastCopy:
    """A private copy of ``model`` (see :func:`private_copy`) for computing input gradients quickly.

    Args:
        model: the model, already in the mode the attack wants (normally eval mode).
        fold_bn: fold eval-mode BatchNorms into their convolutions (:func:`fold_batchnorm`).
        channels_last: convert the copy's 4-D parameters and buffers to channels_last.

    The copy's parameters never require gradients; the original is never modified.
    """
    net = private_copy(model)
    folded = fold_batchnorm(net) if fold_bn else 0
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    return FastCopy(net, folded, channels_last)
