"""Reproduce a paper table: train (or load) every row's model, evaluate it with the table's attacks,
print and save the comparison with the paper (``python -m cifs_edu reproduce``).

The tables themselves (rows, attacks, the configuration of every row at every profile) are
:mod:`cifs_edu.experiments`'; this is the program that runs them.

>>> from cifs_edu.tools.reproduce import reproduce
>>> reproduce("tableE2_positions", "smoke")        # trains (once), evaluates, prints  # doctest: +SKIP
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from ..errors import ConfigError
from ..experiments import Table, _table, table_attacks, table_configs
from ..profiles import get_profile

__all__ = ["reproduce", "ReproduceResult"]


@dataclass
class ReproduceResult:
    """Outcome of :func:`reproduce`: ``run`` numbers, the comparison ``frame`` and the JSON path."""

    key: str
    profile: str
    run: dict[str, Any]
    frame: Any
    path: Path
    runs: dict[str, str]

    def __repr__(self) -> str:
        return f"ReproduceResult({self.key}, profile={self.profile}, rows={list(self.run)}, json={self.path})"


def _topk(model, config, data, progress):
    from ..attacks import topk_accuracy
    from ..evaluate import build_attack

    n = config.eval_n or data.x_test.shape[0]
    x, y = data.x_test[:n], data.y_test[:n]
    out = {}
    for name in ("fgsm", "pgd20"):
        atk = build_attack(name, model, eps=config.eps, adaptive=config.adaptive, beta_atk=config.beta)
        acc = topk_accuracy(model, (x, y), atk, ks=(1, 2, 3), batch_size=config.eval_batch_size, progress=progress)
        out[name] = {f"top{k}": v for k, v in acc.items()}
    return out


def _feedback(model, config, data, progress):
    """Table 5's CIFS/CIFS and CIFS/Final: PGD-20 on the P2 probe alone (the paper's inf-1, see
    :data:`cifs_edu.losses.PAPER_LAYER_LABELS`); read the probe and the final output."""
    import torch

    from ..attacks import PGD

    n = config.eval_n or data.x_test.shape[0]
    x, y = data.x_test[:n], data.y_test[:n]
    atk = PGD(model, config.eps, steps=20, loss="adaptive", beta_atk="inf-P2")
    probe_hits = final_hits = 0
    for i in range(0, n, config.eval_batch_size):
        xb, yb = x[i : i + config.eval_batch_size], y[i : i + config.eval_batch_size]
        xa = atk(xb, yb)
        model.eval()
        with torch.no_grad():
            out = model.forward_with_aux(xa)
        probe_hits += int((out.probe_logits["P2"].argmax(1) == yb).sum())
        final_hits += int((out.logits.argmax(1) == yb).sum())
    return {"cifs_cifs": 100.0 * probe_hits / n, "cifs_final": 100.0 * final_hits / n}


def _custom_eval(run_dir: Path, name: str, fn, model, config, device, progress):
    from ..engine.checkpoint import read_json, write_json
    from ..training.data import load_tensors

    path = run_dir / "eval" / f"{name}-n{config.eval_n}.json"
    if path.is_file():
        return read_json(path)
    data = load_tensors(config).to(device)
    value = fn(model, config, data, progress)
    write_json(path, value)
    return value


def reproduce(key: str, profile: str = "smoke", *, rows: list[str] | None = None, device: Any = None,
              progress: bool = True, verbose: bool = True, **overrides: Any) -> ReproduceResult:
    """Train (or load) every model of a table at a profile, evaluate it, compare with the paper.

    Args:
        key: a key of :data:`TABLES` (or its short prefix, e.g. ``"tableE2"``).
        profile: ``"smoke"``, ``"laptop"``, ``"colab"`` or ``"paper"``.
        rows: only these rows (default all).
        device: training/evaluation device (default from the profile).
        progress: progress bars; verbose: print the comparison.
        overrides: TrainConfig fields applied to every row (e.g. ``epochs=2``).

    Returns:
        a :class:`ReproduceResult`; the same numbers are written to
        ``runs_dir()/tables/<key>-<profile>.json``.
    """
    from ..engine.checkpoint import write_json
    from ..paper import paper_table
    from ..paths import runs_dir
    from ..engine.runs import evaluate_run, resolve_device as _resolve_device
    from ..training.loop import load_or_train

    table = _table(key)
    prof = get_profile(profile)
    configs = table_configs(table.key, prof.name, **overrides)
    if rows is not None:
        unknown = sorted(set(rows) - set(configs))
        if unknown:
            raise ConfigError(f"unknown rows {unknown} of {table.key}; rows are {list(configs)}")
        configs = {r: c for r, c in configs.items() if r in rows}
    run: dict[str, Any] = {}
    run_dirs: dict[str, str] = {}
    sweep = prof.eval_sweep
    for name, cfg in configs.items():
        result = load_or_train(cfg, progress=progress, device=device)
        run_dirs[name] = str(result.run_dir)
        attacks = table_attacks(table.key, cfg)
        dev = _resolve_device(cfg, device)
        if table.kind == "topk":
            run.update(_custom_eval(result.run_dir, "topk", _topk, result.model, cfg, dev, progress))
            continue
        if table.kind == "beta_sweep":
            sw = evaluate_run(result.run_dir, attacks, which=table.which, sweep=True, n=prof.sweep_images,
                              device=device, progress=progress)
            for a, col in zip(attacks, table.columns):
                for b, v in sw["per_beta"].get(a, {}).items():
                    run.setdefault(f"{name} beta_atk={b}", {})[col] = v
            continue
        swept = sweep and cfg.adaptive
        ev = evaluate_run(result.run_dir, attacks, which=table.which, sweep=swept,
                          n=prof.sweep_images if swept else None, device=device, progress=progress)
        acc = ev["accuracy"]
        if table.kind == "autoattack":
            run.setdefault(cfg.arch, {})[name.split(":")[-1]] = acc["autoattack"]
        elif table.kind == "scalar":
            run[name] = {"pgd20": acc["pgd20"]}
        elif table.kind == "topk_feedback":
            row = {"natural_final": acc["natural"] if "natural" in acc else None, "adap_final": acc["pgd20"]}
            if cfg.adaptive:
                row.update(_custom_eval(result.run_dir, "feedback-P2", _feedback, result.model, cfg, dev, progress))
            if row["natural_final"] is None:
                row["natural_final"] = evaluate_run(result.run_dir, ["natural"], which=table.which, device=device,
                                                    progress=progress)["accuracy"]["natural"]
            run[name] = row
        else:
            run[name] = {col: acc[a] for a, col in zip(attacks, table.columns)}
    frame = _frame(table, run, prof.name)
    out = {
        "table": table.key, "title": table.title, "profile": prof.name, "paper_key": table.paper_key,
        "which": table.which, "sweep": sweep, "note": table.note, "synthetic": prof.is_synthetic,
        "run": run, "paper": paper_table(table.paper_key)["rows"], "runs": run_dirs,
    }
    path = runs_dir() / "tables" / f"{table.key}-{prof.name}.json"
    write_json(path, out)
    if verbose:
        print(f"{table.title} -- profile {prof.name}" + (" (SYNTHETIC data: not comparable to the paper's numbers)"
                                                          if prof.is_synthetic else ""))
        if not sweep:
            print("CIFS/CAS attacked with the adaptive loss at beta_atk = training beta (no sweep at this profile)")
        if table.note:
            print("note:", table.note)
        print(frame.round(2).to_string())
        print(f"saved: {path}")
    return ReproduceResult(table.key, prof.name, run, frame, path, run_dirs)


def _flatten_paper(table: Table) -> dict[str, Any]:
    from ..losses import PAPER_LAYER_LABELS
    from ..paper import paper_table

    rows = paper_table(table.paper_key)["rows"]
    if table.kind == "beta_sweep":
        flat = {}
        for model, per in rows.items():
            for b, cols in per.items():
                label = PAPER_LAYER_LABELS.get(b, b)
                flat[f"{model} beta_atk={label}"] = cols
        return flat
    if table.kind == "scalar":
        return {k: {"pgd20": v} for k, v in rows.items()}
    if table.kind == "autoattack" and all(not isinstance(v, Mapping) for v in rows.values()):
        return {"resnet18": rows}
    return rows


def _frame(table: Table, run: dict[str, Any], profile: str):
    """DataFrame with this run's and the paper's numbers, indexed by (model, source)."""
    from ..paper import comparison

    run_flat = {k: ({"pgd20": v} if not isinstance(v, Mapping) else v) for k, v in run.items()}
    return comparison(run_flat, table.paper_key, profile, list(table.columns),
                      paper_rows=_flatten_paper(table)).astype(float)
