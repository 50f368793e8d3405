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

from ._version import __version__
from .attacks import CW, FGSM, PGD, AutoAttack, robust_accuracy, sweep
from .cas import CASLayer
from .cifs import CIFSConfig, CIFSLayer
from .datasets import DataNotFoundError, DataSplits, as_tensors, class_counts, load_data
from .losses import BETA_SWEEP, adaptive_loss
from .models import build_model, count_parameters, load_authors_state_dict, load_backbone_state_dict, mask_grad
from .outputs import ModelOutput
from .errors import ConfigError
from .profiles import PROFILES, Profile, get_profile
from .runtime import Session, current, setup
from .training import TrainConfig, TrainResult, load_model, load_or_train, train
from .report import RobustnessReport, compare_reports, robustness_report
from . import zoo

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
