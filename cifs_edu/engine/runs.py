"""Run folders: where a training run's files live, how it resumes, loads and caches evaluations.

The training loop (:mod:`cifs_edu.training.loop`) computes; this module keeps the books. A run
folder (``runs_dir()/<run name>``, :func:`run_dir_for`) holds ``last.pt`` (the full state after
the latest epoch, for exact resume), ``best.pt`` (the weights of the best validation epoch),
``history.jsonl`` (one line per epoch), ``results.json`` (the final test evaluation) and
``eval/`` (evaluations of the saved weights, :func:`evaluate_run`). Files are written atomically
(:mod:`.checkpoint`); the folder is marked as the library's (:mod:`.rundir`) and locked while a
process works in it (:mod:`.runlock`).
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..errors import ConfigError
from ..evaluate import evaluate_model, parse_attack
from ..paths import runs_dir
from ..profiles import PROFILES
from ..training.config import RUNTIME_FIELDS, TrainConfig
from ..training.data import load_tensors
from . import distributed as dist
from .checkpoint import (
    FORMAT, CheckpointError, CheckpointMismatchError, atomic_torch_save, atomic_write_bytes, load_checkpoint, read_json,
    rng_state, set_rng_state, weights_digest, write_json,
)
from .runlock import run_lock

__all__ = ["RESULTS", "HISTORY", "LAST", "BEST", "run_dir_for", "read_history", "write_history", "resolve_device",
           "load_model", "load_weights", "save_epoch", "restore_state", "evaluate_run"]

RESULTS = "results.json"
HISTORY = "history.jsonl"
LAST = "last.pt"
BEST = "best.pt"


def save_epoch(run_dir: Path, config: TrainConfig, epoch: int, model: nn.Module, optimizer, scheduler, scaler,
               history: list[dict[str, Any]], best: dict[str, Any], data_info: dict[str, Any], elapsed: float,
               improved: bool) -> None:
    """Write ``last.pt`` (everything exact resume needs), ``best.pt`` when ``improved``, and the history.

    ``epoch`` is the number of epochs done (1-based). Every payload carries the weights' digest."""
    from .._version import __version__

    state = model.state_dict()
    head = {"format": FORMAT, "version": __version__, "config": config.to_dict(), "key": config.key(),
            "epoch": epoch, "model": state, "weights_sha256": weights_digest(state), "data": data_info, "best": best}
    if improved:
        atomic_torch_save({**head, "kind": "weights"}, run_dir / BEST)
    atomic_torch_save({**head, "kind": "full", "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict() if scaler.is_enabled() else {},
                       "rng": rng_state(), "history": history, "train_time_s": elapsed}, run_dir / LAST)
    write_history(run_dir, history)


def restore_state(payload: dict[str, Any], path: Path, model: nn.Module, optimizer, scheduler, scaler):
    """Load a ``last.pt`` payload into the model, optimizer, scheduler, scaler and the RNGs.

    Returns ``(history, best, epochs_done, train_time_s)``."""
    load_weights(model, payload["model"], path)
    try:
        optimizer.load_state_dict(payload["optimizer"])
        scheduler.load_state_dict(payload["scheduler"])
        if scaler.is_enabled() and payload.get("scaler"):
            scaler.load_state_dict(payload["scaler"])
    except (KeyError, ValueError, RuntimeError) as e:
        raise CheckpointError(f"{path}: optimizer/scheduler state unusable ({e}); delete it to start over") from None
    set_rng_state(payload["rng"])
    return (list(payload["history"]), dict(payload["best"]), int(payload["epoch"]),
            float(payload.get("train_time_s", 0.0)))


def run_dir_for(config: TrainConfig) -> Path:
    """The default run folder: ``runs_dir() / config.run_name``."""
    return runs_dir() / config.run_name


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """The per-epoch records of ``history.jsonl`` (empty if absent).

    Keys: ``epoch`` (1-based), ``lr``, ``train_loss``, ``train_acc`` (accuracy % on the
    training inputs of the update: adversarial for AT/FAT/TRADES), ``val_clean`` and
    ``val_pgd`` (% on the validation split, ``None`` when not validated), ``tau`` (FAT),
    ``time_s``.
    """
    path = Path(run_dir) / HISTORY
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    """Write ``history.jsonl`` (one JSON line per epoch record) atomically."""
    atomic_write_bytes(run_dir / HISTORY, "".join(json.dumps(h) + "\n" for h in history).encode())


def resolve_device(config: TrainConfig, device: Any) -> torch.device:
    """The device a run trains or evaluates on: this process's GPU under ``torchrun``, else ``device``
    (``"cpu"``/``"cuda"``), else the profile's choice (CUDA when available and wanted)."""
    from ..runtime import pick_device

    info = dist.info()
    if info.active and torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda"):
        return torch.device("cuda", info.local_rank)
    if device is not None:
        return pick_device(PROFILES["smoke"], device)[0]
    prof = PROFILES.get(config.profile)
    if prof is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return pick_device(prof)[0]


def _checkpoint_path(source: str | Path, which: str) -> Path:
    if which not in ("last", "best"):
        raise ConfigError(f"which must be 'last' or 'best' (got {which!r})")
    p = Path(source)
    return p / f"{which}.pt" if p.is_dir() else p


def load_weights(model: nn.Module, state: dict, path: Path) -> None:
    """``model.load_state_dict(state)``; a mismatch raises :class:`CheckpointMismatchError` naming ``path``."""
    try:
        model.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointMismatchError(f"the weights in {path} do not fit the configured model: {e}") from None


def load_model(source: str | Path, which: str = "last", *, device: Any = None) -> nn.Module:
    """Rebuild a trained model from a run folder (``last.pt``/``best.pt``) or a checkpoint file.

    The model is built with :func:`cifs_edu.models.build_model` from the saved config and
    loaded from the state_dict (``map_location="cpu"``), then moved to ``device`` (default CPU),
    in eval mode. ``model.train_config`` holds the :class:`TrainConfig`.
    """
    path = _checkpoint_path(source, which)
    payload = load_checkpoint(path)
    try:  # runtime fields (cuda_graphs) say how it was trained, not what: off for a loaded model (CPU-safe)
        config = TrainConfig.from_dict({k: v for k, v in payload["config"].items() if k not in RUNTIME_FIELDS})
    except ConfigError as e:
        raise CheckpointError(f"{path}: its configuration is not valid here ({e})") from None
    data_info = payload.get("data") or dict(zip(("in_channels", "num_classes"), config.data_shape()))
    model = config.build_model(data_info["in_channels"], data_info["num_classes"])
    load_weights(model, payload["model"], path)
    model.train_config = config  # type: ignore[attr-defined]
    model.checkpoint_epoch = int(payload["epoch"])  # type: ignore[attr-defined]
    # verified by load_checkpoint when saved; computed for checkpoints written before digests existed
    model.weights_sha256 = payload.get("weights_sha256") or weights_digest(payload["model"])  # type: ignore[attr-defined]
    return model.to(torch.device(device) if device is not None else "cpu").eval()


def _from_final_eval(path: Path, which: str, model: nn.Module, config: TrainConfig, attacks: list[str], n: int | None,
                     sweep: bool, beta: Any, dev: torch.device) -> dict[str, Any] | None:
    """The requested evaluation taken from the run's ``results.json``, when it is the same computation.

    The final test evaluation of :func:`train` runs each attack of ``eval_attacks`` with the same
    seed, images, beta and batch size as :func:`evaluate_run` would; every attack is built and
    run on its own, so a subset of them gives the same numbers (tested). ``None`` when anything
    differs: other weights (their digest), checkpoint epoch, ``n``, ``beta``, ``sweep``, device
    type or attack.
    """
    results = path.parent / RESULTS
    if not results.is_file():
        return None
    try:
        metrics = read_json(results)
        details = (metrics.get("details") or {}).get(which)
        epoch = metrics.get("epochs") if which == "last" else metrics.get("best_epoch")
    except (OSError, ValueError, AttributeError):
        return None
    if (not details or metrics.get("key") != config.key() or metrics.get("eval") != config.eval_dict()
            or (metrics.get("weights_sha256") or {}).get(which) != getattr(model, "weights_sha256", None)
            or epoch != getattr(model, "checkpoint_epoch", None) or path.name != f"{which}.pt"
            or n != config.eval_n or sweep != config.eval_sweep or beta != config.beta
            or torch.device(str(metrics.get("device", "cpu"))).type != dev.type
            or not all(a in details.get("accuracy", {}) for a in attacks)):
        return None
    return {"accuracy": {a: details["accuracy"][a] for a in attacks},
            "n": {a: details["n"][a] for a in attacks},
            "per_beta": {a: details["per_beta"][a] for a in attacks if a in details.get("per_beta", {})},
            "attacks": {a: details["attacks"][a] for a in attacks}}


def evaluate_run(source: str | Path, attacks: list[str], *, which: str = "last", n: int | None = None,
                 sweep: bool = False, beta: Any = None, device: Any = None, progress: bool = True,
                 cache: bool = True) -> dict[str, Any]:
    """Evaluate a saved run (folder or checkpoint) under ``attacks`` on its test split.

    Results are cached as JSON under ``<run>/eval/`` (the run folder of the checkpoint). A run
    still being trained by another process is waited for (its lock, :mod:`.runlock`), and so is
    the same evaluation running elsewhere (a lock per result file); other evaluations of the run
    proceed in parallel. An evaluation identical to the run's final test evaluation (same
    checkpoint, attacks among ``eval_attacks``, ``n == eval_n``, the training beta, same
    ``sweep``) is read from its ``results.json`` instead of being computed again; ``cache=False``
    always computes. A saved result is used only for the weights it was computed on (their
    SHA-256, :func:`~cifs_edu.engine.checkpoint.weights_digest`); other weights are evaluated afresh.

    Args:
        source: run folder or ``.pt`` file; which: ``"last"`` or ``"best"``.
        attacks: attack names; n: test images (default: the run's ``eval_n``).
        sweep: worst case over the attacker's betas (CIFS/CAS); beta: attacker's beta (default the training beta).
    """
    import hashlib

    _check_eval_request(attacks, n, sweep, beta)
    path = _checkpoint_path(source, which)
    if path.parent.is_dir():
        with run_lock(path.parent):  # a run being trained (or prepared) elsewhere: wait until it is done
            pass
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: give a run folder (holding {which}.pt) or a .pt file")
    model = load_model(path, device=device)
    config: TrainConfig = model.train_config  # type: ignore[attr-defined]
    dev = resolve_device(config, device)
    model = model.to(dev)
    n = config.eval_n if n is None else n
    beta = config.beta if beta is None else beta
    spec = {"checkpoint": path.name, "epoch": model.checkpoint_epoch, "attacks": list(attacks), "n": n,  # type: ignore[attr-defined]
            "sweep": sweep, "beta": beta, "aa_n": config.aa_n}
    tag = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:10]
    out_path = path.parent / "eval" / f"{path.stem}-{tag}.json"
    digest = model.weights_sha256  # type: ignore[attr-defined]
    if cache and (saved := _cached(out_path, digest)) is not None:
        return saved
    # the same evaluation running in another process: wait for its result (other evaluations of the run go on)
    with run_lock(out_path.with_suffix("")):
        if cache and (saved := _cached(out_path, digest)) is not None:
            return saved
        return _evaluate(path, which, model, config, list(attacks), n, sweep, beta, dev, spec, out_path, progress, cache)


def _cached(out_path: Path, digest: str) -> dict[str, Any] | None:
    """A saved evaluation, only if it was computed on the weights with this digest."""
    if not out_path.is_file():
        return None
    result = read_json(out_path)
    return result if result.get("weights_sha256") == digest else None


def _check_eval_request(attacks: Any, n: Any, sweep: Any, beta: Any) -> None:
    """Validate :func:`evaluate_run`'s arguments before anything is loaded (one ConfigError listing all)."""
    from ..losses import parse_beta

    problems = []
    if isinstance(attacks, str) or not isinstance(attacks, (list, tuple)) or not attacks:
        problems.append(f"attacks must be a non-empty list of attack names (got {attacks!r})")
    else:
        for a in attacks:
            try:
                parse_attack(a)
            except ValueError as e:
                problems.append(str(e))
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        problems.append(f"n must be a number of test images >= 1, or None for the run's eval_n (got {n!r})")
    if not isinstance(sweep, bool):
        problems.append(f"sweep must be True or False (got {sweep!r})")
    if beta is not None:
        try:
            parse_beta(beta)
        except ValueError as e:
            problems.append(f"beta: {e}")
    if problems:
        raise ConfigError("invalid evaluation: " + "; ".join(problems))


def _evaluate(path: Path, which: str, model: nn.Module, config: TrainConfig, attacks: list[str], n: int | None,
              sweep: bool, beta: Any, dev: torch.device, spec: dict[str, Any], out_path: Path, progress: bool,
              cache: bool) -> dict[str, Any]:
    if cache:
        same = _from_final_eval(path, which, model, config, list(attacks), n, sweep, beta, dev)
        if same is not None:
            result = {"spec": spec, "run_name": config.run_name, "key": config.key(),
                      "weights_sha256": model.weights_sha256, **same, "path": str(out_path)}
            if dist.is_main():
                write_json(out_path, result)
            return result
    data = load_tensors(config).to(dev)
    k = data.x_test.shape[0] if n is None else min(n, data.x_test.shape[0])
    ev = evaluate_model(model, data.x_test[:k], data.y_test[:k], attacks, eps=config.eps, adaptive=config.adaptive,
                        beta=beta, sweep=sweep, batch_size=config.eval_batch_size, aa_n=config.aa_n,
                        num_classes=data.num_classes, seed=config.seed, progress=progress)
    result = {"spec": spec, "run_name": config.run_name, "key": config.key(),
              "weights_sha256": model.weights_sha256, **ev, "path": str(out_path)}
    if dist.is_main():
        write_json(out_path, result)
    return result
