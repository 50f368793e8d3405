"""The paper's numbers, ready to print beside a run's.

Every numeric table of Yan et al. (ICML 2021) is shipped with the package
(``cifs_edu/data/paper_tables.json``), so a chapter or the CLI can show
"paper" next to "this run" without retyping numbers.
"""
from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources
from typing import Any, Mapping

__all__ = ["paper_tables", "paper_table", "paper_settings", "comparison"]


@lru_cache(maxsize=1)
def paper_tables() -> dict:
    """All tables of the paper as a dict keyed like ``"table1_cifar10_resnet18_last"``."""
    text = resources.files("cifs_edu").joinpath("data/paper_tables.json").read_text()
    return json.loads(text)


def paper_table(key: str) -> dict:
    """One table: ``{"caption": str, "rows": {row: {column: value}}}``.

    Raises:
        KeyError: with the list of known keys when ``key`` is unknown.
    """
    tables = paper_tables()
    if key not in tables or key == "settings":
        known = sorted(k for k in tables if k != "settings")
        raise KeyError(f"unknown paper table {key!r}; known tables: {known}")
    return tables[key]


def paper_settings() -> dict:
    """The experimental settings of Appendices B-D (datasets, schedules, attacks)."""
    return paper_tables()["settings"]


def comparison(run: Mapping[str, Mapping[str, float]], paper_key: str, profile_name: str,
               columns: list[str] | None = None, *, paper_rows: Mapping[str, Any] | None = None):
    """A table with the run's numbers next to the paper's, one row per (model, source).

    Args:
        run: ``{row: {column: accuracy in %}}`` from this run.
        paper_key: key of :func:`paper_table`.
        profile_name: the profile that produced ``run`` (shown in every row label).
        columns: column order; defaults to the paper table's columns.
        paper_rows: the paper's rows in the run's layout, when they need reshaping first (e.g. a
            beta sweep flattened to one row per beta); default: :func:`paper_table`'s rows.

    Returns:
        A ``pandas.DataFrame`` indexed by (model, source); missing cells are NaN.
    """
    import pandas as pd

    if paper_rows is None:
        paper_rows = paper_table(paper_key)["rows"]
    if columns is None:
        columns = []
        for row in list(paper_rows.values()) + list(run.values()):
            if isinstance(row, Mapping):
                columns += [c for c in row if c not in columns]
    records, index = [], []
    for name in dict.fromkeys(list(run) + list(paper_rows)):
        for source, rows in ((f"this run ({profile_name})", run), ("paper", paper_rows)):
            if name in rows and isinstance(rows[name], Mapping):
                index.append((name, source))
                records.append({c: rows[name].get(c) for c in columns})
    frame = pd.DataFrame.from_records(records, columns=columns)
    frame.index = pd.MultiIndex.from_tuples(index, names=["model", "source"])
    return frame
