"""Shared pytest fixtures and paths."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
CIFAR_SAMPLE = SHARED / "data" / "cifar10-sample"

# Tests never download anything and never use a user's cache.
os.environ.setdefault("MPLBACKEND", "Agg")


@pytest.fixture
def cifs_home(tmp_path, monkeypatch):
    """An empty CIFS_HOME (data and runs) private to one test."""
    monkeypatch.setenv("CIFS_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("CIFS_DATA", raising=False)
    monkeypatch.delenv("CIFS_RUNS", raising=False)
    return tmp_path / "home"


needs_cifar_sample = pytest.mark.skipif(
    not CIFAR_SAMPLE.is_dir(), reason="../shared/data/cifar10-sample is not present (fresh clone)"
)


if os.environ.get("PYTEST_XDIST_WORKER"):
    # pytest -n N: N processes share the cores; one torch thread each avoids oversubscription
    import torch

    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _default_session(monkeypatch):
    """Every test starts without a session and without CIFS_SEED (the session's seed feeds every
    config built from a profile, so a test's setup(seed=...) must not leak into the next test)."""
    from cifs_edu import runtime

    monkeypatch.delenv("CIFS_SEED", raising=False)
    monkeypatch.setattr(runtime, "_CURRENT", None)
