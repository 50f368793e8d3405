"""Sphinx extension of the book: train the chapters' models, then run the chapters N at a time.

Jupyter Book 1 executes notebooks one after another in one process (its CLI fixes Sphinx to
one job), which leaves all but one core idle. The book's ``_config.yml`` loads this extension
and sets ``execute_notebooks: cache``. Just before Sphinx reads the pages it is about to
(re)build, the extension

1. trains every model the chapters load (:func:`cifs_edu.zoo.prepare`, ``jobs`` processes;
   nothing to do when they are cached), then
2. executes exactly those chapters, ``jobs`` kernels at a time, and stores each executed
   notebook in the build's jupyter-cache, where myst-nb finds it when it reads the page.

So every chapter Sphinx reads is executed afresh, as ``execute_notebooks: force`` would do,
only in parallel. A chapter that raises stops the build with its traceback. Pages that
Sphinx does not re-read (unchanged sources) are not executed, as with ``force``; delete
``_build`` (or ``make clean``) for a full rebuild.

Settings (environment variables, read when the build starts):

- ``CIFS_BOOK_JOBS``: processes for training and kernels for the chapters
  (default: 2, or 1 on a one-core machine); ``1`` still pre-executes, one chapter at a time.
- ``CIFS_BOOK_PREPARE=0``: skip step 1 (the chapters then train what they need themselves).
- ``CIFS_BOOK_EXECUTE=0``: skip both steps and leave execution to myst-nb (one chapter at a
  time, through the cache), e.g. to debug a chapter with myst-nb's own messages.

Outside Sphinx, :func:`execute_notebooks` runs the same parallel execution on any list
of notebook files.
"""
from __future__ import annotations

import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

__all__ = ["setup", "execute_notebooks", "book_jobs", "JOBS_ENV", "EXECUTE_ENV", "PREPARE_ENV"]

JOBS_ENV = "CIFS_BOOK_JOBS"
EXECUTE_ENV = "CIFS_BOOK_EXECUTE"
PREPARE_ENV = "CIFS_BOOK_PREPARE"


def book_jobs() -> int:
    """Processes/kernels the book build uses: ``CIFS_BOOK_JOBS``, else 2 (1 on a one-core machine)."""
    raw = os.environ.get(JOBS_ENV, "").strip()
    if not raw:
        return max(1, min(2, os.cpu_count() or 1))
    try:
        jobs = int(raw)
    except ValueError:
        jobs = 0
    if jobs < 1:
        raise ValueError(f"{JOBS_ENV} must be an integer >= 1, got {raw!r}")
    return jobs


def _execute_one(nb_json: str, cwd: str, timeout: int | None, allow_errors: bool) -> dict[str, Any]:
    """Execute one notebook (nbformat JSON) in a fresh kernel; runs in a worker process."""
    import nbformat
    from jupyter_cache.executors.utils import single_nb_execution

    nb = nbformat.reads(nb_json, as_version=4)
    t0 = time.perf_counter()
    result = single_nb_execution(nb, cwd=cwd, timeout=timeout, allow_errors=allow_errors, meta_override=True)
    error = None
    if result.err is not None:
        error = result.exc_string or "".join(traceback.format_exception(result.err))
    return {"nb": nbformat.writes(nb), "seconds": time.perf_counter() - t0, "error": error}


def execute_notebooks(notebooks: Sequence[tuple[str, Any, Path]], jobs: int, *, timeout: int | None = None,
                      allow_errors: bool = False, log: Callable[[str], None] = print) -> dict[str, dict[str, Any]]:
    """Execute notebooks ``jobs`` at a time, each in its own kernel (working directory: its folder).

    Args:
        notebooks: ``(name, notebook node, source path)`` triples; the longest-known chapters
            should come first (they are started in this order).
        jobs: kernels at once; timeout: seconds per cell (``None``: no limit).

    Returns:
        ``{name: {"nb": executed notebook node, "seconds": float, "error": traceback or None}}``;
        after the first error nothing new is started (the running ones finish).
    """
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import nbformat

    out: dict[str, dict[str, Any]] = {}
    if not notebooks:
        return out
    with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(_execute_one, nbformat.writes(nb), str(path.parent), timeout, allow_errors): name
                   for name, nb, path in notebooks}
        for fut in as_completed(futures):
            name = futures[fut]
            r = fut.result()
            r["nb"] = nbformat.reads(r["nb"], as_version=4)
            out[name] = r
            log(f"[book] executed {name} in {r['seconds']:.1f} s" + (" (FAILED)" if r["error"] else ""))
            if r["error"]:
                for f in futures:
                    f.cancel()
    return out


def _before_read(app, env, docnames: list[str]) -> None:
    """``env-before-read-docs``: prepare the models, then execute the pages about to be read."""
    from sphinx.errors import ExtensionError
    from sphinx.util import logging

    logger = logging.getLogger(__name__)
    nb_config = env.mystnb_config
    if os.environ.get(EXECUTE_ENV, "1").strip() == "0" or nb_config.execution_mode != "cache":
        return
    from jupyter_cache import get_cache
    from jupyter_cache.base import CacheBundleIn
    from myst_nb.core.read import create_nb_reader

    todo = []
    for doc in sorted(docnames):
        path = Path(env.doc2path(doc))
        text = path.read_text(encoding="utf8")
        reader = create_nb_reader(str(path), env.myst_config, nb_config, text)
        if reader is None:  # a plain markdown page
            continue
        nb = reader.read(text)
        if any(c.cell_type == "code" for c in nb.cells):
            todo.append((doc, nb, path))
    if not todo:
        return
    jobs = book_jobs()
    say = logger.info
    t0 = time.perf_counter()
    if os.environ.get(PREPARE_ENV, "1").strip() != "0":
        from . import zoo

        zoo.prepare(jobs=jobs, log=say)
    # the chapters that took longest in the last measured build start first
    order = {name: i for i, name in enumerate(_SLOWEST_FIRST)}
    todo.sort(key=lambda t: (order.get(Path(t[0]).name, -1), t[0]))
    say(f"[book] executing {len(todo)} chapters, {jobs} at a time")
    results = execute_notebooks(todo, jobs, timeout=nb_config.execution_timeout,
                                allow_errors=nb_config.execution_allow_errors, log=say)
    failed = [name for name, r in results.items() if r["error"]]
    if failed:
        raise ExtensionError(f"chapter {failed[0]} failed while executing:\n{results[failed[0]]['error']}")
    cache = get_cache(nb_config.execution_cache_path or ".jupyter_cache")
    for doc, _nb, path in todo:
        r = results[doc]
        cache.cache_notebook_bundle(CacheBundleIn(r["nb"], str(path), data={"execution_seconds": r["seconds"]}),
                                    check_validity=False, overwrite=True)
    say(f"[book] models and chapters ready in {time.perf_counter() - t0:.0f} s")


#: chapters by decreasing execution time (measured, smoke profile), so the pool ends evenly
_SLOWEST_FIRST = ("09_reproducing", "05_adaptive_attacks", "06_is_it_real", "01_adversarial_training",
                  "04_training_cifs", "02_channels", "07_ablations", "08_other_schemes", "03_building_cifs",
                  "00_how_to_use")


def setup(app) -> dict[str, Any]:
    """Register the hook (Sphinx entry point; listed under ``sphinx.extra_extensions`` in ``_config.yml``)."""
    app.connect("env-before-read-docs", _before_read)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
