"""A run folder is ours, or we do not touch it.

:func:`~cifs_edu.training.train` writes ``last.pt``, ``best.pt``, ``history.jsonl``,
``results.json``, evaluations under ``eval/`` and a marker file ``.cifs_edu_run``. Before any work
it checks the folder it was given (:func:`check_run_dir`): a file, an unwritable place, or an
existing folder holding anything else (a user's own files) is refused with one message. Starting
over (``resume=False``, ``train --no-resume``) deletes only the files listed here
(:func:`clear_run`), never the folder or anything else in it.
"""
from __future__ import annotations

import json
import os
import re
from pathlib import Path

from ..errors import ConfigError

__all__ = ["MARKER", "RUN_FILES", "check_run_dir", "mark_run_dir", "clear_run"]

#: The marker file that says a folder is a cifs_edu run.
MARKER = ".cifs_edu_run"
#: Every top-level entry a run folder may hold (runs of earlier versions lack the marker).
RUN_FILES = ("last.pt", "best.pt", "history.jsonl", "results.json", "eval", MARKER)
_EVAL_FILE = re.compile(r"^(last|best)-[0-9a-f]{10}\.json$")


def _writable_ancestor(path: Path) -> Path:
    """The nearest existing folder at or above ``path``."""
    p = path
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_run_dir(run_dir: str | os.PathLike) -> None:
    """Raise :class:`ConfigError` unless ``run_dir`` can be a run folder: absent (and creatable),
    empty, or a cifs_edu run (its marker, or only files a run writes), and writable."""
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"run folder {path} is a file, not a folder: choose another --run-dir / run_dir")
    if path.is_dir():
        entries = sorted(e.name for e in path.iterdir())
        foreign = [e for e in entries if e not in RUN_FILES]
        if foreign and MARKER not in entries:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise ConfigError(f"run folder {path} already holds files that cifs_edu did not write ({shown}): "
                              "it is not a cifs_edu run, and nothing in it is touched. Choose a new or empty folder")
    where = _writable_ancestor(path)
    if not os.access(where, os.W_OK | os.X_OK):
        raise ConfigError(f"cannot write the run folder {path}: {where} is not writable. Choose a writable "
                          "--run-dir, or set CIFS_HOME (or CIFS_RUNS) to a writable folder")


def mark_run_dir(run_dir: str | os.PathLike, key: str) -> None:
    """Create ``run_dir`` if needed and write its marker (the run's key)."""
    path = Path(run_dir)
    path.mkdir(parents=True, exist_ok=True)
    marker = path / MARKER
    if not marker.exists():
        marker.write_text(json.dumps({"cifs_edu_run": True, "key": key}) + "\n")


def clear_run(run_dir: str | os.PathLike) -> list[str]:
    """Delete what a run wrote in ``run_dir`` (checkpoints, history, results, its evaluations) and
    nothing else; returns the names deleted. ``eval/`` is removed only if that leaves it empty."""
    path = Path(run_dir)
    gone = []
    for name in ("last.pt", "best.pt", "history.jsonl", "results.json"):
        f = path / name
        if f.is_file():
            f.unlink()
            gone.append(name)
    ev = path / "eval"
    if ev.is_dir():
        for f in ev.iterdir():
            if f.is_file() and _EVAL_FILE.match(f.name):
                f.unlink()
                gone.append(f"eval/{f.name}")
        locks = ev / ".locks"
        if locks.is_dir() and all(_EVAL_FILE.match(f.stem + ".json") for f in locks.iterdir() if f.is_file()):
            for f in locks.iterdir():
                f.unlink()
            locks.rmdir()
        if not any(ev.iterdir()):
            ev.rmdir()
    return gone
