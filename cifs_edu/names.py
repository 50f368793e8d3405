"""The names the library accepts, defined once (models, training configs, profiles, data and CLI import them).

- :data:`ARCHS`: ``resnet18`` (the paper's CIFAR ResNet-18), ``resnet10`` (the Fashion-MNIST
  network), ``wrn28_10`` (WideResNet-28-10).
- :data:`DEFENSES`: ``none`` (vanilla), ``cifs`` (the paper's layer), ``cas`` (Bai et al., 2021).
- :data:`DATASETS`: the built-in data sets; ``"folder:<path>"`` names an image-folder tree.
- :data:`METHODS`: the training objectives of :mod:`cifs_edu.training.methods`.

Attack names are parsed by :func:`cifs_edu.training.parse_attack` (``natural``, ``fgsm``,
``pgd20``, ``cw``, ``pgd100``, ``autoattack``, ``pgd20@0.01``, ...).
"""
from __future__ import annotations

__all__ = ["ARCHS", "DEFENSES", "DATASETS", "METHODS"]

ARCHS = ("resnet18", "resnet10", "wrn28_10")
DEFENSES = ("none", "cifs", "cas")
DATASETS = ("synthetic", "cifar10", "svhn", "fmnist")
METHODS = ("standard", "pgd_at", "trades", "fat")
