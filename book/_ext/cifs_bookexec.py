"""Sphinx extension of the book: train the chapters' models, then run the chapters N at a time.

This is the book's build machinery, not part of the library: ``_config.yml`` loads it from
``book/_ext`` (``sphinx.local_extensions``). It uses the library (``cifs_edu.engine.prepare.prepare``); no
library module imports it.

Jupyter Book 1 executes notebooks one after another in one process (its CLI fixes Sphinx to
one job), which leaves all but one core idle. The book's ``_config.yml`` loads this extension
and sets ``execute_notebooks: cache``. Just before Sphinx reads the pages it is about to
(re)build, the extension

1. trains every model the chapters load (:func:`cifs_edu.engine.prepare.prepare`, ``jobs`` processes;
   nothing to do when they are cached), and
2. executes exactly those chapters, ``jobs`` kernels at a time, and stores each executed
   notebook in the build's jupyter-cache, where myst-nb finds it when it reads the page.

The two overlap: a chapter starts as soon as a training process has no model left to start
(a chapter that needs a model still in training waits for it on the run's lock,
:mod:`cifs_edu.engine.runlock`), so no core idles while the last models finish.

So every chapter Sphinx reads is executed afresh, as ``execute_notebooks: force`` would do,
only in parallel. A chapter that raises does not stop the others: every page is written, the
failed chapter's page opens with a box saying that it failed and showing the error, each failure
is a Sphinx warning, and the build names the failed chapters at its end and exits non-zero
(with or without ``-W``). Pages that
Sphinx does not re-read (unchanged sources) are not executed, as with ``force``; delete
``_build`` (or ``make clean``) for a full rebuild.

Settings (environment variables, read when the build starts):

- ``CIFS_BOOK_JOBS``: processes for training and kernels for the chapters
  (default: 2, or 1 on a one-core machine); ``1`` still pre-executes, one chapter at a time.
- ``CIFS_BOOK_CHAPTER_TIMEOUT``: seconds after which a chapter run counts as stuck and is
  restarted once in a fresh kernel (default 180 in ``smoke``, none otherwise; see
  :func:`chapter_limit`).
- ``CIFS_BOOK_PREPARE=0``: skip step 1 (the chapters then train what they need themselves).
- ``CIFS_BOOK_EXECUTE=0``: skip both steps and leave execution to myst-nb (one chapter at a
  time, through the cache), e.g. to debug a chapter with myst-nb's own messages.

Outside Sphinx, :func:`execute_notebooks` runs the same parallel execution on any list
of notebook files.
"""
from __future__ import annotations

import contextlib
import os
import time
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from cifs_edu.plots import BOOK_BUILD_ENV
from cifs_edu.runtime import env_number

__all__ = ["setup", "execute_notebooks", "show_failure", "cell_errors", "book_jobs", "chapter_limit",
           "JOBS_ENV", "EXECUTE_ENV", "PREPARE_ENV", "CHAPTER_TIMEOUT_ENV", "BOOK_BUILD_ENV"]

JOBS_ENV = "CIFS_BOOK_JOBS"
EXECUTE_ENV = "CIFS_BOOK_EXECUTE"
PREPARE_ENV = "CIFS_BOOK_PREPARE"
CHAPTER_TIMEOUT_ENV = "CIFS_BOOK_CHAPTER_TIMEOUT"
# BOOK_BUILD_ENV: set to ``1`` in every chapter kernel this module starts (read by cifs_edu.plots.interact)


def book_jobs() -> int:
    """Processes/kernels the book build uses: ``CIFS_BOOK_JOBS``, else 2 (1 on a one-core machine)."""
    jobs = env_number(JOBS_ENV, int, 1)
    return max(1, min(2, os.cpu_count() or 1)) if jobs is None else jobs


def _execute_one(nb_json: str, cwd: str, timeout: int | None, allow_errors: bool) -> dict[str, Any]:
    """Execute one notebook (nbformat JSON) in a fresh kernel; never raises (errors are returned)."""
    import nbformat
    from jupyter_cache.executors.utils import single_nb_execution

    t0 = time.perf_counter()
    nb = nbformat.reads(nb_json, as_version=4)
    try:
        result = single_nb_execution(nb, cwd=cwd, timeout=timeout, allow_errors=allow_errors, meta_override=True)
        error = None
        if result.err is not None:
            error = result.exc_string or "".join(traceback.format_exception(result.err))
    except Exception:  # e.g. DeadKernelError: reported like a failing cell
        error = traceback.format_exc()
    return {"nb": nbformat.writes(nb), "seconds": time.perf_counter() - t0, "error": error}


def _worker(nb_json: str, cwd: str, timeout: int | None, allow_errors: bool, conn) -> None:
    """Process entry: a new session, so that a stuck chapter is killed together with its kernel."""
    os.setsid()
    os.environ[BOOK_BUILD_ENV] = "1"  # kernels inherit it: cifs_edu.plots.interact draws no live widgets
    conn.send(_execute_one(nb_json, cwd, timeout, allow_errors))
    conn.close()


def _kill_tree(pid: int) -> None:
    """SIGKILL a worker and its kernels. A kernel runs in a session of its own (jupyter_client starts
    it so), so the worker's process group does not include it: it is killed by its own group. The
    worker is stopped first (it can start no kernel while its children are listed) and killed by
    pid as well as by group (a worker still starting up has not called ``setsid`` yet)."""
    import signal
    import subprocess

    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, signal.SIGSTOP)
    try:
        import psutil

        children = [c.pid for c in psutil.Process(pid).children(recursive=True)]
    except ImportError:
        res = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        children = [int(v) for v in res.stdout.split()]
    except Exception:  # noqa: BLE001 -- the worker is already gone
        children = []
    for child in children:
        for kill in (os.killpg, os.kill):  # the kernel's whole group if it leads one, else the process
            with contextlib.suppress(ProcessLookupError, PermissionError):
                kill(child, signal.SIGKILL)
    for kill in (os.killpg, os.kill):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            kill(pid, signal.SIGKILL)


def chapter_limit() -> float | None:
    """Wall-clock limit of one chapter run (``CIFS_BOOK_CHAPTER_TIMEOUT`` seconds; 0 = none).

    Default: 180 s in the ``smoke`` profile, whose chapters take at most about a minute (a chapter over
    it is stuck: e.g. a kernel that stops answering, which ipykernel 7 does now and then), and no
    limit otherwise (the per-cell ``timeout`` of ``_config.yml`` still applies).
    """
    limit = env_number(CHAPTER_TIMEOUT_ENV, float, 0, hint="seconds; 0 = no limit")
    if limit is None:
        from cifs_edu.profiles import get_profile

        return 180.0 if get_profile(None).name == "smoke" else None
    return limit or None


def execute_notebooks(notebooks: Sequence[tuple[str, Any, Path]], jobs: int, *, timeout: int | None = None,
                      allow_errors: bool = False, limit: float | None = None, retries: int = 1,
                      log: Callable[[str], None] = print,
                      capacity: Callable[[], int] | None = None,
                      stop_on_error: bool = True) -> dict[str, dict[str, Any]]:
    """Execute notebooks ``jobs`` at a time, each in its own process and kernel (working directory: its folder).

    Args:
        notebooks: ``(name, notebook node, source path)`` triples, started in this order (put the
            longest first).
        jobs: kernels at once; timeout: seconds per cell (``None``: no limit).
        limit: wall seconds per notebook run (``None``: none). A run over it is killed with its
            kernel and started again in a fresh one, up to ``retries`` times, then reported as failed.
        capacity: called before starting a notebook; at most ``min(jobs, capacity())`` run at
            once (the book build gives the cores still training models to those models). An
            exception it raises stops everything (running notebooks are killed) and propagates.

        stop_on_error: after the first failure start nothing new (running ones finish);
            ``False`` runs every notebook whatever happens to the others.

    Returns:
        ``{name: {"nb": executed notebook node, "seconds": float, "error": traceback or None,
        "attempts": int}}`` for every notebook that ran.
    """
    import multiprocessing as mp

    import nbformat

    ctx = mp.get_context("spawn")
    queue = [(name, nbformat.writes(nb), str(path.parent), 1) for name, nb, path in notebooks]
    running: list[dict[str, Any]] = []
    try:
        return _run_queue(queue, running, ctx, jobs, timeout, allow_errors, limit, retries, log, capacity,
                          stop_on_error)
    finally:  # an exception (capacity, Ctrl-C): no orphaned kernels
        for job in running:
            _kill_tree(job["proc"].pid)
            job["proc"].join(timeout=5)


def _run_queue(queue: list, running: list, ctx, jobs: int, timeout: int | None, allow_errors: bool,
               limit: float | None, retries: int, log: Callable[[str], None],
               capacity: Callable[[], int] | None, stop_on_error: bool = True) -> dict[str, dict[str, Any]]:
    import nbformat

    out: dict[str, dict[str, Any]] = {}
    failed = False
    while queue or running:
        allowed = max(1, jobs) if capacity is None else min(max(1, jobs), capacity())
        while queue and not failed and len(running) < allowed:
            name, nb_json, cwd, attempt = queue.pop(0)
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_worker, args=(nb_json, cwd, timeout, allow_errors, send), name=f"book-{name}")
            proc.start()
            send.close()
            running.append({"name": name, "nb": nb_json, "cwd": cwd, "attempt": attempt, "proc": proc,
                            "conn": recv, "t0": time.perf_counter()})
        if failed:
            queue.clear()
        time.sleep(0.1)
        for job in list(running):
            name, proc, elapsed = job["name"], job["proc"], time.perf_counter() - job["t0"]
            result = None
            answered = job["conn"].poll()
            if answered:
                with contextlib.suppress(EOFError):  # EOF: the process ended without an answer
                    result = job["conn"].recv()
            if result is None and (answered or not proc.is_alive()):
                proc.join(timeout=5)
                result = {"nb": job["nb"], "seconds": elapsed, "error": f"the process running {name} died "
                          f"(exit code {proc.exitcode})"}
            elif result is None and limit is not None and elapsed > limit:
                _kill_tree(proc.pid)  # the worker and its kernel
                if job["attempt"] <= retries:
                    log(f"[book] {name} still running after {elapsed:.0f} s (limit {limit:.0f} s): killed, "
                        f"starting it again in a fresh kernel")
                    queue.insert(0, (name, job["nb"], job["cwd"], job["attempt"] + 1))
                else:
                    result = {"nb": job["nb"], "seconds": elapsed, "error": f"{name} did not finish within "
                              f"{limit:.0f} s in {job['attempt']} attempts"}
            elif result is None:
                continue
            running.remove(job)
            proc.join(timeout=5)
            job["conn"].close()
            if result is None:
                continue
            result["nb"] = nbformat.reads(result["nb"], as_version=4)
            result["attempts"] = job["attempt"]
            out[name] = result
            log(f"[book] executed {name} in {result['seconds']:.1f} s" + (" (FAILED)" if result["error"] else "")
                + (f" (attempt {job['attempt']})" if job["attempt"] > 1 else ""))
            failed = stop_on_error and (failed or result["error"] is not None)
    return out


class _PrepareFailed(RuntimeError):
    """Training the book's models failed (raised into the chapter loop, then reported by the build)."""


class _Preparer:
    """:func:`cifs_edu.engine.prepare.prepare` in a background thread, sharing the cores with the chapters.

    ``capacity()`` is the number of chapter kernels that may run beside its ``jobs`` training
    processes: none while every process has a model to train, one more for each process that
    has run out of work (all models are then started, so a chapter never trains one itself;
    one that asks for a model still in training waits on the run's lock), all once it is done.
    """

    def __init__(self, jobs: int, log: Callable[[str], None]) -> None:
        import threading

        from cifs_edu import zoo

        self.jobs, self.log = jobs, log
        self.total = len(zoo.book_plan())
        self.finished = 0
        self.error: BaseException | None = None
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, name="cifs-book-prepare", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        from cifs_edu.engine import prepare as engine_prepare

        try:
            engine_prepare.prepare(jobs=self.jobs, log=self.log, on_done=self._one_done)
        except BaseException as e:  # noqa: BLE001 -- handed to the main thread by capacity()
            self.error = e
        finally:
            self.done.set()

    def _one_done(self, _result: dict[str, Any]) -> None:
        self.finished += 1

    def capacity(self) -> int:
        if self.error is not None:
            raise _PrepareFailed(f"training the book's models failed: {type(self.error).__name__}: {self.error}") \
                from self.error
        if self.done.is_set():
            return self.jobs
        return max(0, self.jobs - (self.total - self.finished))

    def join(self) -> None:
        self.thread.join()


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
    preparer = _Preparer(jobs, say) if os.environ.get(PREPARE_ENV, "1").strip() != "0" else None
    # the chapters that took longest in the last measured build start first
    order = {name: i for i, name in enumerate(_SLOWEST_FIRST)}
    todo.sort(key=lambda t: (order.get(Path(t[0]).name, -1), t[0]))
    say(f"[book] executing {len(todo)} chapters, {jobs} at a time"
        + (" (the first as soon as a core is free of training)" if preparer else ""))
    try:
        results = execute_notebooks(todo, jobs, timeout=nb_config.execution_timeout,
                                    allow_errors=True, limit=chapter_limit(), log=say,
                                    capacity=preparer.capacity if preparer else None, stop_on_error=False)
    except _PrepareFailed as e:
        raise ExtensionError(str(e)) from e.__cause__
    finally:
        if preparer is not None:
            preparer.join()
    if preparer is not None and preparer.error is not None:  # failed after the last chapter had started
        raise ExtensionError(f"training the book's models failed: {preparer.error!r}") from preparer.error
    cache = get_cache(nb_config.execution_cache_path or ".jupyter_cache")
    failed = getattr(app, "cifs_failed_chapters", {})
    env.cifs_failed_chapters = set(getattr(env, "cifs_failed_chapters", set())) - {doc for doc, _nb, _p in todo}
    for doc, _nb, path in todo:
        r = results[doc]
        nb = r["nb"]
        if not nb_config.execution_allow_errors:  # cells ran past errors so that the page is complete
            r["error"] = r["error"] or cell_errors(nb)
        if r["error"]:
            failed[doc] = r["error"]
            env.cifs_failed_chapters.add(doc)  # read (and run) again by the next build, even if unchanged
            nb = show_failure(nb, doc, r["error"])
            logger.warning(f"[book] chapter {doc} failed while executing (its page shows the error):\n{r['error']}")
        cache.cache_notebook_bundle(CacheBundleIn(nb, str(path), data={"execution_seconds": r["seconds"]}),
                                    check_validity=False, overwrite=True)
    app.cifs_failed_chapters = failed
    say(f"[book] models and chapters ready in {time.perf_counter() - t0:.0f} s"
        + (f"; {len(failed)} chapter(s) FAILED: {', '.join(sorted(failed))}" if failed else ""))


def cell_errors(nb) -> str | None:
    """The errors that cells of an executed notebook raised (one line each), or ``None``.

    A cell tagged ``raises-exception`` shows an error on purpose (myst-nb's convention): not counted.
    """
    lines = []
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        if "raises-exception" in cell.get("metadata", {}).get("tags", []):
            continue
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                first = next((ln for ln in cell.source.splitlines() if ln.strip()), "")
                lines.append(f"code cell {i + 1} ({first[:60]!r}) raised {out['ename']}: {out['evalue']}")
    return "\n".join(lines) or None


def show_failure(nb, name: str, error: str):
    """The executed notebook ``nb`` with a box at the top of its page saying that it failed, and why.

    The box is an output of the first code cell (the cache matches notebooks by their code cells,
    so no cell can be added); the failing cell keeps its own error output too.
    """
    import html

    import nbformat

    first = next((c for c in nb.cells if c.cell_type == "code"), None)
    if first is None:
        return nb
    text = f"This chapter failed while the book was built: its claims or outputs cannot be trusted.\n\n{error}"
    box = ('<div class="admonition error"><p class="admonition-title">Chapter failed: '
           f'{html.escape(name)}</p><pre>{html.escape(error)}</pre></div>')
    first.outputs = [nbformat.v4.new_output("display_data", data={"text/html": box, "text/plain": text}),
                     *first.get("outputs", [])]
    return nb


def _failed_are_outdated(app, env, added, changed, removed) -> list[str]:
    """``env-get-outdated``: chapters that failed in the last build are read and executed again."""
    return sorted(set(getattr(env, "cifs_failed_chapters", set())) - set(removed))


def _report_failures(app, exception) -> None:
    """``build-finished``: name every chapter that failed, as the build's last words, and exit non-zero."""
    from sphinx.util import logging

    failed = getattr(app, "cifs_failed_chapters", {})
    if not failed or exception is not None:
        return
    logging.getLogger(__name__).warning(
        f"[book] {len(failed)} chapter(s) failed while executing: {', '.join(sorted(failed))} "
        "(every other page was built; the failed pages show the error)")
    app.statuscode = 1


#: chapters by decreasing execution time (measured, smoke profile), so the pool ends evenly
_SLOWEST_FIRST = ("09_reproducing", "05_adaptive_attacks", "06_is_it_real", "01_adversarial_training",
                  "04_training_cifs", "02_channels", "07_ablations", "08_other_schemes", "03_building_cifs",
                  "03_cifs_from_scratch", "00_how_to_use")


def setup(app) -> dict[str, Any]:
    """Register the hook (Sphinx entry point; listed under ``sphinx.extra_extensions`` in ``_config.yml``)."""
    app.connect("env-before-read-docs", _before_read)
    app.connect("build-finished", _report_failures)
    app.connect("env-get-outdated", _failed_are_outdated)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
