"""cifs_edu: teach, reproduce and stress-test CIFS (Yan et al., ICML 2021).

Start every script or chapter with::

    import cifs_edu
    session = cifs_edu.setup()          # or setup(profile="laptop"), or CIFS_PROFILE=paper

Library map (each module is named after the paper's concept it implements):

- :mod:`cifs_edu.profiles` -- the ``smoke`` / ``laptop`` / ``colab`` / ``paper`` switch;
- :mod:`cifs_edu.runtime` -- :func:`setup`, seeding, device choice;
- :mod:`cifs_edu.models` -- ResNet-18/10 and WRN-28-10 with optional CIFS or CAS layers;
- :mod:`cifs_edu.cifs` -- probes, relevance (Eq. 1), IMGFs and the CIFS layer (Eq. 2);
- :mod:`cifs_edu.cas` -- the CAS baseline (Bai et al., 2021);
- :mod:`cifs_edu.losses` -- the adaptive loss (Eq. 3);
- :mod:`cifs_edu.datasets` -- CIFAR-10, SVHN, Fashion-MNIST, image folders and the synthetic data;
- :mod:`cifs_edu.synthetic` -- the embedded offline data set of the smoke profile;
- :mod:`cifs_edu.attacks` -- FGSM, PGD, C&W, AutoAttack, the beta_atk sweep, robust accuracy;
- :mod:`cifs_edu.evaluate` -- attack names and ``evaluate_model``: name -> accuracy (+/- the beta_atk sweep);
- :mod:`cifs_edu.analysis` -- channel-wise activations (Fig. 1), per-class and top-k accuracy;
- :mod:`cifs_edu.training` -- PGD-AT, TRADES, FAT; :class:`TrainConfig`, :func:`train`, :func:`load_or_train`;
- :mod:`cifs_edu.zoo` -- the named models the chapters share (``zoo.load("cifs_at")``);
- :mod:`cifs_edu.report` -- :func:`robustness_report`: the gradient-masking checklist, best known attack;
- :mod:`cifs_edu.experiments` -- the configs behind each paper table, the ``train`` command of a row, GPU-hour estimates;
- :mod:`cifs_edu.reference` -- the committed reference run on real CIFAR-10 (its loader and tables);
- :mod:`cifs_edu.paper` -- the paper's tables, printed beside a run's numbers.

Beside the core: :mod:`cifs_edu.engine` (speed paths, run folders, checkpoints, locks) and
:mod:`cifs_edu.tools` (the command line ``python -m cifs_edu``, ``reproduce`` and the reference-run program).
"""
from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .errors import ConfigError

#: Where each top-level name lives. Nothing below is imported until it is used, so
#: ``from cifs_edu.cifs import CIFSLayer`` loads the CIFS layer and what it needs, not the whole library.
_HOME = {
    "CW": "attacks", "FGSM": "attacks", "PGD": "attacks", "AutoAttack": "attacks", "robust_accuracy": "attacks",
    "sweep": "attacks", "CASLayer": "cas", "CIFSConfig": "cifs", "CIFSLayer": "cifs",
    "DataNotFoundError": "datasets", "DataSplits": "datasets", "as_tensors": "datasets", "class_counts": "datasets",
    "load_data": "datasets", "BETA_SWEEP": "losses", "adaptive_loss": "losses", "build_model": "models",
    "count_parameters": "models", "load_authors_state_dict": "models", "load_backbone_state_dict": "models",
    "mask_grad": "models", "ModelOutput": "outputs", "PROFILES": "profiles", "Profile": "profiles",
    "get_profile": "profiles", "Session": "runtime", "current": "runtime", "setup": "runtime",
    "TrainConfig": "training", "TrainResult": "training", "load_model": "training", "load_or_train": "training",
    "train": "training", "RobustnessReport": "report", "compare_reports": "report", "robustness_report": "report",
}


def _lazy_names(package: str, homes: dict[str, str], submodules: bool = False):
    """PEP 562 ``__getattr__`` and ``__dir__`` for a package whose public names load on first use.

    ``homes`` maps a name to the module it lives in, relative to ``package`` (``"pgd"``, ``"..losses"``);
    the first access imports that module and caches the value on the package. With ``submodules``, any
    other name is tried as a submodule (``cifs_edu.zoo``). Used by this package, ``attacks`` and ``models``.
    """
    import sys

    def __getattr__(name: str) -> Any:
        if name in homes:
            home = homes[name]
            value = getattr(importlib.import_module(home if home.startswith(".") else "." + home, package), name)
            setattr(sys.modules[package], name, value)
            return value
        if submodules:
            try:
                return importlib.import_module(f".{name}", package)
            except ModuleNotFoundError as e:
                if e.name != f"{package}.{name}":
                    raise
        raise AttributeError(f"module {package!r} has no attribute {name!r}") from None

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(homes))

    return __getattr__, __dir__


#: Import a top-level name (or a submodule, e.g. ``cifs_edu.zoo``) on first use.
__getattr__, __dir__ = _lazy_names(__name__, _HOME, submodules=True)


__all__ = [
    "__version__",
    "setup",
    "current",
    "Session",
    "Profile",
    "PROFILES",
    "get_profile",
    "ConfigError",
    "build_model",
    "mask_grad",
    "count_parameters",
    "load_authors_state_dict",
    "load_backbone_state_dict",
    "CIFSConfig",
    "CIFSLayer",
    "CASLayer",
    "adaptive_loss",
    "BETA_SWEEP",
    "ModelOutput",
    "FGSM",
    "PGD",
    "CW",
    "AutoAttack",
    "sweep",
    "robust_accuracy",
    "load_data",
    "as_tensors",
    "class_counts",
    "DataSplits",
    "DataNotFoundError",
    "TrainConfig",
    "TrainResult",
    "train",
    "load_or_train",
    "load_model",
    "robustness_report",
    "RobustnessReport",
    "compare_reports",
    "zoo",
]
