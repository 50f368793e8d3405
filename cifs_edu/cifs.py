r"""CIFS: channel-wise importance-based feature selection (Sec. 3.2, Eqs. 1-2).

A CIFS layer takes a feature map :math:`z^l` of shape (N, C, H, W) and

1. **raw prediction** -- a small *probe* :math:`A^l` classifies the spatially
   averaged features: :math:`p^l = A^l(z^l)`, shape (N, K);
2. **relevance** (Eq. 1) -- for the chosen classes :math:`y^{l,k}` (the probe's
   top-k, with the true label substituted at training time) it computes
   :math:`g^l_c = \partial \sum_{i \in y^{l,k}} p^l_i / \partial \delta_c`, the
   derivative with respect to a shift :math:`\delta_c` added to every position of
   channel c (equivalently: the gradient w.r.t. :math:`z^l`, summed over positions);
3. **mask** -- an importance-mask generating function (IMGF) maps :math:`g^l`
   (N, C) to non-negative scores :math:`m^l` (N, C), and the layer returns
   :math:`\bar z^l = z^l \otimes m^l` broadcast over positions (Eq. 2).

Because the probe sees only the pooled features, the relevance has a closed form:
for a linear probe ``W pool(z) + b`` it is the sum of the chosen rows of ``W`` (it
does not depend on the features at all, only on which classes are chosen); for the
MLP probe ``V softplus_beta(U pool(z) + b) + c`` it is
``g = ((sum of chosen rows of V) * sigmoid(beta * u)) @ U`` with ``u = U pool(z) + b``.
The closed form is the default; an autograd implementation (``relevance="autograd"``)
differentiates the probe exactly as Eq. 1 is written, and the two agree to float
rounding (tested to 1e-5).

Options
-------
Every option of :class:`CIFSConfig` (and of ``cifs_edu.models.build_model``); for each,
our default, the paper's choice and what the authors' released code (GitHub
``HanshuYAN/CIFS``) does. Where the two differ we default to the paper.

``k`` (int, 1 <= k < K; default 2)
    Number of probe classes whose logits are summed in Eq. 1. Paper: top-2 (Sec. 4.2,
    with top-1 and top-3 as ablations). Authors' code: 2, hard-coded.
``label_rule`` (``"paper"`` | ``"distinct"``; default ``"paper"``)
    How the true label enters the chosen classes at training time (details below).
    Paper (Sec. 3.2): the top-1 prediction is replaced by the true label and the other
    predictions are kept; the authors' code does exactly this (``"authors"`` is accepted
    as another name for ``"paper"``). ``"distinct"`` is our variant (never y twice).
``imgf`` (``"softmax"`` | ``"sigmoid"`` | ``"softplus"`` | ``"relu"``; default ``"softmax"``)
    Importance-mask generating function. Paper: softmax with T = 1 performs best
    (Sec. 3.3); sigmoid and softplus are studied too. Authors' code: softmax in the final
    release; sigmoid, softplus and relu appear in their ablation artefacts (relu is not
    in the paper).
``alpha`` (float > 0; default None = 10 for sigmoid, 5 for softplus)
    Slope of sigmoid / softplus. Paper: sigmoid alpha = 10, softplus alpha = 5 (Sec. 3.3).
    Authors' ablations: sigmoid alpha in {0.1, 1, 5, 10, 15}, softplus in {5, 10, 20}.
``T`` (float > 0; default 1.0)
    Softmax temperature. Paper: 1. Authors' code: 1 (final); 0.5 to 24 in ablations.
``scale`` (number > 0 or ``"k"``; default 1)
    Multiplier of the mask. Paper: 1 (a plain softmax, summing to 1). Authors' code: 1 in
    the final release, 2 (= k, ``scale="k"``) in their first release.
``relevance`` (``"closed"`` | ``"autograd"``; default ``"closed"``)
    How Eq. 1 is computed; mathematically identical, equal to float rounding. The
    authors' code uses autograd; ``relevance="autograd"`` also follows their order of
    floating-point operations (their masks and probe logits reproduced exactly in our
    ResNet-18 and WRN-28-10 comparisons).
``grad_mode`` (``"detached"`` | ``"full"``; default ``"detached"``)
    Gradient path of the mask (details below). The paper does not discuss it; the
    authors' code is ``"detached"``.
``probes`` (per position ``"linear"`` | ``"mlp"``; default P1 linear, P2 MLP)
    Paper (App. E.3) and authors' code: P1 linear, P2 two-layer MLP.
``hidden`` (int; default 128 for ResNet-18, 240 for WRN-28-10)
    Width of the MLP probe. Not stated in the paper; these are the authors' values
    (narrow networks scale it: 2 x width for ResNets, 24 x widen factor for WRN).
``softplus_beta`` (float > 0; default 5)
    beta of the Softplus inside the MLP probe. Not stated in the paper; the authors use 5.

Label rules, precisely (``y`` is used only in train mode and only when given; in eval
mode, or with ``y=None``, the classes are the probe's top-k):

- ``"paper"`` (default; the paper's sentence and the authors' code): classes = probe
  top-k with slot 0 overwritten by y. If y is the runner-up, the classes are ``[y, y]``
  for k = 2 and the relevance is twice y's.
- ``"distinct"`` (ours, not in the paper): classes = ``[y, best class != y, ...,
  (k-1)-th best class != y]``. If y is the runner-up, the second slot becomes the best
  class, so k distinct classes always enter Eq. 1.

Gradient modes of the mask:

- ``"detached"`` (the authors'): relevance computed on ``z.detach()``, so the mask is a
  constant with respect to the features and the input (gradients reach the input only
  through the ``z`` factor of ``z * m``), but it stays differentiable with respect to
  the probe's parameters, so the final-logit loss also trains the probe through the mask.
- ``"full"``: the relevance is differentiable with respect to ``z`` too (for the MLP
  probe the mask then depends on the input); this is what a fully adaptive attack needs.

The probe's raw prediction :math:`p^l`, used by the adaptive loss (Eq. 3), is always
computed on the unmasked, undetached features, in both modes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, NamedTuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from .errors import ConfigError

__all__ = [
    "IMGFS",
    "LABEL_RULES",
    "LABEL_RULE_ALIASES",
    "canonical_label_rule",
    "RELEVANCE_IMPLS",
    "GRAD_MODES",
    "PROBE_KINDS",
    "pool",
    "LinearProbe",
    "MLPProbe",
    "make_probe",
    "select_classes",
    "relevance_closed",
    "relevance_autograd",
    "importance_mask",
    "CIFSConfig",
    "SelectorOutput",
    "CIFSLayer",
]

IMGFS = ("softmax", "sigmoid", "softplus", "relu")
LABEL_RULES = ("paper", "distinct")
#: Other accepted spellings of a label rule (the authors' code implements the paper's rule).
LABEL_RULE_ALIASES = {"authors": "paper"}


def canonical_label_rule(rule: Any) -> Any:
    """The name a label rule is stored under (``"authors"`` -> ``"paper"``); anything else unchanged."""
    return LABEL_RULE_ALIASES.get(rule, rule) if isinstance(rule, str) else rule
RELEVANCE_IMPLS = ("closed", "autograd")
GRAD_MODES = ("detached", "full")
PROBE_KINDS = ("linear", "mlp")

#: default alpha of the IMGFs that have one (Sec. 3.3)
DEFAULT_ALPHA = {"sigmoid": 10.0, "softplus": 5.0}

Scale = Union[float, int, str]


def pool(z: Tensor) -> Tensor:
    """Global average pooling: (N, C, H, W) -> (N, C)."""
    return z.mean(dim=(2, 3))


# ----------------------------------------------------------------------------- probes


class LinearProbe(nn.Module):
    """Linear probe: ``pool(z) -> Linear(C, K)`` (the P1 probe of the paper).

    Parameters: ``fc.weight`` (K, C), ``fc.bias`` (K,).
    """

    kind = "linear"

    def __init__(self, channels: int, num_classes: int) -> None:
        super().__init__()
        self.fc = nn.Linear(channels, num_classes)

    def head(self, pooled: Tensor) -> Tensor:
        """Logits (N, K) from pooled features (N, C)."""
        return self.fc(pooled)

    def forward(self, z: Tensor) -> Tensor:
        """Logits (N, K) from a feature map (N, C, H, W)."""
        return self.head(pool(z))

    def relevance(self, pooled: Tensor, classes: Tensor) -> Tensor:
        """Closed-form Eq. 1: ``g[n] = sum_s W[classes[n, s]]``, shape (N, C).

        Independent of the features; ``pooled`` only supplies the batch size.
        """
        return self.fc.weight[classes].sum(dim=1)


class MLPProbe(nn.Module):
    """MLP probe: ``pool(z) -> Linear(C, h) -> Softplus(beta) -> Linear(h, K)`` (the P2 probe).

    Parameters: ``fc1`` (h x C), ``fc2`` (K x h). ``softplus_beta`` is 5 in the
    authors' code; torch's Softplus (threshold 20) is used, and the closed-form
    relevance uses its exact derivative.
    """

    kind = "mlp"

    def __init__(self, channels: int, num_classes: int, hidden: int = 128, softplus_beta: float = 5.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(channels, hidden)
        self.act = nn.Softplus(beta=softplus_beta)
        self.fc2 = nn.Linear(hidden, num_classes)

    def head(self, pooled: Tensor) -> Tensor:
        """Logits (N, K) from pooled features (N, C)."""
        return self.fc2(self.act(self.fc1(pooled)))

    def forward(self, z: Tensor) -> Tensor:
        """Logits (N, K) from a feature map (N, C, H, W)."""
        return self.head(pool(z))

    def _act_derivative(self, u: Tensor) -> Tensor:
        """softplus_beta'(u) = sigmoid(beta u), written as torch's Softplus backward computes it
        (e / (e + 1), e = exp(beta u); exactly 1 above the threshold) so that the closed form
        and autograd round alike."""
        beta, threshold = self.act.beta, self.act.threshold
        bu = beta * u
        e = torch.exp(bu.clamp(max=threshold))
        return torch.where(bu > threshold, torch.ones_like(u), e / (e + 1))

    def relevance(self, pooled: Tensor, classes: Tensor) -> Tensor:
        """Closed-form Eq. 1 by the chain rule, shape (N, C).

        ``g[n] = ((sum_s V[classes[n, s]]) * softplus'(u[n])) @ U`` with
        ``u = U pooled + b`` and ``softplus'(u) = sigmoid(beta u)``.
        """
        u = self.fc1(pooled)
        v = self.fc2.weight[classes].sum(dim=1)  # (N, h)
        return (v * self._act_derivative(u)) @ self.fc1.weight


def make_probe(kind: str, channels: int, num_classes: int, hidden: int = 128, softplus_beta: float = 5.0) -> nn.Module:
    """A :class:`LinearProbe` (``kind="linear"``) or an :class:`MLPProbe` (``"mlp"``)."""
    if kind == "linear":
        return LinearProbe(channels, num_classes)
    if kind == "mlp":
        return MLPProbe(channels, num_classes, hidden, softplus_beta)
    raise ConfigError(f"probe must be one of {PROBE_KINDS} (got {kind!r})")


# ----------------------------------------------------------------------------- Eq. 1


def select_classes(logits: Tensor, k: int, y: Tensor | None = None, rule: str = "paper") -> Tensor:
    """The classes :math:`y^{l,k}` whose logits are summed in Eq. 1, shape (N, k), int64.

    Args:
        logits: probe logits (N, K) (only their order matters; not differentiated).
        k: number of classes, 1 <= k < K.
        y: true labels (N,) or None. None -> the probe's top-k (eval-mode rule).
        rule: ``"paper"`` (or its alias ``"authors"``) -> top-k with slot 0 overwritten
            by y (slots 1.. unchanged, so y may appear twice); ``"distinct"`` ->
            ``[y, top (k-1) classes other than y]``. See the module docstring.
    """
    rule = canonical_label_rule(rule)
    if rule not in LABEL_RULES:
        raise ConfigError(f"label_rule must be one of {LABEL_RULES} (got {rule!r})")
    logits = logits.detach()
    if y is None:
        return logits.topk(k, dim=1).indices
    y = y.to(device=logits.device, dtype=torch.long).view(-1, 1)
    if rule == "paper":
        top = logits.topk(k, dim=1).indices.clone()
        top[:, :1] = y
        return top
    if k == 1:
        return y
    others = logits.scatter(1, y, float("-inf")).topk(k - 1, dim=1).indices
    return torch.cat([y, others], dim=1)


def relevance_closed(probe: nn.Module, pooled: Tensor, classes: Tensor) -> Tensor:
    """Closed-form Eq. 1 for a linear or MLP probe: (N, C) from pooled (N, C) and classes (N, k).

    Differentiable with respect to the probe's parameters, and with respect to the
    features exactly when ``pooled`` is (pass ``pooled.detach()`` for the authors' mask).
    Needs no autograd, so it runs under ``no_grad`` and ``inference_mode``.
    """
    return probe.relevance(pooled, classes)


def relevance_autograd(probe: nn.Module, z: Tensor, classes: Tensor, detach: bool = True) -> Tensor:
    """Eq. 1 by automatic differentiation, shape (N, C).

    Adds a zero channel-wise shift ``delta`` (N, C, 1, 1) to ``z`` (``z.detach()`` when
    ``detach``), sums the chosen probe logits and returns ``d sum / d delta``. The graph
    is kept (``create_graph``) when the caller has gradients enabled, so the result is
    differentiable w.r.t. the probe's parameters (and w.r.t. ``z`` unless ``detach``).
    Works under ``no_grad`` and ``inference_mode`` (gradients are switched on locally).
    """
    keep_graph = torch.is_grad_enabled()
    n, c = z.shape[:2]
    with torch.inference_mode(False), torch.enable_grad():
        base = z.detach() if detach else z
        if base.is_inference():  # created under inference_mode: copy into normal tensors
            base = base.clone()
        if classes.is_inference():
            classes = classes.clone()
        delta = torch.zeros(n, c, 1, 1, dtype=z.dtype, device=z.device, requires_grad=True)
        logits = probe(base + delta)
        score = logits.gather(1, classes).sum()
        (g,) = torch.autograd.grad(score, delta, create_graph=keep_graph)
    return g.view(n, c)


# ----------------------------------------------------------------------------- IMGFs


def importance_mask(
    g: Tensor, imgf: str = "softmax", alpha: float | None = None, T: float = 1.0, scale: float = 1.0
) -> Tensor:
    r"""Importance-mask generating functions (Sec. 3.2, step 3): (N, C) -> (N, C), all >= 0.

    - ``"softmax"``: ``softmax(g / T)`` over channels (sums to 1 per example);
    - ``"sigmoid"``: ``sigmoid(alpha g)`` (alpha = 10: a switch, negative relevance -> ~0);
    - ``"softplus"``: ``log(1 + exp(alpha g)) / alpha``;
    - ``"relu"``: ``max(g, 0)`` (an ablation of the authors' code, not in the paper).

    The result is multiplied by ``scale`` (1 in the paper; the authors' first release
    used 2 = k with softmax).
    """
    if imgf == "softmax":
        m = torch.softmax(g / T, dim=1)
    elif imgf == "sigmoid":
        m = torch.sigmoid(alpha * g)
    elif imgf == "softplus":
        m = F.softplus(g, beta=alpha)
    elif imgf == "relu":
        m = torch.relu(g)
    else:
        raise ConfigError(f"imgf must be one of {IMGFS} (got {imgf!r})")
    return m if scale == 1 else m * scale


# ----------------------------------------------------------------------------- the layer


@dataclass(frozen=True)
class CIFSConfig:
    """Validated options of a CIFS layer (see the module docstring's Options table).

    ``alpha=None`` means the IMGF's default (sigmoid 10, softplus 5); ``scale`` is a
    positive number or ``"k"`` (multiply the mask by k).
    """

    k: int = 2
    label_rule: str = "paper"
    imgf: str = "softmax"
    alpha: float | None = None
    T: float = 1.0
    scale: Scale = 1
    relevance: str = "closed"
    grad_mode: str = "detached"
    softplus_beta: float = 5.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "label_rule", canonical_label_rule(self.label_rule))

    def problems(self, num_classes: int | None = None) -> list[str]:
        """Every invalid value, as readable sentences (empty when valid)."""
        out = []
        if not isinstance(self.k, int) or isinstance(self.k, bool) or self.k < 1:
            out.append(f"k must be an integer >= 1 (got {self.k!r})")
        elif num_classes is not None and self.k >= num_classes:
            out.append(f"k must be smaller than the number of classes {num_classes} (got k={self.k})")
        if self.label_rule not in LABEL_RULES:
            out.append(f"label_rule must be one of {LABEL_RULES} (got {self.label_rule!r})")
        if self.imgf not in IMGFS:
            out.append(f"imgf must be one of {IMGFS} (got {self.imgf!r})")
        if self.alpha is not None:
            if not _positive(self.alpha):
                out.append(f"alpha must be > 0 (got {self.alpha!r})")
            elif self.imgf not in DEFAULT_ALPHA:
                out.append(f"alpha applies only to imgf 'sigmoid' or 'softplus' (imgf={self.imgf!r})")
        if not _positive(self.T):
            out.append(f"T must be > 0 (got {self.T!r})")
        elif self.T != 1.0 and self.imgf != "softmax":
            out.append(f"T applies only to imgf='softmax' (imgf={self.imgf!r})")
        if not (self.scale == "k" or (not isinstance(self.scale, str) and _positive(self.scale))):
            out.append(f"scale must be a number > 0 or 'k' (got {self.scale!r})")
        if self.relevance not in RELEVANCE_IMPLS:
            out.append(f"relevance must be one of {RELEVANCE_IMPLS} (got {self.relevance!r})")
        if self.grad_mode not in GRAD_MODES:
            out.append(f"grad_mode must be one of {GRAD_MODES} (got {self.grad_mode!r})")
        if not _positive(self.softplus_beta):
            out.append(f"softplus_beta must be > 0 (got {self.softplus_beta!r})")
        return out

    def validate(self, num_classes: int | None = None) -> "CIFSConfig":
        """Raise one :class:`ConfigError` listing every problem; return self when valid."""
        problems = self.problems(num_classes)
        if problems:
            raise ConfigError("invalid CIFS options: " + "; ".join(problems))
        return self

    @property
    def effective_alpha(self) -> float | None:
        """alpha, or the IMGF's default (None for softmax/relu)."""
        if self.alpha is not None:
            return float(self.alpha)
        return DEFAULT_ALPHA.get(self.imgf)

    @property
    def effective_scale(self) -> float:
        """The mask's multiplier: ``k`` for ``scale="k"``, else the number."""
        return float(self.k) if self.scale == "k" else float(self.scale)

    @classmethod
    def authors(cls, **changes) -> "CIFSConfig":
        """The authors' released options (the paper's label rule, softmax, T = 1, k = 2): the defaults."""
        return cls(**changes)


def _positive(v) -> bool:
    try:
        return not isinstance(v, bool) and math.isfinite(float(v)) and float(v) > 0
    except (TypeError, ValueError):
        return False


class SelectorOutput(NamedTuple):
    """What a CIFS (or CAS) layer produced for one batch.

    masked: z * m, (N, C, H, W); probe_logits: (N, K); mask: (N, C);
    classes: (N, k) class indices used for the mask.
    """

    masked: Tensor
    probe_logits: Tensor
    mask: Tensor
    classes: Tensor


class CIFSLayer(nn.Module):
    """One CIFS layer: probe, relevance (Eq. 1), IMGF and channel selection (Eq. 2).

    Args:
        channels: C of the feature map it modifies.
        num_classes: K.
        probe: ``"linear"`` or ``"mlp"``.
        hidden: width h of the MLP probe.
        config: :class:`CIFSConfig` (validated here).

    See the module docstring's Options section for every option (paper vs authors' code).

    ``forward(z, y=None)`` returns a :class:`SelectorOutput`. ``y`` replaces the top-1
    class (per ``config.label_rule``) only in train mode; in eval mode the classes are
    always the probe's top-k. The attribute ``grad_mode`` may be changed at any time
    (see :func:`cifs_edu.models.mask_grad`).
    """

    def __init__(
        self,
        channels: int,
        num_classes: int,
        probe: str = "linear",
        hidden: int = 128,
        config: CIFSConfig | None = None,
    ) -> None:
        super().__init__()
        config = (config or CIFSConfig()).validate(num_classes)
        self.config = config
        self.channels = channels
        self.num_classes = num_classes
        self.probe = make_probe(probe, channels, num_classes, hidden, config.softplus_beta)
        self.grad_mode = config.grad_mode

    @property
    def k(self) -> int:
        return self.config.k

    def relevance(self, z: Tensor, pooled: Tensor, classes: Tensor) -> Tensor:
        """Eq. 1 with the configured implementation and gradient mode, shape (N, C)."""
        if self.grad_mode not in GRAD_MODES:
            raise ConfigError(f"grad_mode must be one of {GRAD_MODES} (got {self.grad_mode!r})")
        detach = self.grad_mode == "detached"
        if self.config.relevance == "autograd":
            return relevance_autograd(self.probe, z, classes, detach=detach)
        return relevance_closed(self.probe, pooled.detach() if detach else pooled, classes)

    def forward(self, z: Tensor, y: Tensor | None = None) -> SelectorOutput:
        pooled = pool(z)
        logits = self.probe.head(pooled)
        labels = y if (self.training and y is not None) else None
        classes = select_classes(logits, self.config.k, labels, self.config.label_rule)
        g = self.relevance(z, pooled, classes)
        c = self.config
        mask = importance_mask(g, c.imgf, c.effective_alpha, c.T, c.effective_scale)
        return SelectorOutput(z * mask[:, :, None, None], logits, mask, classes)

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"channels={self.channels}, k={c.k}, label_rule={c.label_rule!r}, imgf={c.imgf!r}, "
            f"alpha={c.effective_alpha}, T={c.T}, scale={c.scale!r}, relevance={c.relevance!r}, "
            f"grad_mode={self.grad_mode!r}"
        )
