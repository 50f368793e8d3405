"""DDP: ``torchrun --nproc_per_node=2 -m cifs_edu train`` (Gloo, CPU) matches one process."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from cifs_edu.engine import distributed as dist
from cifs_edu.training import load_model, train

from .conftest import ROOT
from .test_train import tiny

# the same run for both: 1 epoch, global batch 32 (16 per process with 2 processes). Standard training at
# lr 0.01: at lr 0.1 (or with PGD's sign()) 3 SGD steps amplify reduction-order noise to 1-3% of the
# weights' change, even between 1 and 2 threads of one process (measured), which would hide real bugs.
SETTINGS = dict(n_train=96, n_val=32, n_test=32, eval_n=32, width=4, epochs=1, batch_size=32, train_steps=1,
                val_steps=2, eval_every=1, eval_batch_size=32, milestones=[], eval_attacks=["natural", "pgd20"],
                method="standard", lr=0.01)


def test_single_process_helpers_are_no_ops():
    assert dist.info() == dist.DistInfo() and dist.is_main() and not dist.info().active
    t = torch.ones(2)
    assert dist.all_reduce_sum(t) is t and dist.broadcast_object(5) == 5
    dist.barrier()


def test_torchrun_two_gloo_processes_match_one_process(cifs_home, tmp_path):
    cfg = tiny(defense="cifs", **{k: (tuple(v) if isinstance(v, list) else v) for k, v in SETTINGS.items()})
    one = train(cfg, run_dir=tmp_path / "one", progress=False)

    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", CIFS_HOME=str(cifs_home))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m", "cifs_edu",
           "train", "--profile", "smoke", "--defense", "cifs", "--device", "cpu", "--no-progress", "--json",
           "--run-dir", str(tmp_path / "two")]
    for k, v in SETTINGS.items():
        cmd += ["--set", f"{k}={json.dumps(v)}"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    results = json.loads((tmp_path / "two" / "results.json").read_text())
    assert results["world_size"] == 2 and results["key"] == cfg.key()
    two = load_model(tmp_path / "two")
    # the same examples, crops and random starts per global batch, BatchNorm over the global batch:
    # only the order of floating-point reductions differs (which can flip the sign of a few tiny
    # input-gradient components in PGD). For scale: switching off augmentation moves the weights
    # by about 3% of their total change in this setting, per-process BatchNorm by about 3% too.
    sd1, sd2 = one.model.state_dict(), two.state_dict()
    init = cfg.build_model(3, 10).state_dict()
    moved = diff = 0.0
    for k, v in sd1.items():
        if v.is_floating_point() and "running" not in k:
            moved += (v - init[k]).pow(2).sum().item()
            diff += (v - sd2[k]).pow(2).sum().item()
    assert moved > 0
    assert diff ** 0.5 < 0.005 * moved ** 0.5, (diff ** 0.5, moved ** 0.5)
    for k, v in sd1.items():
        if "running" in k:
            assert torch.allclose(v, sd2[k], rtol=1e-2, atol=1e-3), k
    h1 = one.history[0]
    h2 = json.loads((tmp_path / "two" / "history.jsonl").read_text().splitlines()[0])
    assert h1["train_loss"] == pytest.approx(h2["train_loss"], rel=1e-3)
    assert h1["val_clean"] == h2["val_clean"]
    assert results["data"]["num_classes"] == 10
