"""Adversarial training of vanilla, CIFS and CAS models (PGD-AT, TRADES, FAT), with checkpoints.

>>> from cifs_edu.training import TrainConfig, load_or_train
>>> config = TrainConfig.from_profile("smoke", defense="cifs", method="pgd_at")   # doctest: +SKIP
>>> run = load_or_train(config)          # trains once, then loads from runs_dir()   # doctest: +SKIP
>>> run.metrics["last"]                  # {"natural": ..., "fgsm": ..., "pgd20": ...} # doctest: +SKIP
>>> run.curves()                         # per-epoch losses and accuracies (Fig. 4)  # doctest: +SKIP

Modules: :mod:`.config` (the validated run configuration), :mod:`.methods` (the training
objectives), :mod:`.loop` (train, resume, load_or_train), :mod:`.data` (tensor data with per-epoch
seeded order and augmentation). Attack names and test-set suites are :mod:`cifs_edu.evaluate`'s. The speed and safety paths the loop switches on (run locks, DDP, CUDA graphs,
the BN-folded attack copy) and the run folders (checkpoints, ``load_model``, ``evaluate_run``)
live in :mod:`cifs_edu.engine`.
"""
from .config import AMP_MODES, AUGMENTS, CACHE_VERSION, EVAL_FIELDS, METHODS, RUNTIME_FIELDS, TrainConfig
from ..evaluate import ATTACK_HELP, AttackSpec, build_attack, evaluate_model, parse_attack
from .loop import TrainResult, curves, load_or_train, train
from ..engine.runs import evaluate_run, load_model, read_history, run_dir_for

__all__ = [
    "TrainConfig",
    "METHODS",
    "AMP_MODES",
    "AUGMENTS",
    "CACHE_VERSION",
    "EVAL_FIELDS",
    "RUNTIME_FIELDS",
    "TrainResult",
    "train",
    "load_or_train",
    "load_model",
    "evaluate_run",
    "read_history",
    "curves",
    "run_dir_for",
    "build_attack",
    "evaluate_model",
    "parse_attack",
    "AttackSpec",
    "ATTACK_HELP",
]
