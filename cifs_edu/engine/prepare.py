"""Train the book's models ahead of its chapters, several processes at a time: :func:`prepare`.

Machinery, not computation: each model is trained exactly as :func:`cifs_edu.zoo.load` would train
it (same config, same seed), so the weights do not depend on ``jobs`` or on the order; the chapters
then load every run from the cache. Switched on by ``python -m cifs_edu prepare --jobs N`` (``make
models``) and by the book build (``book/_ext/cifs_bookexec.py``).
"""
from __future__ import annotations

import time
from typing import Any, Callable

from ..errors import ConfigError
from ..profiles import Profile, get_profile
from ..zoo import SWEEP_ATTACKS, PlanItem, _profile_name, _session_seed, book_plan

__all__ = ["prepare"]


def _prepare_one(item: PlanItem, threads: int | None) -> dict[str, Any]:
    """Train (or load) one plan item and run its sweep; returns timings (runs in a worker process)."""
    import torch

    from ..training import evaluate_run, load_or_train, run_dir_for
    from .runlock import run_lock

    if threads is not None:
        torch.set_num_threads(threads)
    t0 = time.perf_counter()
    with run_lock(run_dir_for(item.config)):  # a chapter asking for this run meanwhile waits for the sweep too
        result = load_or_train(item.config, progress=False)
        t1 = time.perf_counter()
        if item.sweep:
            evaluate_run(result.run_dir, list(SWEEP_ATTACKS), sweep=True, n=item.sweep_n, progress=False)
    return {"name": item.name, "run": result.config.run_name, "trained_epochs": result.trained_epochs,
            "train_s": round(t1 - t0, 1), "sweep_s": round(time.perf_counter() - t1, 1)}


def prepare(profile: str | Profile | None = None, jobs: int = 1, *, threads: int | None = None,
            seed: int | None = None, log: Callable[[str], None] | None = print,
            on_done: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Train every model of :func:`book_plan` and run its sweeps, ``jobs`` at a time.

    The book's chapters then load everything from the cache. Runs and sweeps already in the
    cache cost only a load. Each worker is a separate process using ``threads`` CPU threads
    (default: the profile's policy, see :func:`cifs_edu.runtime.cpu_threads`: one for
    ``smoke``; otherwise the cores divided by ``jobs``), so ``jobs=2`` keeps both cores of a
    2-core machine busy. On a GPU profile all jobs share the one GPU: keep ``jobs=1`` there. Every run is seeded
    by its configuration, so the weights do not depend on ``jobs`` or on the order.

    Every run holds its lock (:func:`cifs_edu.engine.runlock.run_lock`) while it is trained
    and swept, so other processes (e.g. chapters already running) wait for it instead of
    training it a second time. ``on_done`` is called with each item's dict as it finishes.

    Returns:
        one dict per plan item: name, run folder name, epochs trained now, seconds spent
        training (or loading) and sweeping.

    Raises:
        ConfigError: ``jobs`` < 1; any error of a run (data missing, bad checkpoint) is re-raised.
    """
    from ..runtime import cpu_threads

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ConfigError(f"jobs must be an integer >= 1 (got {jobs!r})")
    prof = get_profile(_profile_name(profile))
    threads = cpu_threads(prof, threads)
    if threads is None and jobs > 1:  # share the cores instead of oversubscribing them
        import os

        threads = max(1, (os.cpu_count() or 1) // jobs)
    seed = _session_seed() if seed is None else seed
    plan = book_plan(prof, seed)
    say = log or (lambda _msg: None)
    say(f"[prepare] {len(plan)} models of the book on profile {prof.name!r}, seed {seed}, {jobs} at a time")
    t0 = time.perf_counter()
    done: list[dict[str, Any]] = []

    def report(r: dict[str, Any]) -> None:
        done.append(r)
        if on_done is not None:
            on_done(r)
        what = f"trained {r['trained_epochs']} epochs" if r["trained_epochs"] else "from the cache"
        say(f"[prepare] {len(done):2d}/{len(plan)} {r['name']:24s} {what}, {r['train_s']:.0f} s"
            + (f" + sweep {r['sweep_s']:.0f} s" if r["sweep_s"] >= 0.5 else ""))

    if jobs == 1:
        for item in plan:
            report(_prepare_one(item, threads))
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor, as_completed

        with ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn")) as pool:
            futures = [pool.submit(_prepare_one, item, threads) for item in plan]
            try:
                for f in as_completed(futures):
                    report(f.result())
            except BaseException:  # first error (or Ctrl-C): start nothing new, re-raise
                for f in futures:
                    f.cancel()
                raise
    say(f"[prepare] done in {time.perf_counter() - t0:.0f} s")
    order = {item.name: i for i, item in enumerate(plan)}
    return sorted(done, key=lambda r: order[r["name"]])
