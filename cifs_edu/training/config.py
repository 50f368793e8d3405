"""The run configuration: everything that determines a trained model, validated at construction.

A :class:`TrainConfig` is frozen. ``TrainConfig.from_profile("smoke", defense="cifs")``
takes the schedule, data sizes and attack budget from a profile
(:mod:`cifs_edu.profiles`) and overrides any field by keyword.

Two groups of fields:

- **training fields** decide the weights: data, model, method, optimiser, attack, seed,
  precision, and the validation that picks the best epoch. Their canonical JSON, the
  package version and :data:`CACHE_VERSION` hash into :meth:`TrainConfig.key`, the name of
  the run folder under :func:`cifs_edu.paths.runs_dir`.
- **final-evaluation fields** (``eval_attacks``, ``eval_sweep``, ``eval_n``, ``eval_best``,
  ``eval_batch_size``, ``aa_n``) only say which test-set numbers go into ``results.json``;
  changing them never retrains (``load_or_train`` re-evaluates the saved model).

Training methods (``method``):

=============  ===================================================================
``standard``   natural training (CE; Eq. 3 on clean data for CIFS/CAS)
``pgd_at``     Madry et al. (2018): PGD with a uniform random start, update on x_adv
``trades``     Zhang et al. (2019): CE(x) + trades_beta * KL(p(x) || p(x_adv))
``fat``        Zhang et al. (2020): early-stopped PGD (stop ``fat_tau`` steps after
               the example is first misclassified), update on the friendly x_adv
=============  ===================================================================
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from ..losses import parse_beta
from ..errors import ConfigError
from ..names import ARCHS as _ARCHS, DATASETS as _DATASETS, DEFENSES as _DEFENSES, METHODS
from ..profiles import Profile, get_profile
from ..evaluate import parse_attack

__all__ = ["TrainConfig", "FIELD_HELP", "FIELD_CHOICES", "METHODS", "CACHE_VERSION", "EVAL_FIELDS", "RUNTIME_FIELDS", "AMP_MODES", "AUGMENTS"]

#: Bump when a change of the trainer makes old runs incomparable (part of every key).
#: 2: new synthetic data defaults and ``augment="auto"`` = none on the synthetic data.
#: 3: the default CIFS label rule became the paper's (top-1 replaced by y; formerly ``"distinct"``).
CACHE_VERSION = 3

AMP_MODES = ("auto", "off", "bf16", "fp16")
AUGMENTS = ("auto", "crop_flip", "crop", "none")
SWITCHES = ("auto", "on", "off")  # channels_last, fast_attack
LOSS_SCALES = ("paper", "authors")
#: The fields whose values come from a fixed list (validation, and the CLI's ``choices``).
FIELD_CHOICES: dict[str, tuple[str, ...]] = {
    "arch": _ARCHS, "defense": _DEFENSES, "method": METHODS, "augment": AUGMENTS, "loss_scale": LOSS_SCALES,
    "amp": AMP_MODES, "channels_last": SWITCHES, "fast_attack": SWITCHES,
}

#: Fields that only choose the final test-set evaluation (not part of :meth:`TrainConfig.key`).
EVAL_FIELDS = ("eval_attacks", "eval_sweep", "eval_n", "eval_best", "eval_batch_size", "aa_n")

#: Fields that only choose how the same computation is executed (not part of :meth:`TrainConfig.key`,
#: ignored when a checkpoint's config is compared with the requested one, so a run may be resumed
#: with or without them).
RUNTIME_FIELDS = ("cuda_graphs",)

#: Profile fields copied by :meth:`TrainConfig.from_profile`.
_FROM_PROFILE = (
    "dataset", "n_train", "n_val", "n_test", "width", "epochs", "batch_size", "lr", "milestones",
    "momentum", "weight_decay", "eps", "train_steps", "train_step_size", "eval_n", "eval_batch_size",
    "eval_every", "aa_n", "eval_attacks", "eval_sweep", "val_steps", "warm_start_epochs",
)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _jsonable(v: Any) -> Any:
    if isinstance(v, Mapping):
        return {str(k): _jsonable(v[k]) for k in sorted(v)}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    return v


def _build_defaults() -> dict[str, Any]:
    import inspect

    from ..models import build_model

    sig = inspect.signature(build_model)
    return {n: p.default for n, p in sig.parameters.items() if p.default is not inspect.Parameter.empty}


def _canonical_options(opts: dict[str, Any]) -> dict[str, Any]:
    """``model_options`` without entries equal to ``build_model``'s defaults (e.g. ``imgf="softmax"``,
    ``k=2``, ``positions=["P1", "P2"]``), so that equal models share one cache key and one run folder."""
    from ..cifs import canonical_label_rule

    defaults = _build_defaults()
    out = {}
    for key, value in opts.items():
        if key == "label_rule":
            value = canonical_label_rule(value)
        if key in defaults and defaults[key] is not None and value == defaults[key]:
            continue
        if key == "positions" and isinstance(value, (list, tuple)) and sorted(value) == ["P1", "P2"] and len(value) == 2:
            continue
        out[key] = value
    return out


def _last_cifs_channels(arch: str, width: int) -> int:
    """Channels C of the last CIFS position (P1) of ``build_model(arch, width=width)``."""
    return 64 * width if arch == "wrn28_10" else 8 * width


def _channel_scaled(values: Mapping[str, Any]) -> Any:
    """``model_options`` with ``scale = C`` for a softmax-mask CIFS model (profiles with
    ``cifs_mask_scale="channels"``; see :data:`cifs_edu.profiles.MASK_SCALE_NOTE`). An explicit
    ``scale`` or another IMGF is left alone."""
    opts = values.get("model_options") or {}
    if not isinstance(opts, Mapping) or "scale" in opts or opts.get("imgf", "softmax") != "softmax":
        return opts
    arch, width = values.get("arch", "resnet18"), values.get("width")
    if not _is_int(width) or width <= 0 or arch not in _ARCHS:
        return opts  # invalid values are reported by validation
    return {**opts, "scale": _last_cifs_channels(arch, width)}


def _f(default: Any = dataclasses.MISSING, help: str = "", factory: Any = dataclasses.MISSING) -> Any:
    """A :class:`TrainConfig` field with its one-line ``help`` (the CLI's help text)."""
    return field(default=default, default_factory=factory, metadata={"help": help})


@dataclass(frozen=True)
class TrainConfig:
    """One training run (see the module docstring). All fields are plain JSON types; each field's one-line
    meaning stands beside it (the ``--field-name`` help of ``python -m cifs_edu train``; all of them:
    :data:`FIELD_HELP`). What needs more than a line:

    - ``n_val`` images are held out of the *training* data to pick ``best.pt`` (never the test set);
      ``augment="auto"`` is a random crop with 4-pixel padding + horizontal flip for CIFAR-10 and image
      folders, none for the synthetic data, SVHN digits and Fashion-MNIST.
    - ``arch``, ``defense``, ``width`` and ``model_options`` go to :func:`cifs_edu.models.build_model`
      (CIFS: positions, probes, k, imgf, ...).
    - ``beta`` (Eq. 3) is used by CIFS/CAS training and training attacks (the paper: 2 = |I|);
      ``trades_beta=6`` is the TRADES paper's CIFAR-10 value; FAT's ``fat_tau`` counts the extra PGD
      steps after an example is first misclassified, ``"dynamic"`` is FAT's own schedule (0, then 1 after
      50/120 of the epochs, then 2 after 90/120); ``fat_omega`` is 0 in the FAT paper's algorithm and
      0.001 in their code.
    - SGD multiplies ``lr`` by ``lr_gamma`` at each milestone epoch.
    - ``warm_start_epochs``: the first N of the ``epochs`` train the same model naturally (Eq. 3 / CE on
      clean images, no attack), then ``method`` takes over with the same optimiser and schedule. The
      authors start CIFS-AT from a naturally trained CIFS model; this is that start inside one run, for
      vanilla and CIFS alike (0 = none, the paper's text).
    - ``eval_*`` and ``aa_n`` choose the final test-set numbers of ``results.json``
      (:func:`~cifs_edu.evaluate.parse_attack` names); ``eval_sweep`` reports, for CIFS/CAS, the worst
      case over the attacker's betas (Table B.3) instead of beta_atk = beta.
    - ``amp="auto"``: bfloat16 autocast on CUDA when supported, else float16 with a gradient scaler;
      float32 on the CPU. ``channels_last="auto"`` = on (faster on CUDA and, for these ResNets, on
      CPUs too).
    - ``fast_attack``: make the training attack's examples on a private fast copy of the eval-mode model
      (:func:`cifs_edu.engine.fast.fast_copy`: BatchNorm folded into the convolutions, frozen
      parameters, channels_last), rebuilt for every batch: the same examples up to float rounding,
      about 10% less time per attack step on the 2-core CPUs (width 8). ``"auto"`` = on for the CPU,
      off on CUDA (where it paid only at batch 512 on an H100). Part of :meth:`key` (float rounding
      changes the trained weights, as ``channels_last`` does). Not used by the ``cuda_graphs`` attack.
    - ``cuda_graphs``: replay the ``pgd_at`` training attack from a CUDA graph
      (:class:`~cifs_edu.engine.graphs.GraphedPGD`): the attack of every full batch is captured once
      (PGD-k in eval mode with the same eps, step, random-start noise, loss and autocast) and replayed
      with one launch, which removes most of the kernel-launch latency that bounds small-batch AT on a
      fast GPU. The last, smaller batch of an epoch runs the eager attack. Results equal the eager path
      up to the float rounding of kernel choice (the random stream is unchanged), so this is a
      *runtime* field (:data:`RUNTIME_FIELDS`): not part of :meth:`key`, and a run may be resumed with
      it on or off. CUDA only, ``method="pgd_at"`` only, single process only (``train`` refuses it
      under ``torchrun``); invalid combinations raise :class:`ConfigError`.
    """

    # data
    profile: str = _f("smoke", "profile the values came from (a label; part of the run folder's name)")
    dataset: str = _f("synthetic", "synthetic, cifar10, svhn, fmnist or folder:PATH")
    n_train: int | None = _f(2000, "training images (null = all)")
    n_val: int = _f(200, "validation images held out of the training data (pick the best epoch)")
    n_test: int | None = _f(500, "test images (null = all)")
    augment: str = _f("auto", "auto (crop+flip for CIFAR-10 and folders, none otherwise), crop_flip, crop or none")

    # model
    arch: str = _f("resnet18", "backbone: resnet18 (the paper's), resnet10 (Fashion-MNIST) or wrn28_10")
    defense: str = _f("none", "none (vanilla), cifs (this paper) or cas (Bai et al.)")
    width: int = _f(8, "ResNet base width (64 = the paper's) or WRN widen factor")
    model_options: Mapping[str, Any] = _f(help="further build_model keywords (CLI: --option KEY=VALUE)", factory=dict)

    # method
    method: str = _f("pgd_at", "standard, pgd_at (Madry), trades or fat")
    beta: float | str = _f(2.0, "beta of the adaptive loss, Eq. 3 (the paper: 2); ignored by vanilla models")
    loss_scale: str = _f("paper", "paper (Eq. 3) or authors (their script's 3/(1+beta) factor)")
    trades_beta: float = _f(6.0, "TRADES' weight of the KL term (6)")
    fat_tau: int | str = _f("dynamic", "FAT's tau: an int >= 0 or dynamic (FAT's schedule 0, 1, 2)")
    fat_omega: float = _f(0.0, "std of the Gaussian noise FAT's code adds per step (0 = the FAT paper)")

    # optimiser (SGD) and warm start
    epochs: int = _f(5, "number of epochs")
    batch_size: int = _f(128, "SGD batch size (the paper: 128)")
    lr: float = _f(0.1, "initial learning rate (the paper: 0.1)")
    milestones: tuple[int, ...] = _f((4,), "epochs after which lr is multiplied by lr_gamma, e.g. 100,105")
    lr_gamma: float = _f(0.1, "learning-rate factor at each milestone (0.1)")
    momentum: float = _f(0.9, "SGD momentum (0.9)")
    weight_decay: float = _f(2e-4, "SGD weight decay (the paper: 2e-4 for ResNet-18)")
    warm_start_epochs: int = _f(0, "the first N epochs train the same model naturally (the authors' warm start)")

    # training attack
    eps: float = _f(8 / 255, "l_inf budget of training and evaluation attacks, inputs in [0, 1] (8/255)")
    train_steps: int = _f(3, "PGD steps of the training attack (the paper: 10)")
    train_step_size: float = _f(4 / 255, "step size of the training attack (the paper: 2/255)")
    random_start: bool = _f(True, "uniform random start of the training attack")

    # validation (picks best.pt)
    eval_every: int = _f(1, "validate every N epochs (and after the last)")
    val_steps: int = _f(10, "PGD steps of the per-epoch validation")
    val_step_size: float | None = _f(None, "step of the validation PGD (null = eps/4)")

    # final evaluation on the test set (not part of key())
    eval_attacks: tuple[str, ...] = _f(
        ("natural", "fgsm", "pgd20"), "final test attacks, e.g. natural,fgsm,pgd20,cw,autoattack")
    eval_sweep: bool = _f(False, "CIFS/CAS: report the worst case over the attacker's betas (Table B.3)")
    eval_n: int | None = _f(500, "test images of the final evaluation (null = all)")
    eval_best: bool = _f(True, "also evaluate best.pt")
    eval_batch_size: int = _f(500, "batch size of the evaluation attacks")
    aa_n: int = _f(100, "test images for AutoAttack")

    # runtime
    seed: int = _f(0, "random seed (default: $CIFS_SEED or 0)")
    amp: str = _f("auto", "mixed precision on CUDA: auto, off, bf16 or fp16")
    channels_last: str = _f("auto", "memory format: auto (= on), on or off")
    compile: bool = _f(False, "torch.compile the training forward (CUDA)")
    fast_attack: str = _f(
        "auto", "training attack on a BN-folded frozen copy (same examples up to rounding): auto, on, off")
    cuda_graphs: bool = _f(False, "pgd_at on one GPU: replay the training attack from a CUDA graph (same examples)")

    # ------------------------------------------------------------------ construction
    def __post_init__(self) -> None:
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731
        problems: list[str] = []
        # normalise containers so that the config is plain, hashable-ish and JSON-stable
        if isinstance(self.milestones, (list, tuple)):
            set_("milestones", tuple(self.milestones))
        if isinstance(self.eval_attacks, str):
            set_("eval_attacks", (self.eval_attacks,))
        if isinstance(self.eval_attacks, (list, tuple)):
            names = []
            for a in self.eval_attacks:
                try:
                    names.append(parse_attack(a).name)
                except ValueError as e:
                    problems.append(str(e))
            set_("eval_attacks", tuple(dict.fromkeys(names)))
        else:
            problems.append(f"eval_attacks must be a list of attack names (got {self.eval_attacks!r})")
        if isinstance(self.model_options, Mapping):
            set_("model_options", _canonical_options(_jsonable(dict(self.model_options))))
        else:
            problems.append(f"model_options must be a dict (got {self.model_options!r})")
        try:
            set_("beta", parse_beta(self.beta))
        except ValueError as e:
            problems.append(str(e))
        for name in ("lr", "lr_gamma", "momentum", "weight_decay", "eps", "train_step_size", "trades_beta", "fat_omega"):
            v = getattr(self, name)
            if _is_int(v):
                set_(name, float(v))

        problems += self._problems()
        if problems:
            raise ConfigError("invalid training configuration: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        p: list[str] = []
        if self.method not in METHODS:
            p.append(f"method must be one of {METHODS} (got {self.method!r})")
        if self.arch not in _ARCHS:
            p.append(f"arch must be one of {_ARCHS} (got {self.arch!r})")
        if self.defense not in _DEFENSES:
            p.append(f"defense must be one of {_DEFENSES} (got {self.defense!r})")
        if not isinstance(self.dataset, str) or (
            self.dataset not in _DATASETS and not self.dataset.startswith("folder:")
        ):
            p.append(f"dataset must be one of {_DATASETS} or 'folder:<path>' (got {self.dataset!r})")
        if self.augment not in AUGMENTS:
            p.append(f"augment must be one of {AUGMENTS} (got {self.augment!r})")
        for name in ("epochs", "batch_size", "eval_every", "eval_batch_size", "aa_n", "val_steps"):
            v = getattr(self, name)
            if not _is_int(v) or v <= 0:
                p.append(f"{name} must be an integer > 0 (got {v!r})")
        for name in ("n_train", "n_test", "eval_n"):
            v = getattr(self, name)
            if v is not None and (not _is_int(v) or v <= 0):
                p.append(f"{name} must be an integer > 0 or None (got {v!r})")
        if not _is_int(self.warm_start_epochs) or self.warm_start_epochs < 0:
            p.append(f"warm_start_epochs must be an integer >= 0 (got {self.warm_start_epochs!r})")
        elif _is_int(self.epochs) and self.warm_start_epochs >= self.epochs > 0 and self.method != "standard":
            p.append(f"warm_start_epochs ({self.warm_start_epochs}) must be fewer than epochs ({self.epochs})")
        if not _is_int(self.n_val) or self.n_val < 0:
            p.append(f"n_val must be an integer >= 0 (got {self.n_val!r})")
        if not _is_int(self.width) or self.width <= 0:
            p.append(f"width must be an integer > 0 (got {self.width!r})")
        if not _is_int(self.seed) or self.seed < 0:
            p.append(f"seed must be an integer >= 0 (got {self.seed!r})")
        if not _is_int(self.train_steps) or self.train_steps < 0:
            p.append(f"train_steps must be an integer >= 0 (got {self.train_steps!r})")
        for name, low_ok in (("lr", False), ("lr_gamma", False), ("momentum", True), ("weight_decay", True),
                             ("eps", True), ("train_step_size", True), ("trades_beta", True), ("fat_omega", True)):
            v = getattr(self, name)
            if not isinstance(v, float) or math.isnan(v) or math.isinf(v) or v < 0 or (v == 0 and not low_ok):
                p.append(f"{name} must be a number {'>=' if low_ok else '>'} 0 (got {v!r})")
        if isinstance(self.eps, float) and self.eps > 1:
            p.append(f"eps must be <= 1 for inputs in [0, 1] (got {self.eps})")
        if isinstance(self.momentum, float) and self.momentum >= 1:
            p.append(f"momentum must be < 1 (got {self.momentum})")
        if self.val_step_size is not None and (not isinstance(self.val_step_size, (int, float)) or self.val_step_size <= 0):
            p.append(f"val_step_size must be > 0 or None (got {self.val_step_size!r})")
        ms = self.milestones
        if not isinstance(ms, tuple) or not all(_is_int(m) for m in ms) or list(ms) != sorted(set(ms)) or any(m <= 0 for m in ms):
            p.append(f"milestones must be strictly increasing positive epochs (got {ms!r})")
        if self.loss_scale not in LOSS_SCALES:
            p.append(f"loss_scale must be 'paper' or 'authors' (got {self.loss_scale!r})")
        if not (self.fat_tau == "dynamic" or (_is_int(self.fat_tau) and self.fat_tau >= 0)):
            p.append(f"fat_tau must be an integer >= 0 or 'dynamic' (got {self.fat_tau!r})")
        if self.amp not in AMP_MODES:
            p.append(f"amp must be one of {AMP_MODES} (got {self.amp!r})")
        if self.channels_last not in SWITCHES:
            p.append(f"channels_last must be 'auto', 'on' or 'off' (got {self.channels_last!r})")
        if self.fast_attack not in SWITCHES:
            p.append(f"fast_attack must be 'auto', 'on' or 'off' (got {self.fast_attack!r})")
        for name in ("random_start", "eval_sweep", "eval_best", "compile", "cuda_graphs"):
            if not isinstance(getattr(self, name), bool):
                p.append(f"{name} must be True or False (got {getattr(self, name)!r})")
        if self.method in ("pgd_at", "trades", "fat"):
            if self.train_steps < 1:
                p.append(f"method {self.method!r} needs train_steps >= 1")
            if self.eps == 0:
                p.append(f"method {self.method!r} needs eps > 0 (use method='standard' for natural training)")
            elif self.train_step_size == 0:
                p.append(f"method {self.method!r} needs train_step_size > 0")
        if self.cuda_graphs is True:
            p += self._graph_problems()
        if isinstance(self.model_options, dict):
            clash = sorted(set(self.model_options) & {"arch", "defense", "width", "num_classes", "in_channels"})
            if clash:
                p.append(f"model_options may not set {clash}: arch, defense and width are fields of the config "
                         "itself (e.g. TrainConfig(width=16), train --width 16); num_classes and in_channels "
                         "come from the data set")
        if self.defense == "none" and isinstance(self.beta, str):
            p.append(f"beta={self.beta!r} trains only probe outputs, but defense='none' has none")
        if self.defense in _DEFENSES and self.arch in _ARCHS and _is_int(self.width) and self.width > 0 \
                and isinstance(self.model_options, dict) and isinstance(self.dataset, str):
            p += self._model_problems()
        return p

    def _graph_problems(self) -> list[str]:
        """Why ``cuda_graphs=True`` cannot be used here (one sentence; empty when it can)."""
        import torch

        why = []
        if self.method != "pgd_at":
            why.append(f"it replays the pgd_at training attack only (method={self.method!r})")
        if not torch.cuda.is_available():
            why.append("it needs a CUDA device (torch.cuda.is_available() is False here)")
        return [f"cuda_graphs=True is not possible: {' and '.join(why)}"] if why else []

    def _model_problems(self) -> list[str]:
        """Delegate the model options to :func:`cifs_edu.models.build_model` (built on the meta device)."""
        try:
            self.build_model(device="meta")
        except ConfigError as e:
            return [str(e)]
        except TypeError as e:  # an unknown keyword in model_options
            return [f"model_options: {e}"]
        return []

    @classmethod
    def from_profile(cls, profile: str | Profile | None = None, **overrides: Any) -> "TrainConfig":
        """A config with the profile's values, then ``overrides`` (any field of this class).

        On profiles with ``cifs_mask_scale="channels"`` (smoke, laptop) a CIFS model with the
        softmax mask gets ``model_options["scale"] = C`` (the channels of its last CIFS layer)
        unless a ``scale`` is given: see :data:`cifs_edu.profiles.MASK_SCALE_NOTE`. A profile
        with a ``normalize`` (smoke) puts it in ``model_options`` when the profile's own data set
        is used and no ``normalize`` is given (``model_options={"normalize": None}`` turns it off;
        another ``dataset`` gets none: the statistics belong to the profile's data).

        The ``seed`` is the active session's (``cifs_edu.setup(seed=...)``, else ``CIFS_SEED``,
        else 0) unless one is given, so that ``CIFS_SEED=3`` retrains every model of the book
        with seed 3 (the seed is part of :meth:`key`).

        Raises:
            ConfigError: unknown profile, unknown field names, or invalid values (all listed).
        """
        prof = get_profile(profile)
        values: dict[str, Any] = {"profile": prof.name}
        for name in _FROM_PROFILE:
            if hasattr(prof, name):
                values[name] = getattr(prof, name)
        unknown = sorted(set(overrides) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s) {unknown}; valid fields: {[f.name for f in dataclasses.fields(cls)]}")
        values.update(overrides)
        if "seed" not in values:
            from ..runtime import current

            values["seed"] = current().seed
        if prof.normalize is not None and values.get("dataset") == prof.dataset:
            opts = values.get("model_options") or {}
            if isinstance(opts, Mapping) and "normalize" not in opts:
                values["model_options"] = {**opts, "normalize": prof.normalize}
        if getattr(prof, "cifs_mask_scale", "paper") == "channels" and values.get("defense") == "cifs":
            values["model_options"] = _channel_scaled(values)
        return cls(**values)

    def replace(self, **changes: Any) -> "TrainConfig":
        """A copy with some fields changed (validated again)."""
        unknown = sorted(set(changes) - {f.name for f in dataclasses.fields(self)})
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s) {unknown}")
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ identity
    def to_dict(self) -> dict[str, Any]:
        """All fields as JSON types (tuples become lists)."""
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "TrainConfig":
        """Inverse of :meth:`to_dict` (unknown keys raise :class:`ConfigError`)."""
        data = dict(data)
        for name in ("milestones", "eval_attacks"):
            if isinstance(data.get(name), list):
                data[name] = tuple(data[name])
        unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
        if unknown:
            raise ConfigError(f"unknown TrainConfig field(s) {unknown}")
        return cls(**data)

    def training_dict(self) -> dict[str, Any]:
        """The fields that decide the weights (everything but :data:`EVAL_FIELDS` and :data:`RUNTIME_FIELDS`)."""
        return {k: v for k, v in self.to_dict().items() if k not in EVAL_FIELDS and k not in RUNTIME_FIELDS}

    def eval_dict(self) -> dict[str, Any]:
        """The final-evaluation fields."""
        return {k: v for k, v in self.to_dict().items() if k in EVAL_FIELDS}

    def key(self) -> str:
        """Short stable hash of the training fields, the package version and :data:`CACHE_VERSION`."""
        from .._version import __version__

        text = json.dumps(
            {"config": self.training_dict(), "version": __version__, "cache": CACHE_VERSION},
            sort_keys=True, separators=(",", ":"),
        )
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def run_name(self) -> str:
        """Folder name of the run: ``<profile>-<arch>-<defense>-<method>-<key>``."""
        return f"{self.profile}-{self.arch}-{self.defense}-{self.method}-{self.key()}"

    def differences(self, other: "TrainConfig | Mapping[str, Any]", *, training_only: bool = True) -> dict[str, tuple]:
        """``{field: (self's value, other's value)}`` for the fields that differ."""
        mine = self.training_dict() if training_only else self.to_dict()
        theirs = other.to_dict() if isinstance(other, TrainConfig) else _jsonable(dict(other))
        skip = EVAL_FIELDS + RUNTIME_FIELDS if training_only else ()
        keys = [k for k in mine if k not in skip]
        keys += [k for k in theirs if k not in mine and k not in skip]
        return {k: (mine.get(k), theirs.get(k)) for k in keys if mine.get(k) != theirs.get(k)}

    # ------------------------------------------------------------------ derived values
    @property
    def adaptive(self) -> bool:
        """True when the model has CIFS/CAS layers (adaptive loss in training and attacks)."""
        return self.defense != "none"

    @property
    def val_alpha(self) -> float:
        """Step size of the validation PGD (default eps/4)."""
        return float(self.val_step_size) if self.val_step_size is not None else self.eps / 4

    def tau_at(self, epoch: int) -> int:
        """FAT's tau for a 0-based ``epoch`` (FAT's dynamic schedule scaled to ``epochs``)."""
        if self.fat_tau != "dynamic":
            return int(self.fat_tau)
        done = (epoch + 1) / self.epochs  # FAT counts epochs from 1: tau 0 up to 50/120, 1 up to 90/120, then 2
        if done <= 50 / 120:
            return 0
        if done <= 90 / 120:
            return 1
        return 2

    def natural_at(self, epoch: int) -> bool:
        """True when the 0-based ``epoch`` trains on clean images (``standard``, or a warm-start epoch)."""
        return self.method == "standard" or epoch < self.warm_start_epochs

    def lr_at(self, epoch: int) -> float:
        """Learning rate during the 0-based ``epoch`` (MultiStepLR semantics)."""
        return self.lr * self.lr_gamma ** sum(1 for m in self.milestones if m <= epoch)

    def resolved_augment(self) -> str:
        """``augment`` with ``"auto"`` resolved for the dataset."""
        if self.augment != "auto":
            return self.augment
        from ..datasets import default_augmentation

        return "crop_flip" if default_augmentation(self.dataset) else "none"

    def data_shape(self) -> tuple[int, int]:
        """``(in_channels, num_classes)`` of the dataset, known without loading it.

        For an image folder, the number of class folders under ``train/`` (10 when the folder
        is missing: the data check at the start of training reports that).
        """
        if self.dataset == "fmnist":
            return 1, 10
        if self.dataset.startswith("folder:"):
            from pathlib import Path

            train = Path(self.dataset[7:]).expanduser() / "train"
            classes = [d for d in train.iterdir() if d.is_dir()] if train.is_dir() else []
            return 3, len(classes) if len(classes) >= 2 else 10
        return 3, 10

    def model_kwargs(self, in_channels: int | None = None, num_classes: int | None = None) -> dict[str, Any]:
        """Keywords of :func:`cifs_edu.models.build_model` for this run."""
        c, k = self.data_shape() if in_channels is None or num_classes is None else (in_channels, num_classes)
        kw = dict(self.model_options)
        kw.update(defense=self.defense, num_classes=k if num_classes is None else num_classes,
                  in_channels=c if in_channels is None else in_channels, width=self.width)
        return kw

    def build_model(self, in_channels: int | None = None, num_classes: int | None = None, device: Any = None):
        """The (untrained) model of this run; ``device="meta"`` builds it without memory."""
        import torch

        from ..models import build_model

        kw = self.model_kwargs(in_channels, num_classes)
        if device is None:
            return build_model(self.arch, **kw)
        with torch.device(device):
            return build_model(self.arch, **kw)


#: One line per :class:`TrainConfig` field, read from the fields themselves: the ``--field-name`` help
#: of ``python -m cifs_edu train`` (the CLI and the Python API share one spine).
FIELD_HELP: dict[str, str] = {f.name: f.metadata["help"] for f in dataclasses.fields(TrainConfig)}
