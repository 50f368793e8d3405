"""Where cifs_edu keeps downloaded datasets and trained runs.

=============  ==========================================  ===============================
variable       default                                     holds
=============  ==========================================  ===============================
CIFS_HOME      ``~/.cache/cifs_edu``                        everything below
CIFS_DATA      ``$CIFS_HOME/data``                          torchvision downloads
CIFS_RUNS      ``$CIFS_HOME/runs``                          checkpoints, histories, results
=============  ==========================================  ===============================
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["home_dir", "data_dir", "runs_dir"]


def home_dir() -> Path:
    """``CIFS_HOME`` or ``~/.cache/cifs_edu`` (respecting ``XDG_CACHE_HOME``)."""
    env = os.environ.get("CIFS_HOME")
    if env:
        return Path(env).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "cifs_edu"


def data_dir() -> Path:
    """Folder for datasets: ``CIFS_DATA`` or ``$CIFS_HOME/data``."""
    env = os.environ.get("CIFS_DATA")
    return Path(env).expanduser() if env else home_dir() / "data"


def runs_dir() -> Path:
    """Folder for trained runs: ``CIFS_RUNS`` or ``$CIFS_HOME/runs``."""
    env = os.environ.get("CIFS_RUNS")
    return Path(env).expanduser() if env else home_dir() / "runs"
