r"""The training attack captured in a CUDA graph: :class:`GraphedPGD`.

At the paper's batch size (128) a PGD-10 adversarial-training step of a CIFAR ResNet-18 on a
modern GPU is bound by kernel-launch latency: the ten forward/backward passes of the attack
launch thousands of small kernels. :class:`GraphedPGD` records the engine's training attack
(:func:`cifs_edu.training.methods.pgd_examples`: PGD-k in eval mode, the config's eps, step
and random start, Eq. 3 adaptive loss for CIFS/CAS through ``attack_loss``, autocast) once
into a ``torch.cuda.CUDAGraph`` for a fixed batch shape, and then replays it: one launch per
attack instead of thousands.

How it stays equal to the eager attack:

- **Same code.** The captured function *is* ``pgd_examples``, run on static input tensors
  (``x``, ``y`` and the random-start noise); a replay copies the new batch into them and
  returns a clone of the static output.
- **Same noise.** The random start is drawn eagerly from the engine's own generator
  (``draw("uniform")``, see ``_Noise`` in :mod:`cifs_edu.training.loop`) exactly once per
  call, as the eager attack does, and copied into the static noise tensor. Graphed and
  eager attacks therefore see identical inputs and the engine's random stream is unchanged.
- **Current weights.** The graph reads the model's parameters and BatchNorm buffers at
  their addresses; the optimizer and the train-mode forward update them *in place*, so each
  replay uses the current weights (verified on the GPU by ``benchmarks/gpu.py --graphs``:
  a replay after an SGD step equals the eager attack on the updated model). Anything that
  *replaces* those tensors (``model.to(...)``, ``load_state_dict(..., assign=True)``) or
  changes Python-level state read during the capture (``model.set_mask_grad``, the config)
  needs :meth:`GraphedPGD.reset`, which re-captures on the next call.
- **Eval mode.** The captured kernels are the eval-mode ones (``pgd_examples`` switches the
  model to eval mode during the capture); a replay neither reads nor changes ``model.training``.

Results equal the eager path up to the float rounding of kernel choice (cuDNN may pick
another algorithm for the captured run than for an eager one; with the same algorithm the
result is bitwise equal).

Batches of another shape, stride, dtype or device than the captured one (in the engine: the
last, smaller batch of an epoch) run the eager ``pgd_examples``; the first such call is
logged at DEBUG level on the ``cifs_edu.engine.graphs`` logger and :attr:`GraphedPGD.eager_calls`
counts them. Only one shape is captured (a second graph for the last batch would save one
eager attack per epoch and cost a second memory pool).

Host synchronisation: the model forwards of this package (vanilla, CIFS and CAS ResNets and
WRNs, eval mode) have none: CIFS selects its classes with ``topk`` and gathers probe rows
with integer-tensor indexing, CAS with ``argmax``; no ``.item()``, ``nonzero`` or Python
branch on tensor values. The input gradient of the attack never runs the backward of those
index operations (the masks are detached from the input in the default ``"detached"`` mode).

CUDA only. Not for distributed training (the engine refuses ``cuda_graphs`` under
``torchrun``: untested there).
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable

import torch
import torch.nn as nn
from torch import Tensor

from ..training.methods import Draw, pgd_examples

__all__ = ["GraphedPGD"]

log = logging.getLogger(__name__)


def _signature(x: Tensor, y: Tensor) -> tuple:
    return (tuple(x.shape), x.stride(), x.dtype, x.device, tuple(y.shape), y.stride(), y.dtype)


class GraphedPGD:
    """``pgd_examples(model, x, y, config, draw, autocast)`` replayed from a CUDA graph.

    Args:
        model: the model being trained (on CUDA). Its parameters and buffers must be
            updated in place (as ``torch.optim`` optimizers and BatchNorm do).
        config: the :class:`~cifs_edu.training.config.TrainConfig` (eps, ``train_step_size``,
            ``train_steps``, ``random_start``, ``adaptive``, ``beta``, ``loss_scale``);
            its values are baked into the graph.
        autocast: the engine's autocast factory (a callable returning a context manager).
        warmup: eager iterations on a side stream before the capture (cuDNN autotuning,
            autograd's lazy initialisation), as the PyTorch CUDA-graphs notes require.

    Calling it as ``graphed(x, y, draw)`` returns the same tensor as
    ``pgd_examples(model, x, y, config, draw, autocast)`` (up to kernel-choice rounding).
    The first call with a CUDA batch captures the graph for that batch's shape; later calls
    with the same shape replay it, others run the eager attack (see the module docstring).

    Attributes:
        replays: calls answered by the graph (the capturing call included).
        eager_calls: calls answered by the eager attack (other shapes, CPU tensors).
        capture_s: wall seconds spent on warm-up and capture (``None`` before).
    """

    def __init__(self, model: nn.Module, config, autocast: Callable[[], contextlib.AbstractContextManager] =
                 contextlib.nullcontext, *, warmup: int = 3) -> None:
        if config.method != "pgd_at":
            raise ValueError(f"GraphedPGD replays the pgd_at training attack (config.method={config.method!r})")
        self.model = model
        self.config = config
        self.autocast = autocast
        self.warmup = int(warmup)
        self.replays = 0
        self.eager_calls = 0
        self.capture_s: float | None = None
        self._warned = False
        self.reset()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        """Drop the graph (and its memory pool); the next call captures again."""
        self.graph: torch.cuda.CUDAGraph | None = None
        self._sig: tuple | None = None
        self._x = self._y = self._noise = self._out = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def _eager(self, x: Tensor, y: Tensor, draw: Draw, why: str) -> Tensor:
        self.eager_calls += 1
        if not self._warned:
            self._warned = True
            log.debug("GraphedPGD: %s; running the eager attack for such batches (logged once)", why)
        return pgd_examples(self.model, x, y, self.config, draw, self.autocast)

    # ------------------------------------------------------------------ capture / replay
    def _body(self) -> Tensor:
        noise = self._noise
        return pgd_examples(self.model, self._x, self._y, self.config, lambda kind: noise, self.autocast)

    def _capture(self, x: Tensor, y: Tensor, noise: Tensor | None) -> None:
        import time

        t0 = time.perf_counter()
        self._x = torch.empty_like(x).copy_(x)
        self._y = torch.empty_like(y).copy_(y)
        # without a random start pgd_examples never calls draw: the static noise is unused
        self._noise = torch.empty_like(noise).copy_(noise) if noise is not None else torch.zeros_like(x)
        side = torch.cuda.Stream(device=x.device)
        side.wait_stream(torch.cuda.current_stream(x.device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self._body()
        torch.cuda.current_stream(x.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            out = self._body()
        self.graph, self._out, self._sig = graph, out, _signature(x, y)
        torch.cuda.current_stream(x.device).synchronize()
        self.capture_s = time.perf_counter() - t0

    def __call__(self, x: Tensor, y: Tensor, draw: Draw) -> Tensor:
        if not x.is_cuda:
            return self._eager(x, y, draw, f"a batch on {x.device} (CUDA graphs need CUDA tensors)")
        sig = _signature(x, y)
        if self.graph is not None and sig != self._sig:
            return self._eager(x, y, draw, f"a batch of shape {tuple(x.shape)} differs from the captured "
                                           f"{self._sig[0]} (or in strides/dtype)")
        # the engine's random start, drawn eagerly exactly when the eager attack draws it
        noise = draw("uniform") if self.config.random_start else None
        if self.graph is None:
            self._capture(x, y, noise)
        else:
            self._x.copy_(x)
            self._y.copy_(y)
            if noise is not None:
                self._noise.copy_(noise)
        self.graph.replay()
        self.replays += 1
        return self._out.clone()

    def __repr__(self) -> str:
        shape = self._sig[0] if self._sig else None
        return (f"GraphedPGD(steps={self.config.train_steps}, captured={shape}, replays={self.replays}, "
                f"eager_calls={self.eager_calls})")
