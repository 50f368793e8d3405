"""Named models shared by the book's chapters: one recipe name, one cached run per profile.

>>> from cifs_edu import zoo
>>> run = zoo.load("cifs_at")            # trains once per profile, then loads from the cache
>>> run.model, run.metrics["last"]       # doctest: +SKIP

Every recipe is a set of :class:`~cifs_edu.training.TrainConfig` overrides applied on top of the
active profile (``cifs_edu.setup(profile=...)`` or ``CIFS_PROFILE``), so the chapters and the
table rows of :mod:`cifs_edu.experiments` that mean the same model get the same cache key and
share one run folder. All recipes use the paper's defaults unless named otherwise: ResNet-18
(narrowed by the profile's ``width``), CIFS at P1 and P2, a linear probe at P1 and an MLP probe
at P2, top-2 classes, softmax IMGF with T = 1, beta = 2 (Eq. 3), PGD-AT with the profile's
steps. :func:`cifs_edu.engine.prepare.prepare` trains every model of :func:`book_plan` ahead of
the chapters, several processes at a time.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .profiles import Profile, get_profile
from .training import TrainConfig, TrainResult, load_or_train

__all__ = ["RECIPES", "ABLATIONS", "SWEPT", "SWEEP_ATTACKS", "config", "load", "describe", "ablation",
           "PlanItem", "book_plan"]

#: recipe name -> (TrainConfig overrides, one-line description)
RECIPES: dict[str, tuple[dict[str, Any], str]] = {
    "standard": ({"defense": "none", "method": "standard"}, "ResNet-18, standard (non-adversarial) training"),
    "vanilla_at": ({"defense": "none", "method": "pgd_at"}, "ResNet-18, PGD adversarial training (Madry et al.)"),
    "cas_at": ({"defense": "cas", "method": "pgd_at"}, "ResNet-18 with CAS layers at P1 and P2, PGD-AT"),
    "cifs_at": ({"defense": "cifs", "method": "pgd_at"}, "ResNet-18 with CIFS (softmax IMGF, T=1) at P1 and P2, PGD-AT"),
    "cifs_sigmoid": (
        {"defense": "cifs", "method": "pgd_at", "model_options": {"imgf": "sigmoid", "alpha": 10.0}},
        "CIFS with the sigmoid IMGF (alpha=10), PGD-AT",
    ),
    "cifs_softplus": (
        {"defense": "cifs", "method": "pgd_at", "model_options": {"imgf": "softplus", "alpha": 5.0}},
        "CIFS with the softplus IMGF (alpha=5), PGD-AT",
    ),
    "vanilla_trades": ({"defense": "none", "method": "trades"}, "ResNet-18, TRADES (beta=6)"),
    "cifs_trades": ({"defense": "cifs", "method": "trades"}, "CIFS ResNet-18, TRADES (beta=6)"),
    "vanilla_fat": ({"defense": "none", "method": "fat"}, "ResNet-18, friendly adversarial training (FAT)"),
    "cifs_fat": ({"defense": "cifs", "method": "fat"}, "CIFS ResNet-18, friendly adversarial training (FAT)"),
}


def _profile_name(profile: str | Profile | None) -> str | Profile:
    if profile is not None:
        return profile
    from .runtime import current

    return current().profile


def _session_seed() -> int:
    from .runtime import current

    return current().seed


def config(name: str, profile: str | Profile | None = None, **overrides: Any) -> TrainConfig:
    """The :class:`TrainConfig` of recipe ``name`` on ``profile`` (default: the active session's).

    ``overrides`` change any field (e.g. ``beta=0.1`` or ``model_options={"k": 3}``; a given
    ``model_options`` is merged into the recipe's). The seed is the active session's
    (``cifs_edu.setup(seed=...)`` or ``CIFS_SEED``) unless ``seed`` is given.

    Raises:
        ConfigError: unknown recipe name, or an invalid override.
    """
    if name not in RECIPES:
        raise ConfigError(f"unknown model recipe {name!r}: choose one of {sorted(RECIPES)}")
    values = dict(RECIPES[name][0])
    if "model_options" in overrides:
        values["model_options"] = {**values.get("model_options", {}), **overrides.pop("model_options")}
    values.update(overrides)
    return TrainConfig.from_profile(_profile_name(profile), **values)


def load(name: str, profile: str | Profile | None = None, *, progress: bool = True, **overrides: Any) -> TrainResult:
    """Recipe ``name`` trained on ``profile``: loaded from the cache when finished, else trained
    (or resumed) once and cached (see :func:`cifs_edu.training.load_or_train`)."""
    return load_or_train(config(name, profile, **overrides), progress=progress)


def describe(name: str) -> str:
    """One line saying what recipe ``name`` is."""
    if name not in RECIPES:
        raise ConfigError(f"unknown model recipe {name!r}: choose one of {sorted(RECIPES)}")
    return RECIPES[name][1]


#: The single-field variants of ``cifs_at`` that the ablations chapter trains (Sec. 4.2, App. E):
#: name -> overrides of :func:`config` (``model_options`` merge into the recipe's).
ABLATIONS: dict[str, dict[str, Any]] = {
    "beta = 0.1": {"beta": 0.1},
    "P1 only": {"model_options": {"positions": ["P1"]}},
    "linear-linear": {"model_options": {"probes": "linear"}},
    "top-1": {"model_options": {"k": 1}},
}

#: Recipes whose beta_atk sweep the book runs (chapters 04 and 07), besides every ablation.
SWEPT: tuple[str, ...] = ("cifs_at", "cifs_sigmoid", "cifs_softplus", "cas_at")

#: The attacks of those sweeps (``evaluate_run(run_dir, SWEEP_ATTACKS, sweep=True, n=profile.sweep_images)``).
SWEEP_ATTACKS: tuple[str, ...] = ("natural", "fgsm", "pgd20")


def ablation(name: str, profile: str | Profile | None = None, **overrides: Any) -> TrainConfig:
    """The :class:`TrainConfig` of ablation ``name`` (a key of :data:`ABLATIONS`) on ``profile``
    (``overrides`` as in :func:`config`, e.g. ``seed``)."""
    if name not in ABLATIONS:
        raise ConfigError(f"unknown ablation {name!r}: choose one of {sorted(ABLATIONS)}")
    return config("cifs_at", profile, **{**ABLATIONS[name], **overrides})  # config() merges model_options


@dataclass(frozen=True)
class PlanItem:
    """One model the book needs: its name, its run and, if the book sweeps it, the sweep's spec."""

    name: str
    config: TrainConfig
    sweep_n: int | None = None
    sweep: bool = False


def book_plan(profile: str | Profile | None = None, seed: int | None = None) -> list[PlanItem]:
    """Every model the book's chapters train on ``profile`` with ``seed`` (default: the active
    session's, i.e. ``CIFS_SEED`` or 0), with the beta_atk sweeps they run.

    The chapters ask for exactly these runs (``zoo.load``, the ablations chapter's
    variants) and sweeps (``evaluate_run(..., SWEEP_ATTACKS, sweep=True,
    n=profile.sweep_images)``), so after :func:`prepare` they all come from the cache.
    Swept models come first (they take longest).
    """
    prof = get_profile(_profile_name(profile))
    seed = _session_seed() if seed is None else seed
    items = [PlanItem(name, config(name, prof, seed=seed), prof.sweep_images, True) for name in SWEPT]
    items += [PlanItem(f"ablation: {name}", ablation(name, prof, seed=seed), prof.sweep_images, True)
              for name in ABLATIONS]
    items += [PlanItem(name, config(name, prof, seed=seed)) for name in RECIPES if name not in SWEPT]
    return items
