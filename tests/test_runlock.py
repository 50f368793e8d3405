"""The run lock: two processes asking for one run train it once; evaluations wait for a run in progress."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cifs_edu.engine.runlock import lock_path, run_lock

pytestmark = pytest.mark.skipif(os.name != "posix", reason="flock locks (POSIX only)")

ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, cifs_home: Path, *args: Path) -> subprocess.Popen:
    env = {**os.environ, "CIFS_HOME": str(cifs_home), "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, seconds: float = 60) -> None:
    t0 = time.monotonic()
    while not path.exists():
        assert time.monotonic() - t0 < seconds, f"{path} never appeared"
        time.sleep(0.05)


def test_lock_file_lives_beside_the_run_folder(tmp_path):
    assert lock_path(tmp_path / "runs" / "smoke-x") == tmp_path / "runs" / ".locks" / "smoke-x.lock"


def test_lock_is_reentrant_in_one_thread(tmp_path):
    with run_lock(tmp_path / "run"):
        with run_lock(tmp_path / "run"):  # would deadlock if it took a second flock
            pass
    assert (tmp_path / ".locks" / "run.lock").is_file()


def test_second_process_waits_for_the_holder(tmp_path):
    held, released = tmp_path / "held", tmp_path / "released"
    holder = _python(f"""
        import time
        from pathlib import Path
        from cifs_edu.engine.runlock import run_lock
        with run_lock({str(tmp_path / 'run')!r}):
            Path({str(held)!r}).touch()
            time.sleep(1.5)
            Path({str(released)!r}).touch()
        """, tmp_path)
    try:
        _wait_for(held)
        with run_lock(tmp_path / "run"):
            assert released.exists(), "entered the lock while the other process held it"
    finally:
        out, err = holder.communicate(timeout=60)
    assert holder.returncode == 0, err


def test_a_lock_dies_with_its_process(tmp_path):
    held = tmp_path / "held"
    holder = _python(f"""
        import os, time
        from pathlib import Path
        from cifs_edu.engine.runlock import run_lock
        with run_lock({str(tmp_path / 'run')!r}):
            Path({str(held)!r}).touch()
            time.sleep(60)
        """, tmp_path)
    _wait_for(held)
    holder.kill()
    holder.wait(timeout=30)
    t0 = time.monotonic()
    with run_lock(tmp_path / "run"):
        assert time.monotonic() - t0 < 5


def test_two_processes_asking_for_one_run_train_it_once(tmp_path):
    """The book's situation: prepare trains a run while a chapter asks for it: the chapter loads it."""
    code = """
        import json, sys, time, torch
        from pathlib import Path
        torch.set_num_threads(1)
        from cifs_edu.training import TrainConfig, load_or_train
        me, other = Path(sys.argv[1]), Path(sys.argv[2])
        me.touch()
        while not other.exists():  # start together, so that without the lock both would train
            time.sleep(0.01)
        cfg = TrainConfig.from_profile("smoke", n_train=64, n_val=32, n_test=32, eval_n=32, width=4, epochs=2,
                                       batch_size=32, milestones=(), train_steps=1, val_steps=2,
                                       eval_attacks=("natural",), eval_batch_size=32)
        r = load_or_train(cfg, progress=False)
        print(json.dumps({"trained": r.trained_epochs, "natural": r.metrics["last"]["natural"]}))
        """
    a, b = tmp_path / "ready-a", tmp_path / "ready-b"
    procs = [_python(code, tmp_path, a, b), _python(code, tmp_path, b, a)]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs.append(out.strip().splitlines()[-1])
    import json

    results = [json.loads(o) for o in outs]
    assert sorted(r["trained"] for r in results) == [0, 2]  # one trained both epochs, the other loaded it
    assert results[0]["natural"] == results[1]["natural"]


def test_evaluate_run_waits_only_for_the_same_evaluation(cifs_home):
    """One evaluation in progress elsewhere: the same spec waits for its result, another spec does not."""
    import json
    import threading

    from cifs_edu.training import TrainConfig, evaluate_run, load_or_train

    cfg = TrainConfig.from_profile("smoke", n_train=64, n_val=32, n_test=32, eval_n=32, width=4, epochs=1,
                                   batch_size=32, milestones=(), train_steps=1, val_steps=2,
                                   eval_attacks=("natural",), eval_batch_size=32)
    run = load_or_train(cfg, progress=False)
    first = evaluate_run(run.run_dir, ["natural"], n=8, progress=False)
    out = Path(first["path"])
    out.unlink()
    held, other_done, seen = threading.Event(), threading.Event(), {}

    def other_process():  # a thread holds the lock as another process would (a separate flock)
        with run_lock(out.with_suffix("")):
            held.set()
            seen["other finished while held"] = other_done.wait(60)
            time.sleep(0.5)  # the same-spec call below is waiting now
            out.write_text(json.dumps({**first, "accuracy": {"natural": 123.0}}))

    t = threading.Thread(target=other_process)
    t.start()
    held.wait(10)
    other = evaluate_run(run.run_dir, ["natural"], n=16, progress=False)  # another spec: not blocked
    other_done.set()
    same = evaluate_run(run.run_dir, ["natural"], n=8, progress=False)   # waits, then reads the result
    t.join()
    assert seen["other finished while held"]
    assert same["accuracy"]["natural"] == 123.0 and other["spec"]["n"] == 16
