"""One call at the top of every chapter: :func:`setup`.

``setup`` seeds every random number generator, picks the device, selects the
profile (``smoke``, ``laptop``, ``colab`` or ``paper``), applies the book's figure
style and prints a short block saying what produced the numbers that follow.
The active session is remembered so that library calls can default to its
profile and device (:func:`current`).
"""
from __future__ import annotations

import os
import platform
import random
from dataclasses import dataclass

import numpy as np
import torch

from .errors import ConfigError
from .profiles import PROFILE_ENV, Profile, get_profile

__all__ = ["Session", "setup", "current", "seed_everything", "pick_device", "cpu_threads", "default_seed", "env_number",
           "THREADS_ENV", "SEED_ENV"]

#: Environment variable that sets the number of CPU threads torch uses (see :func:`setup`).
THREADS_ENV = "CIFS_THREADS"
#: Environment variable that sets the book's seed (see :func:`setup` and :func:`default_seed`).
SEED_ENV = "CIFS_SEED"


@dataclass(frozen=True)
class Session:
    """What :func:`setup` chose: the profile, the device and the seed."""

    profile: Profile
    device: torch.device
    seed: int

    def __str__(self) -> str:
        return f"Session(profile={self.profile.name!r}, device={self.device}, seed={self.seed})"


_CURRENT: Session | None = None


def seed_everything(seed: int) -> None:
    """Seed Python's ``random``, NumPy and torch (CPU and every CUDA device)."""
    if not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def default_seed() -> int:
    """The seed of a session that names none: ``CIFS_SEED`` if set, else 0.

    The seed reaches every model the chapters train (``zoo`` recipes take the session's seed,
    and it is part of each run's cache key) and every random choice a chapter makes, so
    ``CIFS_SEED=3 make book`` builds the whole book from a second, independent set of models.

    Raises:
        ConfigError: ``CIFS_SEED`` is set but is not an integer >= 0.
    """
    seed = env_number(SEED_ENV, int, 0, hint="unset it for the default seed 0")
    return 0 if seed is None else seed


def env_number(name: str, kind: type = int, minimum: float = 0, *, hint: str = "") -> int | float | None:
    """The number in environment variable ``name`` (``None`` when unset or empty).

    Raises:
        ConfigError: the value is not a ``kind`` (int or float) >= ``minimum``; the message names
            the variable and the value (and ``hint``, the fix, if given).
    """
    raw = os.environ.get(name, "").strip()
    if not raw:
        return None
    try:
        value = kind(raw)
    except ValueError:
        value = None
    if value is None or value != value or value < minimum:  # also NaN
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{name} must be {what} >= {minimum:g}, got {raw!r}" + (f" ({hint})" if hint else ""))
    return value


def pick_device(profile: Profile, device: str | torch.device | None = None) -> tuple[torch.device, str | None]:
    """Return ``(device, hint)``: CUDA when available (or asked for), else CPU.

    ``hint`` is a sentence for the reader when the profile expects a GPU that is
    not there (the run still proceeds on the CPU, slowly, and says so).
    """
    if device is not None:
        dev = torch.device(device)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(
                "device='cuda' was requested but torch.cuda.is_available() is False. "
                "Install a CUDA build of torch, or in Colab choose Runtime > Change runtime type > GPU."
            )
        return dev, None
    if profile.device == "cpu":
        return torch.device("cpu"), None
    if torch.cuda.is_available():
        return torch.device("cuda"), None
    hint = None
    if profile.device == "cuda":
        hint = (
            f"profile {profile.name!r} expects a GPU but none was found: running on the CPU will be very slow. "
            "In Colab choose Runtime > Change runtime type > T4 GPU; elsewhere install a CUDA build of torch, "
            f"or pick a CPU profile with {PROFILE_ENV}=smoke or laptop."
        )
    return torch.device("cpu"), hint


def apply_figure_style() -> None:
    """The book's matplotlib style: readable fonts, light grid, fixed colours per model family."""
    import matplotlib as mpl
    from cycler import cycler

    from .plots import PALETTE

    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 3.6),
            "figure.dpi": 100,
            "savefig.dpi": 120,
            "savefig.bbox": "tight",
            "axes.grid": True,
            "grid.alpha": 0.3,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.fontsize": 9,
            "legend.frameon": False,
            "axes.prop_cycle": cycler(color=list(PALETTE.values())),
        }
    )


def cpu_threads(profile: Profile, threads: int | None = None) -> int | None:
    """How many CPU threads torch should use; ``None`` keeps torch's default.

    Order: the ``threads`` argument, then ``CIFS_THREADS``, then the profile's
    :attr:`~cifs_edu.profiles.Profile.threads` (one for ``smoke``; see there why).
    """
    if threads is None:
        threads = env_number(THREADS_ENV, int, 1)
        if threads is None:
            threads = profile.threads
    if threads is not None and threads < 1:
        raise ValueError(f"threads must be a positive integer, got {threads!r}")
    return threads


def setup(
    profile: str | None = None,
    seed: int | None = None,
    *,
    device: str | None = None,
    threads: int | None = None,
    quiet: bool = False,
) -> Session:
    """Prepare a chapter or script and print what will produce its numbers.

    Args:
        profile: ``"smoke"``, ``"laptop"``, ``"colab"`` or ``"paper"``; ``"auto"`` picks ``colab``
            when a CUDA GPU is available (e.g. a Colab GPU runtime) and ``smoke`` otherwise. ``None``
            reads the ``CIFS_PROFILE`` environment variable, and falls back to ``"smoke"`` (with a
            printed hint when a GPU is there to use).
        seed: seeds Python, NumPy and torch, and is the seed of every model the chapters load
            through :mod:`cifs_edu.zoo`. ``None`` reads ``CIFS_SEED`` and falls back to 0
            (see :func:`default_seed`).
        device: force ``"cpu"`` or ``"cuda"``; ``None`` picks CUDA when the profile wants it and it exists.
        threads: CPU threads for torch; ``None`` reads ``CIFS_THREADS``, else 1 for ``smoke``
            (fastest for its tiny models) and torch's default otherwise (see :func:`cpu_threads`).
        quiet: skip the printed block.

    Returns:
        The :class:`Session` (also available later through :func:`current`).
    """
    global _CURRENT
    asked = profile if profile is not None else (os.environ.get(PROFILE_ENV, "").strip() or None)
    prof = get_profile(profile)
    if asked is None and prof.is_synthetic and device is None and torch.cuda.is_available():
        hint = ("a CUDA GPU is available: cifs_edu.setup(profile='colab') (or 'auto') trains the "
                "CIFAR-10 models of the colab profile on it; smoke runs on synthetic data")
    else:
        hint = None
    if seed is None:
        seed = default_seed()
    seed_everything(seed)
    dev, device_hint = pick_device(prof, device)
    hint = device_hint or hint
    n_threads = cpu_threads(prof, threads)
    if n_threads is not None:
        torch.set_num_threads(n_threads)
    if dev.type == "cpu":
        # Results on the CPU are bit-reproducible given the seed.
        _deterministic_algorithms()
    apply_figure_style()
    _CURRENT = Session(profile=prof, device=dev, seed=seed)
    if not quiet:
        print(describe(_CURRENT))
        if hint:
            print("HINT:", hint)
    return _CURRENT


def _deterministic_algorithms() -> None:
    """``torch.use_deterministic_algorithms(True, warn_only=True)``, without its import of ``torch._inductor``.

    That import (it sets ``torch._inductor.config.deterministic``, which only ``torch.compile``
    reads) takes about 2 s, a large part of a chapter's start-up. When inductor is not loaded yet
    only the global switch is set; when it is, the public call sets both.
    """
    import sys

    if "torch._inductor.config" in sys.modules:
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch._C._set_deterministic_algorithms(True, warn_only=True)


def describe(session: Session) -> str:
    """The short block :func:`setup` prints: versions, device, profile."""
    from ._version import __version__

    if session.device.type == "cuda":
        dev = f"cuda ({torch.cuda.get_device_name(session.device)})"
    else:
        dev = f"cpu ({torch.get_num_threads()} threads)"
    p = session.profile
    return "\n".join(
        [
            f"cifs_edu {__version__} | torch {torch.__version__} | Python {platform.python_version()}",
            f"device  : {dev}",
            f"profile : {p.name} ({p.summary()}); seed {session.seed}",
        ]
    )


def current() -> Session:
    """The session from the last :func:`setup` call (a quiet default session if there was none)."""
    global _CURRENT
    if _CURRENT is None:
        prof = get_profile(os.environ.get(PROFILE_ENV) or None)
        dev, _ = pick_device(prof)
        _CURRENT = Session(profile=prof, device=dev, seed=default_seed())
    return _CURRENT
