"""Channel-wise activation analysis (Sec. 3.1, Fig. 1, Fig. 3, Fig. A.1, Fig. A.2, Table 4).

The paper looks at the penultimate layer of a ResNet-18: the pooled output of the last
residual block (after the CIFS mask, for a CIFS model), which the final linear layer turns
into logits. For one class it sorts the channels by that class's weight in the final
linear layer (largest first: the most positively relevant channels on the left) and plots,
in that order,

- the mean activation magnitude of the channel over the class's test images, divided by the
  largest absolute mean (so the curve peaks at 1), and
- how often the channel is *activated*: its activation exceeds 1% of the largest channel
  activation of the same image (Appendix A.1),

for natural images and for their adversarial versions.

:func:`mask_selectivity` measures how many channels a CIFS mask keeps (effective channels
exp(H) of the normalised mask, and the mass on its top 10% of channels).
"""
from __future__ import annotations

from dataclasses import dataclass
import math
from typing import Callable, Sequence

import torch
from torch import Tensor, nn

from .errors import ConfigError

__all__ = [
    "final_linear",
    "penultimate_features",
    "ChannelStats",
    "channel_stats",
    "per_class_accuracy",
    "topk_correct",
    "class_pair_change",
    "mask_selectivity",
]

Attack = Callable[[Tensor, Tensor], Tensor]


def final_linear(model: nn.Module) -> nn.Linear:
    """The last linear layer of a backbone (``linear`` for ResNets, ``fc`` for WRN)."""
    for name in ("linear", "fc", "classifier"):
        layer = getattr(model, name, None)
        if isinstance(layer, nn.Linear):
            return layer
    raise AttributeError(f"{type(model).__name__} has no final linear layer named 'linear', 'fc' or 'classifier'")


@torch.no_grad()
def penultimate_features(model: nn.Module, x: Tensor, *, batch_size: int = 500, masked: bool = True) -> Tensor:
    """Pooled penultimate features, shape (N, C), with the model in eval mode.

    Args:
        masked: for a CIFS/CAS model, ``True`` returns what the final linear layer sees
            (after the last mask); ``False`` returns the last block's output before its mask.
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    chunks = []
    try:
        for i in range(0, x.shape[0], batch_size):
            out = model.forward_with_aux(x[i : i + batch_size].to(device))
            if masked or not out.features:
                chunks.append(out.penultimate.float().cpu())
            else:
                last = list(out.features)[-1]
                chunks.append(out.features[last].float().mean(dim=(2, 3)).cpu())
    finally:
        model.train(was_training)
    return torch.cat(chunks)


@dataclass
class ChannelStats:
    """Channel statistics of one class, every vector in the sorted channel order.

    Attributes:
        cls: the class index. order: channel indices sorted by decreasing final-layer weight.
        weight: the class's final-layer weights, sorted (C,).
        magnitude: ``{"natural": (C,), "adversarial": (C,)}`` mean activation / max |mean|.
        frequency: same keys, fraction of images where the channel is activated (in [0, 1]).
        raw_mean: same keys, the un-normalised mean activations.
    """

    cls: int
    order: Tensor
    weight: Tensor
    magnitude: dict[str, Tensor]
    frequency: dict[str, Tensor]
    raw_mean: dict[str, Tensor]

    @property
    def num_channels(self) -> int:
        return int(self.order.numel())


def _activation_stats(feats: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Mean activation (C,) and activated frequency (C,) of pooled features (N, C)."""
    mean = feats.mean(dim=0)
    peak = feats.abs().amax(dim=1, keepdim=True).clamp_min(1e-12)
    freq = (feats.abs() > threshold * peak).float().mean(dim=0)
    return mean, freq


def channel_stats(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    cls: int,
    *,
    attack: Attack | None = None,
    x_adv: Tensor | None = None,
    threshold: float = 0.01,
    masked: bool = True,
) -> ChannelStats:
    """Fig. 1 / Fig. 3 statistics of class ``cls`` for natural and adversarial images.

    Args:
        model: a cifs_edu model (vanilla, CIFS or CAS).
        x, y: images in [0, 1] (N, C, H, W) and labels (N,); only images of ``cls`` are used.
        attack: ``attack(x, y) -> x_adv``, used when ``x_adv`` is not given.
        x_adv: precomputed adversarial images aligned with ``x``.
        threshold: activation threshold relative to the image's largest channel (1% in the paper).
        masked: see :func:`penultimate_features`.
    """
    sel = y == cls
    if not bool(sel.any()):
        raise ValueError(f"no image of class {cls} in the data")
    data = {"natural": x[sel]}
    if x_adv is None and attack is not None:
        x_adv = attack(x[sel], y[sel])
    elif x_adv is not None:
        x_adv = x_adv[sel]
    if x_adv is not None:
        data["adversarial"] = x_adv
    weight = final_linear(model).weight.detach()[cls].float().cpu()
    order = torch.argsort(weight, descending=True)
    mags, freqs, raws = {}, {}, {}
    for kind, images in data.items():
        mean, freq = _activation_stats(penultimate_features(model, images, masked=masked), threshold)
        raws[kind] = mean[order]
        mags[kind] = (mean / mean.abs().max().clamp_min(1e-12))[order]
        freqs[kind] = freq[order]
    return ChannelStats(cls=cls, order=order, weight=weight[order], magnitude=mags, frequency=freqs, raw_mean=raws)


def per_class_accuracy(correct: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """Accuracy in % per class (Fig. A.1) from a per-example boolean ``correct`` vector."""
    correct = correct.float().cpu()
    y = y.cpu()
    counts = torch.bincount(y, minlength=num_classes).float()
    hits = torch.bincount(y, weights=correct, minlength=num_classes)
    return 100.0 * hits / counts.clamp_min(1)


def topk_correct(logits: Tensor, y: Tensor, ks: Sequence[int] = (1, 2, 3)) -> dict[int, Tensor]:
    """Per-example top-k hits (Table 4): ``{k: bool (N,)}`` is y among the k largest logits."""
    top = logits.topk(max(ks), dim=1).indices
    return {k: (top[:, :k] == y[:, None]).any(dim=1) for k in ks}


def class_pair_change(classes_clean: Tensor, classes_adv: Tensor) -> Tensor:
    """Per example, whether the *set* of classes a CIFS layer used changed under attack.

    Args:
        classes_clean, classes_adv: (N, k) class indices (``ModelOutput.classes[pos]``).
    Returns:
        bool (N,): True where the sorted class sets differ.
    """
    a, _ = classes_clean.sort(dim=1)
    b, _ = classes_adv.sort(dim=1)
    return (a != b).any(dim=1)


def mask_selectivity(masks: Tensor, top: float = 0.1) -> dict[str, float]:
    """How many channels a mask keeps, averaged over images.

    Args:
        masks: (N, C) non-negative channel masks (e.g. ``model.forward_with_aux(x).masks["P1"]``).
        top: share of channels whose mass is reported (10%).

    Returns:
        ``effective_channels``: exp(entropy) of the mask normalised to sum 1, in [1, C]
        (C = keeps every channel alike, 1 = keeps one); ``top_mass``: share of the mask's mass
        on its ``ceil(top * C)`` largest channels (``top`` = no selection, 1 = all there);
        ``channels``: C.
    """
    if masks.dim() != 2 or masks.shape[1] < 1:
        raise ConfigError(f"masks must be (N, C) (got shape {tuple(masks.shape)})")
    p = masks.detach().double().clamp_min(0)
    p = p / p.sum(dim=1, keepdim=True).clamp_min(1e-300)
    entropy = -(p * p.clamp_min(1e-300).log()).sum(dim=1)
    k = max(1, math.ceil(top * p.shape[1]))
    return {"effective_channels": float(entropy.exp().mean()), "top_mass": float(p.topk(k, dim=1).values.sum(1).mean()),
            "channels": int(p.shape[1]), "top": top}
