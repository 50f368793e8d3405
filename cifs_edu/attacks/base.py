r"""The common machinery of every attack: the :class:`Attack` base class.

An attack maps clean inputs ``x`` (shape (N, C, H, W), values in [0, 1]) and labels
``y`` (shape (N,)) to adversarial inputs ``x_adv`` with

- ``0 <= x_adv <= 1`` and ``||x_adv - x||_inf <= eps`` (up to float rounding, 1e-6);
- the same dtype and device as ``x``; detached from any graph.

What the attacker maximises (``loss=``):

- the *standard* loss: the criterion (cross-entropy, or the C&W margin for :class:`~cifs_edu.attacks.CW`)
  on the final logits ``model(x)`` only. This is how the vanilla baseline is attacked,
  and exactly what torchattacks does.
- ``"adaptive"``: the joint loss of Eq. 3 over the final logits and the CIFS/CAS probe
  logits, :func:`cifs_edu.losses.adaptive_loss` with the attacker's ``beta_atk`` (any
  number >= 0, ``"inf"`` or ``"inf-P1"`` / ``"inf-P2"``), from ``model.forward_with_aux(x)``.
  On a model without probes a finite ``beta_atk`` gives the standard loss; an
  infinite one is an error (there is nothing to attack).

The per-example losses are *summed* before differentiating, so the batch size does not
scale the gradient (sign-gradient attacks would not see it anyway, but a sum never
underflows to exact zeros the way a mean over a large batch can).

During an attack the model is put in eval mode (BatchNorm running statistics; CIFS masks
from predictions), as in the paper's evaluation; the previous ``training`` flag of every
submodule is restored afterwards. Gradients are taken with :func:`torch.autograd.grad`
with respect to the input only, so parameter ``.grad`` fields are never touched.

Speed (eval-mode attacks only, on by default): the gradients are computed on a private copy
of the model with its BatchNorms folded into the preceding convolutions, channels_last
weights and frozen parameters (:mod:`cifs_edu.engine.fast`); about 2x faster on the CPU.
The copy computes the same function up to float rounding, so a sign step can differ on a
pixel whose gradient is within rounding of zero; ``fold_bn=False, channels_last=False``
runs the caller's model itself (bit-for-bit the plain computation).
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable, Iterator

import torch
from torch import Tensor, nn

from ..losses import Beta, adaptive_loss, cross_entropy, loss_weights, parse_beta
from ..outputs import ModelOutput
from ..errors import ConfigError
from ..engine.fast import FastCopy, fast_copy

__all__ = ["Attack", "format_eps", "model_name", "model_device", "model_dtype", "check_inputs", "check_images",
           "eval_mode"]

_MASK_GRAD_MODES = ("detached", "full")


def format_eps(value: float) -> str:
    """``8/255``-style text for an l_inf budget or step size (``0.8/255`` for eps/10)."""
    k = value * 255.0
    text = f"{k:.4g}"
    return f"{text}/255"


def _format_beta(beta: float | str) -> str:
    return f"{beta:g}" if isinstance(beta, float) else repr(beta)


def model_name(model: nn.Module) -> str:
    """A short name such as ``ResNet18[cifs]`` (class name, plus ``model.defense`` when present)."""
    defense = getattr(model, "defense", None)
    name = type(model).__name__
    return f"{name}[{defense}]" if defense is not None else name


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); CPU for a model with neither."""
    for t in model.parameters():
        return t.device
    for t in model.buffers():
        return t.device
    return torch.device("cpu")


@contextlib.contextmanager
def eval_mode(model: nn.Module, enabled: bool = True) -> Iterator[None]:
    """Put ``model`` in eval mode; restore every submodule's ``training`` flag on exit."""
    flags = [(m, m.training) for m in model.modules()] if enabled else []
    if enabled:
        model.eval()
    try:
        yield
    finally:
        for m, training in flags:
            m.training = training


def model_dtype(model: nn.Module) -> torch.dtype:
    """The floating dtype of the model's first floating parameter (float32 for a model with none)."""
    for t in model.parameters():
        if t.is_floating_point():
            return t.dtype
    return torch.float32


def check_inputs(x: Tensor, y: Tensor) -> None:
    """Refuse what an attack cannot answer correctly: images outside [0, 1], non-float images,
    labels that are not integers of the batch's length, and a call under ``inference_mode``.

    Raises:
        ValueError: with the values found and the fix; RuntimeError: inside ``torch.inference_mode()``.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError("attacks need gradients with respect to the input: call them outside "
                           "torch.inference_mode() (torch.no_grad() is fine, the attack turns gradients on itself)")
    check_images(x)
    if not torch.is_tensor(y) or y.dim() != 1 or y.shape[0] != x.shape[0] or y.is_floating_point() or y.dtype == torch.bool:
        got = f"{y.dtype}, shape {tuple(y.shape)}" if torch.is_tensor(y) else type(y).__name__
        raise ValueError(f"y must be a 1-D integer label tensor of length {x.shape[0]} (got {got})")


def check_images(x: Tensor) -> None:
    """Raise ValueError unless ``x`` is a non-empty float image batch with values in [0, 1]."""
    if not torch.is_tensor(x) or not x.is_floating_point():
        raise ValueError(f"x must be a floating-point image tensor with values in [0, 1] (got "
                         f"{x.dtype if torch.is_tensor(x) else type(x).__name__}); uint8 images: x.float() / 255")
    if x.dim() == 0 or x.shape[0] == 0:
        raise ValueError(f"x must hold at least one image, shape (N, C, H, W) (got shape {tuple(x.shape)})")
    lo, hi = float(x.min()), float(x.max())
    if not (lo >= -1e-5 and hi <= 1 + 1e-5):  # also catches NaN
        raise ValueError(
            f"x must lie in [0, 1] (got values from {lo:.4g} to {hi:.4g}). cifs_edu models take images in "
            "[0, 1] and normalise inside; pass un-normalised images (0-255 pixels: divide by 255)")


def _known_positions(model: nn.Module) -> tuple[str, ...] | None:
    """The model's CIFS/CAS positions if they can be known without a forward pass.

    ``()`` for a model with no ``forward_with_aux`` (it has no probes), ``model.positions``
    when the model declares it, ``None`` when only a forward pass could tell.
    """
    if not hasattr(model, "forward_with_aux"):
        return ()
    positions = getattr(model, "positions", None)
    return tuple(positions) if positions is not None else None


class Attack:
    """Base class of the l_inf attacks. Subclasses implement :meth:`_perturb`.

    Args:
        model: the classifier; ``model(x)`` returns logits (N, K) for ``x`` in [0, 1].
        eps: l_inf budget in input units (the paper: ``8/255``).
        loss: the standard loss (``"ce"``; ``"margin"`` for C&W) on the final logits, or
            ``"adaptive"`` (Eq. 3 on final and probe logits).
        beta_atk: the attacker's beta in Eq. 3 (used only when ``loss="adaptive"``);
            a number >= 0, ``"inf"``, ``"inf-P1"`` or ``"inf-P2"``. The paper trains with 2.
        scale: ``"paper"`` (Eq. 3) or ``"authors"`` (their training script's rescaling; a positive
            factor that sign-gradient attacks ignore). Only used when ``loss="adaptive"``.
        eval_mode: put the model in eval mode during the attack (default, as the paper).
        amp: run the forward pass under CUDA autocast (bfloat16); the loss is still computed
            in float32. Only on CUDA models. Default off (exact float32).
        mask_grad: ``None`` (leave the model as it is), ``"detached"`` (the authors' CIFS: the mask is
            a constant of the input) or ``"full"`` (gradients also flow through the relevance and
            the mask); set with ``model.set_mask_grad`` for the attack's duration.
        fold_bn: compute gradients on a private copy with eval-mode BatchNorms folded into their
            convolutions (``None``, the default: when ``eval_mode``; ``True`` needs ``eval_mode``).
        channels_last: that copy (and the inputs) in channels_last memory format (same default).
            With both off the attack runs the caller's model itself. See :mod:`cifs_edu.engine.fast`.
    """

    #: the standard (non-adaptive) loss name of this attack
    standard_loss: str = "ce"

    def __init__(
        self,
        model: nn.Module,
        eps: float,
        *,
        loss: str = "ce",
        beta_atk: Beta = 2.0,
        scale: str = "paper",
        eval_mode: bool = True,
        amp: bool = False,
        mask_grad: str | None = None,
        fold_bn: bool | None = None,
        channels_last: bool | None = None,
    ) -> None:
        if not isinstance(model, nn.Module):
            raise ConfigError(f"model must be a torch.nn.Module (got {type(model).__name__})")
        try:
            eps = float(eps)
        except (TypeError, ValueError):
            raise ConfigError(f"eps must be a number (got {eps!r})") from None
        if not (0.0 <= eps <= 1.0) or math.isnan(eps):
            raise ConfigError(f"eps must be in [0, 1] for inputs in [0, 1] (got {eps}); 8/255 is the paper's")
        if loss not in (self.standard_loss, "adaptive"):
            raise ConfigError(
                f"{type(self).__name__}: loss must be {self.standard_loss!r} or 'adaptive' (got {loss!r})"
            )
        try:
            beta = parse_beta(beta_atk)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if scale not in ("paper", "authors"):
            raise ConfigError(f"scale must be 'paper' or 'authors' (got {scale!r})")
        if loss == "adaptive":
            positions = _known_positions(model)
            try:
                # validates beta against the model's layers (raises for 'inf*' without probes)
                loss_weights(beta, positions if positions is not None else ("P1",), scale)
            except ValueError as e:
                raise ConfigError(f"{type(self).__name__}(loss='adaptive'): {e}") from None
        if not isinstance(eval_mode, bool):
            raise ConfigError(f"eval_mode must be True or False (got {eval_mode!r})")
        if not isinstance(amp, bool):
            raise ConfigError(f"amp must be True or False (got {amp!r})")
        if amp and model_device(model).type != "cuda":
            raise ConfigError("amp=True (bfloat16 autocast) is for CUDA models; on the CPU attacks run in float32")
        if mask_grad is not None:
            if mask_grad not in _MASK_GRAD_MODES:
                raise ConfigError(f"mask_grad must be None, 'detached' or 'full' (got {mask_grad!r})")
            if not hasattr(model, "set_mask_grad"):
                raise ConfigError(f"mask_grad={mask_grad!r} needs a model with set_mask_grad (a CIFS model)")
        for name, flag in (("fold_bn", fold_bn), ("channels_last", channels_last)):
            if flag is not None and not isinstance(flag, bool):
                raise ConfigError(f"{name} must be None, True or False (got {flag!r})")
            if flag and not eval_mode:
                raise ConfigError(f"{name}=True needs eval_mode=True (BatchNorm uses batch statistics in train mode)")
        self.model = model
        self.fold_bn = eval_mode if fold_bn is None else fold_bn
        self.channels_last = eval_mode if channels_last is None else channels_last
        #: the private fast copy while an attack runs (None otherwise)
        self._fast: FastCopy | None = None
        self.eps = eps
        self.loss = loss
        self.beta_atk = beta
        self.scale = scale
        self.eval_mode = eval_mode
        self.amp = amp
        self.mask_grad = mask_grad
        self.criterion: Callable[[Tensor, Tensor], Tensor] = cross_entropy

    # ------------------------------------------------------------------ public API
    def __call__(self, x: Tensor, y: Tensor) -> Tensor:
        """Adversarial examples for ``(x, y)``: detached, same dtype/device as ``x``, in [0, 1] and the eps-ball.

        ``x``: float images (N, C, H, W) in [0, 1] (any float dtype: the attack runs in the model's
        dtype and returns ``x``'s); ``y``: integer labels (N,).

        Raises:
            ValueError: ``x`` outside [0, 1] (e.g. 0-255 pixels or normalised inputs), mismatched
                shapes, non-integer labels; RuntimeError: called under ``torch.inference_mode()``.
        """
        check_inputs(x, y)
        if x.is_inference():  # made under inference_mode: a plain copy can be differentiated
            x = x.clone()
        device = model_device(self.model)
        xd = x.detach().to(device=device, dtype=model_dtype(self.model))
        yd = y.detach().to(device)
        with self._attack_context():
            if self._fast is not None:
                xd = self._fast.prepare(xd)
            x_adv = self._perturb(xd, yd)
        x_adv = x_adv.detach().to(device=x.device, dtype=x.dtype)
        if x_adv.dim() == 4 and x.is_contiguous() and not x_adv.is_contiguous():
            x_adv = x_adv.contiguous()  # back to the caller's memory format
        return x_adv

    def per_example_loss(self, x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
        """The attacker's objective for each example and the final logits.

        Returns:
            ``(loss, logits)``: loss shape (N,) in float32 (to be maximised), logits (N, K).
        """
        net = self.network
        with self._autocast():
            if self.loss == "adaptive" and hasattr(net, "forward_with_aux"):
                out = net.forward_with_aux(x)
            else:
                out = ModelOutput(logits=net(x))
            if self.loss == "adaptive":
                loss = adaptive_loss(
                    out, y, self.beta_atk, scale=self.scale, reduction="none", criterion=self.criterion
                )
            else:
                loss = self.criterion(out.logits, y)
        return loss.float(), out.logits

    def input_gradient(self, x: Tensor, y: Tensor) -> Tensor:
        """Gradient of the summed per-example loss with respect to ``x`` (shape of ``x``).

        Computed as the attack sees it (eval mode and ``mask_grad`` as configured).
        """
        check_inputs(x, y)
        x = (x.clone() if x.is_inference() else x).detach().to(dtype=model_dtype(self.model)).requires_grad_(True)
        with self._attack_context():
            loss, _ = self.per_example_loss(x, y)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        return grad

    @property
    def network(self) -> nn.Module:
        """The module the attack differentiates: the fast copy during an attack, else ``model``."""
        return self._fast.model if self._fast is not None else self.model

    # ------------------------------------------------------------------ subclass hooks
    def _perturb(self, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def _repr_fields(self) -> list[tuple[str, str]]:
        """(name, text) pairs shown by ``repr`` before the loss settings."""
        return [("eps", format_eps(self.eps))]

    # ------------------------------------------------------------------ helpers
    def __repr__(self) -> str:
        fields = self._repr_fields()
        fields.append(("loss", repr(self.loss)))
        if self.loss == "adaptive":
            fields.append(("beta_atk", _format_beta(self.beta_atk)))
            fields.append(("scale", repr(self.scale)))
        fields.append(("eval_mode", str(self.eval_mode)))
        fields.append(("amp", str(self.amp)))
        if self.mask_grad is not None:
            fields.append(("mask_grad", repr(self.mask_grad)))
        if self.eval_mode and not (self.fold_bn and self.channels_last):
            fields.append(("fold_bn", str(self.fold_bn)))
            fields.append(("channels_last", str(self.channels_last)))
        fields.append(("model", model_name(self.model)))
        return f"{type(self).__name__}(" + ", ".join(f"{k}={v}" for k, v in fields) + ")"

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.amp:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    @contextlib.contextmanager
    def _attack_context(self) -> Iterator[None]:
        """Eval mode and the mask-gradient mode for the attack; everything restored afterwards."""
        with eval_mode(self.model, self.eval_mode):
            previous_mask = self.model.set_mask_grad(self.mask_grad) if self.mask_grad is not None else None
            outer = self._fast is not None  # nested call (e.g. input_gradient inside an attack)
            try:
                if not outer and (self.fold_bn or self.channels_last):
                    self._fast = fast_copy(self.model, fold_bn=self.fold_bn, channels_last=self.channels_last)
                with torch.enable_grad():
                    yield
            finally:
                if not outer:
                    self._fast = None
                if self.mask_grad is not None:
                    self.model.set_mask_grad(previous_mask)
