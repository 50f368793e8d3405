"""Execution time of the book: each chapter under nbval, and the cold ``jupyter-book build``.

- :func:`run_chapters`: every ``book/*.ipynb`` is executed by
  ``pytest <chapter> --nbval --nbval-current-env`` (what ``make notebooks`` does), first with
  an empty ``CIFS_HOME`` (cold: trained runs and data caches must be made) and then again
  with the same one (warm: what a reader's second run costs), in the given profile.
- :func:`run_book_build`: the cold build, in a temporary copy of the working tree (tracked and
  untracked, not ignored files) with an empty ``CIFS_HOME``: plain ``jupyter-book build book/``,
  whose extension (`book/_ext/cifs_bookexec.py`) trains the models two processes at a time and starts
  the chapters while the last models train. ``prepare_jobs=N`` runs
  ``python -m cifs_edu prepare --jobs N`` first, as a separately timed step (no overlap).

Both are slow: :mod:`benchmarks.run` runs them only when asked (``--only chapters,book``).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .timing import load_average

__all__ = ["ROOT", "chapter_notebooks", "run_chapters", "run_book_build"]

ROOT = Path(__file__).resolve().parents[1]


def chapter_notebooks(root: Path = ROOT) -> list[Path]:
    """The book's notebooks, in file-name order."""
    return sorted((root / "book").glob("*.ipynb"))


def _env(root: Path, home: str, profile: str, threads: int | None) -> dict[str, str]:
    env = dict(os.environ)
    env["CIFS_HOME"] = home
    env.pop("CIFS_DATA", None)
    env.pop("CIFS_RUNS", None)
    env["CIFS_PROFILE"] = profile
    env["PYTHONPATH"] = os.pathsep.join([str(root)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    return env


def _timed(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float) -> tuple[float, int, str]:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
        rc, out = p.returncode, (p.stdout + p.stderr)
    except subprocess.TimeoutExpired as e:
        rc = -9
        out = ((e.stdout or b"").decode(errors="replace") if isinstance(e.stdout, bytes) else (e.stdout or "")) + "\nTIMEOUT"
    return time.perf_counter() - t0, rc, out[-2000:]


def run_chapters(root: Path = ROOT, profile: str = "smoke", warm: bool = True, cell_timeout: int = 900,
                 timeout: float = 3600, threads: int | None = None, log=print) -> list[dict]:
    """Time each chapter under nbval (cold, then warm) in ``profile``; one row per run and a total."""
    rows = []
    total = {"cold": 0.0, "warm": 0.0}
    ok = True
    notebooks = chapter_notebooks(root)
    for nb in notebooks:
        home = tempfile.mkdtemp(prefix="cifs_home_")
        try:
            env = _env(root, home, profile, threads)
            cmd = [sys.executable, "-m", "pytest", str(nb.relative_to(root)), "--nbval", "--nbval-current-env",
                   f"--nbval-cell-timeout={cell_timeout}", "-p", "no:cacheprovider", "-q"]
            for phase in ("cold", "warm") if warm else ("cold",):
                load = load_average()
                secs, rc, out = _timed(cmd, root, env, timeout)
                total[phase] += secs
                ok = ok and rc == 0
                rows.append({"benchmark": "chapters", "case": f"{nb.stem} {phase}", "chapter": nb.name, "phase": phase,
                             "profile": profile, "n": 1, "median_s": secs, "min_s": secs, "max_s": secs,
                             "returncode": rc, "passed": rc == 0, "load_average": load,
                             "output_tail": out if rc != 0 else out[-300:]})
                log(f"[chapters] {nb.name} ({phase}, {profile}): {secs:.1f} s, {'passed' if rc == 0 else f'FAILED rc={rc}'}")
        finally:
            shutil.rmtree(home, ignore_errors=True)
    for phase, secs in total.items():
        if phase == "warm" and not warm:
            continue
        rows.append({"benchmark": "chapters", "case": f"all chapters {phase}", "chapter": "*", "phase": phase,
                     "profile": profile, "n": 1, "median_s": secs, "min_s": secs, "max_s": secs,
                     "chapters": len(notebooks), "passed": ok})
        log(f"[chapters] all {len(notebooks)} chapters ({phase}): {secs:.1f} s")
    return rows


def _copy_worktree(root: Path, dest: Path) -> None:
    """Copy the tracked and untracked (not ignored) files of the git working tree ``root`` to ``dest``."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, files):
        src = root / rel
        if not src.exists() and not src.is_symlink():
            continue  # deleted in the working tree
        out = dest / rel
        out.parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), out)
        elif src.is_file():
            shutil.copy2(src, out)


def run_book_build(root: Path = ROOT, profile: str = "smoke", timeout: float = 3600, threads: int | None = None,
                   prepare_jobs: int = 0, log=print) -> list[dict]:
    """Time a cold ``jupyter-book build book/`` (after ``prepare --jobs N`` if ``prepare_jobs``) in a temporary copy."""
    exe = Path(sys.executable).parent / "jupyter-book"
    build = [str(exe) if exe.exists() else "jupyter-book", "build", "book/"]
    prepare = [sys.executable, "-m", "cifs_edu", "prepare", "--jobs", str(prepare_jobs)]
    rows = []
    with tempfile.TemporaryDirectory(prefix="cifs_book_") as tmp:
        copy = Path(tmp) / "repo"
        _copy_worktree(root, copy)
        home = Path(tmp) / "home"
        home.mkdir()
        env = _env(copy, str(home), profile, threads)
        steps = ([(f"cold prepare --jobs {prepare_jobs}", prepare)] if prepare_jobs > 0 else []) + [
            ("jupyter-book build book/" + (" after prepare" if prepare_jobs > 0 else ", cold"), build)]
        total, ok = 0.0, True
        for case, cmd in steps:
            load = load_average()
            secs, rc, out = _timed(cmd, copy, env, timeout)
            total += secs
            ok = ok and rc == 0
            log(f"[book] {case} ({profile}): {secs:.1f} s, {'ok' if rc == 0 else f'FAILED rc={rc}'}")
            rows.append({"benchmark": "book", "case": case, "profile": profile, "n": 1, "median_s": secs,
                         "min_s": secs, "max_s": secs, "returncode": rc, "passed": rc == 0, "load_average": load,
                         "output_tail": out[-1500:]})
            if rc != 0:
                break
    log(f"[book] cold book build, total ({profile}): {total:.1f} s")
    rows.append({"benchmark": "book", "case": "cold book build (total)", "profile": profile, "n": 1,
                 "median_s": total, "min_s": total, "max_s": total, "passed": ok})
    return rows
