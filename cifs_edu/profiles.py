"""Profiles: one switch that scales every chapter and command.

=========  ==========================================  ==================================
profile    data                                         meant for
=========  ==========================================  ==================================
smoke      embedded synthetic CIFAR-shaped data         CI and the default book build (CPU, ~1 min a chapter)
laptop     real CIFAR-10 subset (4,500 + 500 images)    a CPU, <= 20 min per model on 2 cores
colab      full CIFAR-10, 20 epochs (lr drops at 5/8   one small GPU (T4 class), <= 1.5 h per ResNet-18
           and 3/4 of training, as in the paper)
paper      full CIFAR-10, the recipe of Appendix B      a modern GPU; the paper's exact settings
=========  ==========================================  ==================================

Two more profiles are the recipes of :mod:`cifs_edu.reference` (vanilla and CIFS trained alike on
the full CIFAR-10, two natural warm-start epochs first): ``reference-cpu`` (width 16, PGD-3 AT,
11 epochs: a 2-core CPU, about 1.5 h per model) and ``reference-gpu`` (width 64, PGD-10 AT with
step 2/255, 10 epochs: one H100-class GPU, a few minutes per model).

Choose with the ``CIFS_PROFILE`` environment variable or ``cifs_edu.setup(profile=...)``.
To run ``laptop`` on images in a folder (e.g. a CIFAR-10 sample in ImageFolder layout) instead
of torchvision's CIFAR-10 download, override the dataset: ``python -m cifs_edu train --profile
laptop --dataset folder:/path/to/cifar10-sample`` or
``TrainConfig.from_profile("laptop", dataset="folder:/path")``.
Numbers produced by ``smoke`` come from synthetic data and are never CIFAR-10 results.
"""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field

from .errors import ConfigError

__all__ = ["Profile", "PROFILES", "PROFILE_ENV", "get_profile", "ConfigError", "MASK_SCALE_NOTE", "NORMALIZE_NOTE"]

PROFILE_ENV = "CIFS_PROFILE"



@dataclass(frozen=True)
class Profile:
    """Scale settings shared by the book and the CLI. Validated at construction.

    Attributes:
        name: profile name.
        description: one line for printed captions.
        dataset: ``"synthetic"`` (embedded, offline), ``"cifar10"``, ``"svhn"``, ``"fmnist"``
            or ``"folder:<path>"`` (an ImageFolder tree with ``train/`` and ``test/``).
        n_train / n_val / n_test: subset sizes (``None`` = everything); ``n_val`` images are
            carved from the training data for best-epoch selection (never the test set).
        width: base width of the CIFAR ResNet-18 (64 is the paper's network).
        epochs, batch_size, lr, milestones, momentum, weight_decay: SGD schedule
            (lr multiplied by 0.1 at each milestone epoch).
        eps: l_inf budget of training and evaluation attacks (inputs in [0, 1]).
        train_steps, train_step_size: PGD used to make training examples.
        eval_n: test images used for attack evaluation; aa_n: images for AutoAttack.
        sweep_n: test images of the chapters' beta_atk sweeps (nine attacks per model, so
            the CPU profiles use fewer images than ``eval_n``); ``None`` = ``eval_n``. See
            :attr:`sweep_images`.
        device: ``"cpu"``, ``"cuda"`` (expects a GPU, hints if missing) or ``"auto"``.
        eval_attacks: the final test-set suite of a training run (names as in
            :func:`cifs_edu.training.parse_attack`: natural, fgsm, pgd20, cw, pgd100, autoattack).
        eval_sweep: report CIFS/CAS robustness as the worst case over the attacker's betas.
        val_steps: PGD steps (step eps/4) of the per-epoch validation that picks the best epoch.
        cifs_mask_scale: ``"paper"`` (the softmax mask sums to 1, as in the paper) or
            ``"channels"`` (the short CPU schedules: CIFS's softmax mask is multiplied by the
            channel count C of the last CIFS layer, so that its mean is 1); see :data:`MASK_SCALE_NOTE`.
        warm_start_epochs: natural-training epochs that start every run before its method
            (the authors' warm start, for vanilla and CIFS alike; 0 = none).
        normalize: input normalisation of the profile's models on its own data set (a key of
            :data:`cifs_edu.models.DATASET_STATS`, or ``None`` for none, as the authors). Only
            ``smoke`` sets it (``"synthetic"``): see :data:`NORMALIZE_NOTE`.
        threads: CPU threads for torch (``None``: torch's default). ``smoke`` uses 1: its width-8
            models do so little work per operation that splitting it over threads costs more
            than it saves (chapters ran 4-10x slower with 2 threads on a busy 2-core machine).
        report: the sizes of :func:`cifs_edu.report.robustness_report` at this profile, as
            :class:`~cifs_edu.report.ReportConfig` fields (the others keep its defaults, the paper's
            evaluation: 1,000 examples, PGD up to 500 steps, the standard AutoAttack).
    """

    name: str
    description: str
    dataset: str
    n_train: int | None
    n_val: int
    n_test: int | None
    width: int
    epochs: int
    batch_size: int
    lr: float
    milestones: tuple[int, ...]
    weight_decay: float
    eps: float
    train_steps: int
    train_step_size: float
    eval_n: int | None
    aa_n: int
    device: str
    momentum: float = 0.9
    eval_batch_size: int = 500
    eval_every: int = 1
    num_workers: int = 0
    eval_attacks: tuple[str, ...] = ("natural", "fgsm", "pgd20")
    eval_sweep: bool = False
    val_steps: int = 10
    cifs_mask_scale: str = "paper"
    sweep_n: int | None = None
    normalize: str | None = None
    warm_start_epochs: int = 0
    threads: int | None = None
    report: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        problems = []
        if self.eps < 0:
            problems.append(f"eps must be >= 0 (got {self.eps})")
        if self.train_steps < 0:
            problems.append(f"train_steps must be >= 0 (got {self.train_steps})")
        if self.train_step_size < 0:
            problems.append(f"train_step_size must be >= 0 (got {self.train_step_size})")
        for name in ("epochs", "batch_size", "width", "eval_batch_size", "eval_every", "val_steps"):
            if getattr(self, name) <= 0:
                problems.append(f"{name} must be > 0 (got {getattr(self, name)})")
        for name in ("n_train", "n_test", "eval_n", "sweep_n"):
            v = getattr(self, name)
            if v is not None and v <= 0:
                problems.append(f"{name} must be > 0 or None (got {v})")
        if not 0 <= self.warm_start_epochs < self.epochs:
            problems.append(f"warm_start_epochs must be in [0, epochs) (got {self.warm_start_epochs})")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            problems.append(f"threads must be None or an int >= 1 (got {self.threads!r})")
        if self.n_val < 0:
            problems.append(f"n_val must be >= 0 (got {self.n_val})")
        if self.lr <= 0:
            problems.append(f"lr must be > 0 (got {self.lr})")
        if self.weight_decay < 0:
            problems.append(f"weight_decay must be >= 0 (got {self.weight_decay})")
        if list(self.milestones) != sorted(self.milestones) or any(m <= 0 for m in self.milestones):
            problems.append(f"milestones must be increasing positive epochs (got {self.milestones})")
        if self.cifs_mask_scale not in ("paper", "channels"):
            problems.append(f"cifs_mask_scale must be 'paper' or 'channels' (got {self.cifs_mask_scale!r})")
        if self.normalize is not None:
            from .models.normalize import DATASET_STATS

            if self.normalize not in DATASET_STATS:
                problems.append(f"normalize must be None or one of {tuple(DATASET_STATS)} (got {self.normalize!r})")
        if self.device not in ("cpu", "cuda", "auto"):
            problems.append(f"device must be 'cpu', 'cuda' or 'auto' (got {self.device!r})")
        from .names import DATASETS as known

        if self.dataset not in known and not self.dataset.startswith("folder:"):
            problems.append(f"dataset must be one of {known} or 'folder:<path>' (got {self.dataset!r})")
        if problems:
            raise ConfigError(f"invalid profile {self.name!r}: " + "; ".join(problems))

    @property
    def is_synthetic(self) -> bool:
        """True when numbers come from the embedded synthetic data (never CIFAR-10 results)."""
        return self.dataset == "synthetic"

    @property
    def sweep_images(self) -> int | None:
        """Test images for a beta_atk sweep: ``sweep_n``, else ``eval_n`` (``None`` = all)."""
        return self.eval_n if self.sweep_n is None else self.sweep_n

    def summary(self) -> str:
        """One line for captions, e.g. ``"embedded synthetic data, NOT CIFAR-10; ResNet-18 width 8"``."""
        if self.is_synthetic:
            data = "embedded synthetic data, NOT CIFAR-10"
        elif self.dataset.startswith("folder:"):
            data = f"image folder {self.dataset[7:]}"
        else:
            sub = "full" if self.n_train is None else f"{self.n_train} training images"
            data = f"{self.dataset} ({sub})"
        return f"{data}; ResNet-18 width {self.width}; {self.epochs} epochs"

    def replace(self, **changes) -> "Profile":
        """A copy with some fields changed (validated again)."""
        return dataclasses.replace(self, **changes)


_EPS = 8 / 255

#: Why ``smoke`` and ``laptop`` rescale CIFS's softmax mask (``cifs_mask_scale="channels"``).
MASK_SCALE_NOTE = (
    "CIFS's softmax mask sums to 1 over the C channels, so the last CIFS layer hands the classifier "
    "features shrunk by about 1/C: the final linear layer then learns C^2 times more slowly. Over the "
    "paper's 120 epochs this is absorbed (the authors' results; not measured here); in the few hundred SGD steps of the smoke and laptop profiles a "
    "CIFS model with the paper's mask stays at chance accuracy (measured: 10% after 4 smoke epochs, with "
    "standard and adversarial training, two seeds). These two profiles therefore multiply the softmax mask "
    "by C (mean 1; build_model(scale=C)); at the last layer this only rescales the classifier's weights. "
    "The authors' warm start (TrainConfig.warm_start_epochs: natural training first) does not rescue the paper's "
    "mask in the smoke budget: with 1 of the 4 epochs natural, the seven softmax CIFS models of the book reach "
    "14-49% clean and 10-42% PGD-20 accuracy (cifs_at: 14.2% / 10.4%), against 86-95% / 44-72% with the mask "
    "times C (cifs_at: 89.4% / 66.4%; seed 0, the paper's label rule, scripts/mask_selectivity.py, "
    "benchmarks/results/mask_selectivity_smoke_seed0_2026-12-07.json). Either way the smoke softmax masks keep "
    "61-64 of 64 channels (exp of the entropy of the normalised mask, cifs_edu.analysis.mask_selectivity; the "
    "sigmoid and softplus models 45-51): the scale does not change how selective they are. "
    "laptop (CIFAR-10 sample, width 16, 15 epochs, seed 0): the mask times C reaches 37.1% clean / 26.8% PGD-20, "
    "the paper's mask with two natural epochs 31.1% / 23.3% (at chance until epoch 5); P1 keeps 124 and 126 of 128 "
    "channels (benchmarks/results/laptop_mask_scale_2026-12-07.json). "
    "On the full CIFAR-10 training set two natural epochs suffice (the reference-cpu profile: 47.5% training "
    "accuracy after them with the paper's mask), and there the mask selects: P1 keeps about 20 of 128 channels. "
    "colab, paper and the reference profiles use the paper's mask; colab and the reference profiles start with "
    "two natural epochs."
)

#: Why ``smoke`` normalises its models' inputs (``normalize="synthetic"``).
NORMALIZE_NOTE = (
    "The embedded synthetic images are a flat grey background with one faint coloured shape. Without "
    "input normalisation, adversarial training on them learns little in the smoke schedule (PGD-AT: "
    "24.0% PGD-20 accuracy, seed 0), and a small class-specific signal is lost in eval mode (BatchNorm's "
    "running means lag behind the large constant grey input). With the data set's own mean and standard "
    "deviation ((x - 0.5) / 0.125 inside the model, as is common for CIFAR-10) PGD-AT reaches 46.6-68.6% "
    "and a standard model 0.2-4.4% (seeds 0-3; cifs_edu.synthetic, fourth round; 0.8-8.6% over seeds 0-4 "
    "on another machine, make claims of 2026-12-07). The authors train "
    "CIFAR-10 without normalisation, and laptop, colab and paper follow them. The synthetic data is also "
    "trained without random crops and flips (augment='auto' resolves to none there): zero-padded crops put "
    "black borders on its grey images and cost PGD-AT 28 points of PGD-20 accuracy (40.6% against 68.6%, seed 0)."
)

PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="embedded synthetic data on the CPU; every chapter in about a minute",
        dataset="synthetic",
        n_train=2000,
        n_val=200,
        n_test=500,
        width=8,
        epochs=4,
        batch_size=128,
        lr=0.1,
        milestones=(3,),
        weight_decay=2e-4,
        eps=_EPS,
        train_steps=3,
        train_step_size=_EPS / 2,
        eval_n=500,
        aa_n=100,
        device="cpu",
        eval_batch_size=250,  # at width 8 on the CPU, batches of 250 attack about 10-20% faster than 500
        eval_every=2,
        val_steps=5,
        cifs_mask_scale="channels",
        sweep_n=100,
        normalize="synthetic",  # see NORMALIZE_NOTE
        threads=1,
        # about half a minute per model on 2 idle CPU cores: AutoAttack without FAB-T, at 5 steps
        report=dict(n=64, eps_multipliers=(1, 2, 4, 8), sweep_steps=5, steps=(5, 10, 20), restarts=2, restart_steps=5,
                    apgd_steps=8, square_queries=50, transfer_steps=5, adaptive_steps=10, betas=(2, "inf"), aa_steps=5,
                    aa_queries=50, aa_components=("apgd-ce", "apgd-t", "square"), batch_size=256),
    ),
    "laptop": Profile(
        name="laptop",
        description="a real CIFAR-10 subset on a CPU; under 20 minutes per model on 2 cores",
        dataset="cifar10",
        n_train=4500,
        n_val=500,
        n_test=1000,
        width=16,
        epochs=15,
        batch_size=128,
        lr=0.1,
        milestones=(9, 11),
        weight_decay=2e-4,
        eps=_EPS,
        train_steps=3,
        train_step_size=_EPS / 2,
        eval_n=1000,
        aa_n=200,
        device="cpu",
        cifs_mask_scale="channels",
        sweep_n=500,
        report=dict(n=200, steps=(10, 20, 50, 100), restarts=3, restart_steps=20, apgd_steps=50, square_queries=1000,
                    transfer_steps=20, aa_steps=50, aa_queries=1000, batch_size=200),
    ),
    "colab": Profile(
        name="colab",
        description="full CIFAR-10 on one small GPU, short schedule (about 1.5 h per ResNet-18 on a T4)",
        dataset="cifar10",
        n_train=None,
        n_val=1000,
        n_test=None,
        width=64,
        epochs=20,
        batch_size=128,
        lr=0.1,
        milestones=(12, 15),
        weight_decay=2e-4,
        eps=_EPS,
        train_steps=10,
        train_step_size=_EPS / 4,
        eval_n=2000,
        aa_n=1000,
        device="cuda",
        num_workers=2,
        eval_attacks=("natural", "fgsm", "pgd20", "cw"),
        # the authors' warm start: the paper's mask (it sums to 1) needed it on the full CIFAR-10 in the
        # reference-cpu run, and a short GPU schedule must not spend its budget at chance accuracy
        warm_start_epochs=2,
        report=dict(n=1000, steps=(10, 20, 100, 200), restarts=5, restart_steps=50, apgd_steps=100, square_queries=2000,
                    transfer_steps=50, aa_steps=100, aa_queries=2000),
    ),
    "reference-cpu": Profile(
        name="reference-cpu",
        description="the reference run on the full CIFAR-10 on a 2-core CPU (about 75 min per model, two side by side)",
        dataset="cifar10",
        n_train=None,
        n_val=1000,
        n_test=None,
        width=16,
        epochs=11,
        batch_size=128,
        lr=0.1,
        milestones=(7, 9),
        weight_decay=2e-4,
        eps=_EPS,
        train_steps=3,
        train_step_size=_EPS / 2,
        eval_n=None,
        aa_n=1000,
        device="cpu",
        warm_start_epochs=2,
        sweep_n=2000,
    ),
    "paper": Profile(
        name="paper",
        description="the paper's recipe (Appendix B): ResNet-18, 120 epochs, PGD-10 AT",
        dataset="cifar10",
        n_train=None,
        n_val=1000,
        n_test=None,
        width=64,
        epochs=120,
        batch_size=128,
        lr=0.1,
        milestones=(75, 90),
        weight_decay=2e-4,
        eps=_EPS,
        train_steps=10,
        train_step_size=_EPS / 4,
        eval_n=None,
        aa_n=2000,
        device="cuda",
        num_workers=4,
        eval_attacks=("natural", "fgsm", "pgd20", "cw", "pgd100"),
        eval_sweep=True,
        report=dict(n=1000),
    ),
}


#: The paper-width reference recipe: reference-cpu at width 64 with the paper's PGD-10 (step 2/255), on one GPU.
PROFILES["reference-gpu"] = PROFILES["reference-cpu"].replace(
    name="reference-gpu", width=64, epochs=10, train_steps=10, train_step_size=2 / 255, device="cuda",
    description="the paper-width reference run on the full CIFAR-10 on one H100-class GPU (a few minutes per model)")


def get_profile(name: str | Profile | None = None) -> Profile:
    """Look up a profile by name; ``None`` reads ``CIFS_PROFILE`` and defaults to ``"smoke"``.

    ``"auto"`` is ``colab`` when a CUDA GPU is available (e.g. a Colab GPU runtime), else ``smoke``.
    """
    if isinstance(name, Profile):
        return name
    if name is None:
        name = os.environ.get(PROFILE_ENV, "").strip() or "smoke"
    key = str(name).strip().lower()
    if key == "auto":
        import torch

        key = "colab" if torch.cuda.is_available() else "smoke"
    if key not in PROFILES:
        raise ConfigError(
            f"unknown profile {name!r}: choose one of {sorted(PROFILES)} or 'auto' "
            f"(set {PROFILE_ENV} or pass setup(profile=...))"
        )
    return PROFILES[key]
