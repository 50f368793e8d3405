"""Timing and accuracy of the smoke / laptop profiles on this machine (scratch script, not a test).

    PYTHONPATH=. python scripts/engine_calibrate.py smoke
    PYTHONPATH=. python scripts/engine_calibrate.py laptop folder:/path/to/cifar10-sample

Trains a standard model, a vanilla PGD-AT model and a CIFS PGD-AT model with the profile
(into a temporary CIFS_HOME) and prints wall time, process CPU time / threads (a proxy for
the time on an unloaded machine), the training and evaluation times and the final metrics.
On a busy machine set CAL_THREADS=1: one thread's CPU time is then a fair measure of the work
(with 2 threads, OpenMP spin-waiting inflates CPU time under contention); 2 unloaded cores run
about 1.7x faster than one.
"""
import json
import os
import sys
import tempfile
import time

import torch

os.environ.setdefault("CIFS_HOME", tempfile.mkdtemp())
from cifs_edu.training import TrainConfig, train  # noqa: E402

profile = sys.argv[1] if len(sys.argv) > 1 else "smoke"
over = {"dataset": sys.argv[2]} if len(sys.argv) > 2 else {}
runs = [("none", "standard"), ("none", "pgd_at"), ("cifs", "pgd_at")]
if len(sys.argv) > 3:
    runs = [tuple(r.split("/")) for r in sys.argv[3].split(",")]
if os.environ.get("CAL_THREADS"):
    torch.set_num_threads(int(os.environ["CAL_THREADS"]))
threads = torch.get_num_threads()
for defense, method in runs:
    cfg = TrainConfig.from_profile(profile, defense=defense, method=method, **over)
    t, c = time.time(), time.process_time()
    r = train(cfg, progress=False)
    wall, cpu = time.time() - t, time.process_time() - c
    train_s = sum(h["time_s"] for h in r.history)
    print(json.dumps({
        "profile": profile, "defense": defense, "method": method, "wall_s": round(wall, 1),
        "threads": threads, "cpu_s": round(cpu, 1), "cpu_per_thread_s": round(cpu / threads, 1), "train_s": round(train_s, 1),
        "eval_s": round(r.metrics["eval_time_s"], 1), "last": r.metrics["last"], "best": r.metrics["best"],
        "best_epoch": r.metrics["best_epoch"],
        "val": [(h["val_clean"], h["val_pgd"]) for h in r.history],
    }), flush=True)
