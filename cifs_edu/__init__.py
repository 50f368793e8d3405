"""cifs_edu: teach, reproduce and stress-test CIFS (Yan et al., ICML 2021).

Start every script or chapter with::

    import cifs_edu
    session = cifs_edu.setup()          # or setup(profile="laptop"), or CIFS_PROFILE=paper

Library map (each module is named after the paper's concept it implements):

- :mod:`cifs_edu.profiles` -- the ``smoke`` / ``laptop`` / ``colab`` / ``paper`` switch;
- :mod:`cifs_edu.runtime` -- :func:`setup`, seeding, device choice;
- :mod:`cifs_edu.paper` -- the paper's tables, printed beside a run's numbers.
"""
from __future__ import annotations

__version__ = "0.1.0"

from .profiles import PROFILES, ConfigError, Profile, get_profile
from .runtime import Session, current, setup

__all__ = [
    "__version__",
    "setup",
    "current",
    "Session",
    "Profile",
    "PROFILES",
    "get_profile",
    "ConfigError",
]
