"""Checkpoints: atomic writes, weights-only payloads, corrupt and mismatched files, RNG states."""
from __future__ import annotations

import os
import random

import numpy as np
import pytest
import torch

from cifs_edu.engine.checkpoint import (
    CheckpointError, CheckpointMismatchError, atomic_torch_save, load_checkpoint, rng_state, set_rng_state, write_json,
    read_json,
)
from cifs_edu.training import load_model, load_or_train, train

from .test_train import tiny


@pytest.fixture
def stopped_run(cifs_home, tmp_path):
    """A 2-epoch run stopped after epoch 1 (last.pt, best.pt, history.jsonl; no results.json)."""
    cfg = tiny(defense="cifs", epochs=2)
    run = train(cfg, run_dir=tmp_path / "run", progress=False, max_epochs=1)
    return cfg, run


def test_checkpoint_payload_is_plain_and_complete(stopped_run):
    cfg, run = stopped_run
    path = run.run_dir / "last.pt"
    payload = load_checkpoint(path, kind="full")
    for key in ("model", "optimizer", "scheduler", "scaler", "rng", "history", "config", "epoch", "version", "best"):
        assert key in payload
    assert payload["epoch"] == 1 and payload["config"] == cfg.to_dict() and payload["key"] == cfg.key()
    assert payload["optimizer"]["state"]  # momentum buffers are saved
    assert all(t.device.type == "cpu" for t in payload["model"].values())
    # plain payload: loads with weights_only=True (allowing only MultiStepLR's Counter)
    import collections

    with torch.serialization.safe_globals([collections.Counter]):
        torch.load(path, map_location="cpu", weights_only=True)
    best = load_checkpoint(run.run_dir / "best.pt")
    assert best["kind"] == "weights" and "optimizer" not in best
    assert not [p for p in os.listdir(run.run_dir) if p.endswith(".tmp")]


def test_truncated_checkpoint_gives_clear_error(stopped_run):
    cfg, run = stopped_run
    path = run.run_dir / "last.pt"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=r"last\.pt.*corrupt.*delete"):
        train(cfg, run_dir=run.run_dir, progress=False)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="delete"):
        load_checkpoint(path)
    torch.save({"weights": torch.zeros(2)}, path)
    with pytest.raises(CheckpointError, match="not a cifs_edu checkpoint"):
        load_model(path)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(run.run_dir / "nope.pt")


def test_mismatched_checkpoint_lists_the_differences(stopped_run):
    cfg, run = stopped_run
    with pytest.raises(CheckpointMismatchError) as err:
        train(cfg.replace(lr=0.05, width=8), run_dir=run.run_dir, progress=False)
    text = str(err.value)
    assert "lr: checkpoint=0.1 requested=0.05" in text and "width" in text and "last.pt" in text
    # resume=False starts over instead
    fresh = train(cfg.replace(lr=0.05), run_dir=run.run_dir, progress=False, resume=False, max_epochs=1)
    assert fresh.trained_epochs == 1 and load_checkpoint(run.run_dir / "last.pt")["config"]["lr"] == 0.05


def test_weights_that_do_not_fit_raise_mismatch(stopped_run, tmp_path):
    cfg, run = stopped_run
    payload = load_checkpoint(run.run_dir / "best.pt")
    payload["config"] = cfg.replace(width=8).to_dict()  # the saved tensors are width 4
    atomic_torch_save(payload, tmp_path / "bad.pt")
    with pytest.raises(CheckpointMismatchError, match="do not fit"):
        load_model(tmp_path / "bad.pt")


def test_load_or_train_refuses_a_foreign_results_file(cifs_home, tmp_path):
    cfg = tiny()
    run = load_or_train(cfg, run_dir=tmp_path / "r", progress=False)
    results = read_json(run.run_dir / "results.json")
    results["config"]["lr"] = 0.5
    write_json(run.run_dir / "results.json", results)
    with pytest.raises(CheckpointMismatchError, match="lr"):
        load_or_train(cfg, run_dir=tmp_path / "r", progress=False)
    (run.run_dir / "results.json").write_text("{truncated")
    with pytest.raises(CheckpointError, match="not valid JSON"):
        load_or_train(cfg, run_dir=tmp_path / "r", progress=False)


def test_atomic_write_keeps_the_old_file_on_failure(tmp_path, monkeypatch):
    path = tmp_path / "x.pt"
    atomic_torch_save({"a": torch.ones(3)}, path)

    def broken(obj, f):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        atomic_torch_save({"a": torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(torch.load(path, weights_only=True)["a"], torch.ones(3))
    assert os.listdir(tmp_path) == ["x.pt"]


def test_rng_state_round_trip():
    state = rng_state()
    a = (random.random(), np.random.rand(), torch.rand(2))
    set_rng_state(state)
    b = (random.random(), np.random.rand(), torch.rand(2))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])


def test_load_model_rebuilds_last_and_best(stopped_run):
    cfg, run = stopped_run
    last = load_model(run.run_dir)
    assert not last.training and last.train_config == cfg and last.defense == "cifs"
    sd = load_checkpoint(run.run_dir / "last.pt")["model"]
    assert all(torch.equal(v, last.state_dict()[k]) for k, v in sd.items())
    assert load_model(run.run_dir / "best.pt").checkpoint_epoch == 1
    x = torch.rand(2, 3, 32, 32)
    assert last(x).shape == (2, 10)
