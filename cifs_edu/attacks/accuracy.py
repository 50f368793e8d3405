r"""Clean and robust accuracy over a data set: :func:`robust_accuracy` and friends.

``data`` may be a :class:`~torch.utils.data.Dataset` (batched here, in order), a
:class:`~torch.utils.data.DataLoader` (used as it is: its own batch size), or an
``(X, Y)`` pair of tensors (X: (N, C, H, W) in [0, 1], Y: (N,)).

The model is evaluated in eval mode under :func:`torch.inference_mode` (its previous
``training`` flags are restored afterwards). With an attack, each batch is first
perturbed by ``attack(x, y)`` and the prediction on the perturbed batch is what counts.

Results keep, per example, the *rank* of the true class among the logits (0 = predicted,
ties broken like ``argmax``: the lower class index wins), from which top-1 accuracy
(the usual accuracy), top-k accuracy (Table 4) and per-class accuracy (Fig. A.1) follow.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable, Iterator, Sequence, Union

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from .base import check_images, eval_mode, model_device, model_dtype

__all__ = [
    "EvalResult",
    "robust_accuracy",
    "topk_accuracy",
    "per_class_accuracy",
    "true_class_rank",
    "iterate_batches",
]

Data = Union[Dataset, DataLoader, Sequence[Tensor]]


def true_class_rank(logits: Tensor, y: Tensor) -> Tensor:
    """Rank of the true class per example, shape (N,): the number of classes ranked above it.

    A class ``j`` ranks above ``y`` if ``z_j > z_y``, or ``z_j == z_y`` and ``j < y``
    (the tie rule of ``argmax``), so ``rank == 0`` exactly when ``argmax(z) == y``.
    """
    z = logits.float()
    zy = z.gather(1, y[:, None])
    classes = torch.arange(z.shape[1], device=z.device)
    above = (z > zy) | ((z == zy) & (classes[None, :] < y[:, None]))
    return above.sum(dim=1)


def per_class_accuracy(correct: Tensor, labels: Tensor, num_classes: int | None = None) -> Tensor:
    """Accuracy (%) of each class, shape (K,); NaN for a class with no example."""
    labels = labels.long().cpu()
    correct = correct.cpu()
    k = int(labels.max().item()) + 1 if num_classes is None else num_classes
    total = torch.bincount(labels, minlength=k).double()
    hits = torch.bincount(labels, weights=correct.double(), minlength=k)
    return 100.0 * hits / total  # 0/0 -> NaN


@dataclass(frozen=True)
class EvalResult:
    """Per-example outcome of an evaluation.

    Attributes:
        rank: rank of the true class per example, shape (N,), on the CPU (0 = correct).
        labels: labels, shape (N,), on the CPU.
        name: what was evaluated: ``"clean"`` or the attack's ``repr``.
    """

    rank: Tensor
    labels: Tensor
    name: str = "clean"

    @property
    def correct(self) -> Tensor:
        """Bool tensor (N,): the (attacked) prediction equals the label."""
        return self.rank == 0

    @property
    def n(self) -> int:
        return int(self.labels.numel())

    @property
    def accuracy(self) -> float:
        """Top-1 accuracy in percent."""
        return self.topk(1)

    def topk(self, k: int) -> float:
        """Top-k accuracy in percent: the true class is among the k largest logits."""
        if k < 1:
            raise ValueError(f"k must be >= 1 (got {k})")
        if self.n == 0:
            return float("nan")
        return 100.0 * (self.rank < k).double().mean().item()

    def per_class(self, num_classes: int | None = None) -> Tensor:
        """Accuracy (%) per class, shape (K,) (Fig. A.1)."""
        return per_class_accuracy(self.correct, self.labels, num_classes)

    def __repr__(self) -> str:
        hits = int(self.correct.sum().item())
        return f"EvalResult({self.accuracy:.2f}% = {hits}/{self.n}, {self.name})"


def iterate_batches(data: Data, batch_size: int = 500) -> tuple[Iterable[tuple[Tensor, Tensor]], int]:
    """``(batches, number_of_batches)`` for a Dataset, a DataLoader or an ``(X, Y)`` pair."""
    if isinstance(data, DataLoader):
        return data, len(data)
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        X, Y = data
        if X.shape[0] != Y.shape[0]:
            raise ValueError(f"X and Y have different lengths ({X.shape[0]} vs {Y.shape[0]})")
        n_batches = (X.shape[0] + batch_size - 1) // batch_size

        def gen() -> Iterator[tuple[Tensor, Tensor]]:
            for i in range(0, X.shape[0], batch_size):
                yield X[i : i + batch_size], Y[i : i + batch_size]

        return gen(), n_batches
    if isinstance(data, Dataset):
        loader = DataLoader(data, batch_size=batch_size, shuffle=False)
        return loader, len(loader)
    raise TypeError(f"data must be a Dataset, a DataLoader or an (X, Y) tensor pair (got {type(data).__name__})")


def robust_accuracy(
    model: nn.Module,
    data: Data,
    attack: Callable[[Tensor, Tensor], Tensor] | None = None,
    *,
    batch_size: int = 500,
    device: torch.device | str | None = None,
    progress: bool = True,
) -> EvalResult:
    """Accuracy of ``model`` on ``data``, clean (``attack=None``) or under ``attack``.

    Args:
        model: classifier; ``model(x)`` returns logits.
        data: a Dataset, a DataLoader or an ``(X, Y)`` tensor pair.
        attack: ``attack(x, y) -> x_adv`` (e.g. a :class:`~cifs_edu.attacks.PGD`), or ``None``.
        batch_size: for Datasets and tensor pairs (the paper evaluates with 500).
        device: where to compute (default: the model's device).
        progress: show a tqdm bar.

    Returns:
        an :class:`EvalResult` (``.accuracy`` in percent, ``.correct`` per example).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 (got {batch_size})")
    device = torch.device(device) if device is not None else model_device(model)
    batches, total = iterate_batches(data, batch_size)
    name = "clean" if attack is None else repr(attack)
    ranks: list[Tensor] = []
    labels: list[Tensor] = []
    bar = tqdm(batches, total=total, disable=not progress, desc=name.split("(")[0], leave=False)
    for x, y in bar:
        if attack is None:
            check_images(x)  # an attack checks its own inputs
        x = x.to(device, dtype=model_dtype(model), non_blocking=True)
        y = y.to(device, non_blocking=True)
        if attack is not None:
            x = attack(x, y)  # the attack sets (and restores) its own model mode
        with eval_mode(model), torch.inference_mode():
            ranks.append(true_class_rank(model(x), y))
        labels.append(y)
    if not ranks:
        raise ValueError("robust_accuracy: the data holds no examples (an accuracy of 0 images is undefined)")
    return EvalResult(torch.cat(ranks).cpu(), torch.cat(labels).cpu(), name)


def topk_accuracy(
    model: nn.Module,
    data: Data,
    attack: Callable[[Tensor, Tensor], Tensor] | None = None,
    ks: Sequence[int] = (1, 2, 3),
    **kwargs,
) -> dict[int, float]:
    """Top-k accuracies (%) for each k in ``ks``, clean or under ``attack`` (Table 4).

    ``kwargs`` go to :func:`robust_accuracy`.
    """
    result = robust_accuracy(model, data, attack, **kwargs)
    return {k: result.topk(k) for k in ks}
