"""How a chapter states a fact about its own run: checked claims and glued numbers.

A chapter's prose may only say what its executed cells measured. Two small calls keep it so:

- :func:`claim` checks one labelled statement, e.g. ``claim("ch05/p2-probe-drop", drop, ">", 15)``:
  it raises :class:`AssertionError` naming the label, the measured value and the threshold when
  the statement is false (the chapter's hidden check fails, and so does ``make test``). With
  ``CIFS_CLAIMS_LOG`` set (``scripts/claims.py`` sets it) it also appends the result to that
  file as one JSON line and does not raise, so one run of a chapter reports every claim in it.
- :func:`glue` stores a number (or short text) in the executed notebook under a name, which the
  prose shows with the MyST role ``{glue:text}`name``` (myst-nb's glue, without needing myst-nb
  in the kernel: a Colab runtime shows nothing for it).

``scripts/claims.py`` (``make claims SEEDS="0 1 2 3 4"``) runs every chapter once per seed and
prints the table claim x seed.
"""
from __future__ import annotations

import json
import math
import operator
import os
from typing import Any, Callable

__all__ = ["claim", "glue", "CLAIMS_ENV", "CHAPTER_ENV", "OPS"]

#: File to which :func:`claim` appends its results (one JSON line each) instead of raising.
CLAIMS_ENV = "CIFS_CLAIMS_LOG"
#: Name of the chapter being run (written into each record; set by ``scripts/claims.py``).
CHAPTER_ENV = "CIFS_CLAIMS_CHAPTER"

#: The comparisons a claim may make.
OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq,
}

_GLUE_PREFIX = "application/papermill.record/"  # myst-nb's (and scrapbook's) glue format


def _number(value: Any, what: str, label: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"claim {label!r}: {what} must be a number (got {value!r})") from None
    return v


def claim(label: str, value: Any, op: str, threshold: Any, *, note: str = "") -> bool:
    """Check ``value op threshold`` (e.g. ``drop > 15``) for the claim named ``label``.

    Args:
        label: short, unique name, ``"<chapter>/<what>"``, e.g. ``"ch05/p2-probe-drop"``.
        value: the measured number (a float, an int, a 0-d tensor).
        op: one of ``>``, ``>=``, ``<``, ``<=``, ``==``.
        threshold: the number the claim compares with.
        note: what the numbers are (e.g. ``"points, 200 images"``), shown in the claims table.

    Returns:
        whether the claim holds.

    Raises:
        AssertionError: the claim is false (or the value is NaN), unless ``CIFS_CLAIMS_LOG`` is set.
        ValueError, TypeError: unknown ``op``, or a value that is not a number.
    """
    if op not in OPS:
        raise ValueError(f"claim {label!r}: op must be one of {sorted(OPS)} (got {op!r})")
    v, t = _number(value, "value", label), _number(threshold, "threshold", label)
    ok = not math.isnan(v) and bool(OPS[op](v, t))
    log = os.environ.get(CLAIMS_ENV, "").strip()
    if log:
        record = {"chapter": os.environ.get(CHAPTER_ENV, ""), "label": label, "value": v, "op": op,
                  "threshold": t, "ok": ok, "note": note}
        with open(log, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        return ok
    if not ok:
        raise AssertionError(f"claim {label!r} does not hold: measured {v:.6g}, needs {op} {t:.6g}"
                             + (f" ({note})" if note else ""))
    return ok


def glue(name: str, value: Any, fmt: str | None = None) -> None:
    """Store ``value`` in this cell's output under ``name`` for the prose (``{glue:text}`name```).

    ``fmt`` is a format spec applied first (e.g. ``".1f"``); without it the text is ``str(value)``.
    The page shows that text verbatim: it is stored as its ``repr``, because myst-nb reads a glued
    ``text/plain`` back with ``ast.literal_eval`` (a bare ``"[+0.2, +2.9]"`` would come back as the
    list ``[0.2, 2.9]``, ``"6.40, 6.23"`` as a tuple, ``"6.40"`` as ``6.4``).
    Nothing is shown in the notebook itself.
    """
    from IPython.display import display

    text = format(value, fmt) if fmt else str(value)
    display({_GLUE_PREFIX + "text/plain": repr(text)}, raw=True,
            metadata={"scrapbook": {"name": name, "mime_prefix": _GLUE_PREFIX}})
