"""One lock per run folder, so that two processes never train or evaluate the same run at once.

The book build trains the chapters' models in worker processes while chapter kernels already
run; a chapter that asks for a model still being trained must wait for it and then load it,
not start a second training into the same folder. :func:`run_lock` gives that: an exclusive
lock (``filelock.FileLock``, a ``flock`` on Unix) on ``<runs>/.locks/<run name>.lock`` (outside
the run folder), held by :func:`~cifs_edu.training.load_or_train`,
:func:`~cifs_edu.training.train` and :func:`~cifs_edu.training.evaluate_run`. A process that
waits logs one line saying so (a warning; only INFO inside the book build, where a chapter's page
must not depend on timing).

- Re-entrant within a thread (``load_or_train`` -> ``train`` takes the lock once); another thread
  of the same process waits like another process.
- Released when the holder ends, however it ends (the operating system drops ``flock`` locks
  of a dead process), so a killed run never leaves a stale lock behind.
- Skipped where the lock file cannot be created (a read-only folder) and under ``torchrun``
  (every rank trains the same run together): there, do not run two copies of one run at once.
"""
from __future__ import annotations

import contextlib
import logging
import os
from pathlib import Path
from typing import Iterator

from filelock import FileLock, Timeout

__all__ = ["run_lock", "lock_path"]

log = logging.getLogger(__name__)
_locks: dict[str, FileLock] = {}  # one per lock file; FileLock counts re-entries per thread


def lock_path(run_dir: str | Path) -> Path:
    """The lock file of ``run_dir``: ``<parent>/.locks/<folder name>.lock``."""
    run_dir = Path(run_dir).absolute()
    return run_dir.parent / ".locks" / f"{run_dir.name}.lock"


def _distributed() -> bool:
    if int(os.environ.get("WORLD_SIZE", "1") or 1) > 1:
        return True
    import torch.distributed as td

    return td.is_available() and td.is_initialized()


@contextlib.contextmanager
def run_lock(run_dir: str | Path) -> Iterator[None]:
    """Hold the exclusive lock of ``run_dir`` for the ``with`` block (waits while another process holds it)."""
    if _distributed():
        yield
        return
    path = lock_path(run_dir)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = _locks.setdefault(str(path), FileLock(path))
        try:
            lock.acquire(timeout=0)
        except Timeout:
            # a warning for people; only INFO inside the book build, whose pages must not change with timing
            level = logging.INFO if os.environ.get("CIFS_BOOK_BUILD") == "1" else logging.WARNING
            log.log(level, "waiting for another process working on run %s", Path(run_dir).name)
            lock.acquire()
    except OSError as e:  # e.g. a read-only folder of someone else's checkpoints: nothing to coordinate
        log.debug("no lock for %s (%s)", run_dir, e)
        yield
        return
    try:
        yield
    finally:
        lock.release()
