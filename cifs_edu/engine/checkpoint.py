"""Checkpoints: atomic writes, plain payloads, clear errors.

A run folder (``runs_dir()/<run name>``) holds:

=================  =====================================================================
``last.pt``        full training state after the latest epoch: model, optimizer,
                   scheduler and gradient-scaler state_dicts, RNG states, history,
                   config, epoch, best-epoch record, package version
``best.pt``        weights of the epoch with the highest validation PGD accuracy
``history.jsonl``  one JSON line per epoch (losses, accuracies, learning rate, time)
``results.json``   final test-set metrics of the last (and best) model, written at the end
=================  =====================================================================

Every checkpoint carries ``weights_sha256``, a digest of its weights (:func:`weights_digest`), which
:func:`load_checkpoint` verifies: a file whose weights changed on disk (flipped bytes, a partial
copy) is refused instead of loaded. Evaluations cached beside a run record the digest of the
weights they were computed on and are reused only for those weights.

Every file is written to a temporary file in the same folder and moved into place with
:func:`os.replace`, so an interrupted write never leaves a truncated checkpoint. Payloads
hold only tensors and plain Python types, so they load with ``torch.load(...,
weights_only=True)`` and ``map_location="cpu"`` (no pickled classes; safe across versions).
"""
from __future__ import annotations

import collections
import json
import os
import random
import tempfile
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

__all__ = [
    "CheckpointError",
    "CheckpointMismatchError",
    "FORMAT",
    "atomic_write_bytes",
    "atomic_torch_save",
    "write_json",
    "read_json",
    "load_checkpoint",
    "rng_state",
    "set_rng_state",
    "check_config",
    "weights_digest",
]

FORMAT = "cifs_edu.checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint cannot be used: unreadable, truncated, or not a cifs_edu checkpoint."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint belongs to a different configuration than the one requested."""


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file + ``os.replace``)."""
    _atomic(Path(path), lambda f: f.write(data))


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to ``path`` atomically."""
    _atomic(Path(path), lambda f: torch.save(obj, f))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write JSON (indented, keys in insertion order) atomically."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2, allow_nan=True) + "\n").encode())


def read_json(path: str | os.PathLike) -> Any:
    """Read a JSON file; a truncated or invalid file raises :class:`CheckpointError`."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON ({e}); delete it to recompute it") from None


# ---------------------------------------------------------------------- RNG states
def rng_state() -> dict[str, Any]:
    """RNG states of Python, NumPy and torch (CPU and every CUDA device), as tensors and plain types."""
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "python": [py[0], list(py[1]), py[2]],
        "numpy": {
            "name": np_state[0],
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "cached_gaussian": float(np_state[4]),
        },
        "torch": torch.get_rng_state(),
        "cuda": [],
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = list(torch.cuda.get_rng_state_all())
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore states saved by :func:`rng_state` (CUDA states only when the device count matches)."""
    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    n = state["numpy"]
    np.random.set_state((n["name"], n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["cached_gaussian"]))
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


# ---------------------------------------------------------------------- weights digest
def weights_digest(state: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of a state_dict: every tensor's name, dtype, shape and bytes, in key order."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not torch.is_tensor(t):
            continue
        t = t.detach().cpu().contiguous().reshape(-1)  # 0-d tensors (BN counters) too
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


# ---------------------------------------------------------------------- loading
def _torch_load(path: Path) -> Any:
    # MultiStepLR keeps its milestones in a collections.Counter: the only non-plain type allowed.
    with torch.serialization.safe_globals([collections.Counter]):
        return torch.load(path, map_location="cpu", weights_only=True)


def load_checkpoint(path: str | os.PathLike, *, kind: str | None = None) -> dict[str, Any]:
    """Load a cifs_edu checkpoint on the CPU (``weights_only=True``).

    Args:
        path: a ``last.pt`` / ``best.pt`` file.
        kind: ``"full"`` (training state) or ``"weights"``; ``None`` accepts both.

    Raises:
        FileNotFoundError: no such file.
        CheckpointError: the file is truncated, corrupt, or not a cifs_edu checkpoint
            (the message names the file and says to delete it).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    advice = f"delete {path} (and retrain, or resume from another checkpoint)"
    try:
        payload = _torch_load(path)
    except Exception as e:  # zip/pickle/EOF errors of all kinds
        raise CheckpointError(f"checkpoint {path} is corrupt or unreadable ({type(e).__name__}: {e}); {advice}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a cifs_edu checkpoint (format {FORMAT!r}); {advice}")
    missing = [k for k in ("kind", "config", "model", "epoch") if k not in payload]
    if missing:
        raise CheckpointError(f"checkpoint {path} lacks {missing}; {advice}")
    if kind is not None and payload["kind"] != kind and not (kind == "weights" and payload["kind"] == "full"):
        raise CheckpointError(f"{path} holds {payload['kind']!r} state, expected {kind!r}")
    saved = payload.get("weights_sha256")
    if saved is not None:
        if not isinstance(payload["model"], Mapping) or weights_digest(payload["model"]) != saved:
            raise CheckpointError(f"checkpoint {path} is corrupt: its weights do not match the digest saved with them; {advice}")
    else:  # written before checkpoints carried a digest: loadable, but unverified
        import warnings

        warnings.warn(f"checkpoint {path} has no weights digest (written by an older cifs_edu): it cannot be "
                      "verified; retrain it to get one", stacklevel=2)
    return payload


def check_config(payload: Mapping[str, Any], config, path: str | os.PathLike) -> None:
    """Raise :class:`CheckpointMismatchError` when the checkpoint's training config differs from ``config``.

    The message lists every differing field as ``field: checkpoint=... requested=...``.
    """
    diffs = config.differences(payload["config"], training_only=True)
    if diffs:
        lines = ", ".join(f"{k}: checkpoint={theirs!r} requested={mine!r}" for k, (mine, theirs) in diffs.items())
        raise CheckpointMismatchError(
            f"checkpoint {path} was trained with a different configuration ({lines}); "
            "use another run folder, or resume=False to start over"
        )
