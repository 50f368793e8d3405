"""The training loop: :func:`train` (and :func:`load_or_train`, which trains only what is not saved).

One call trains a model as the paper does (SGD with momentum, step schedule, the chosen
adversarial-training method), validates it every ``eval_every`` epochs on the held-out
validation split (clean and PGD accuracy; the best epoch is the one with the highest
validation PGD accuracy, never chosen on the test set), checkpoints after every epoch,
and finally evaluates the last (and best) model on the test set into ``results.json``.

Reproducibility: the model is initialised from ``seed``; the order, crops, flips and
random starts of epoch ``e`` come from generators seeded with ``(seed, e)``; the global
torch RNG is reseeded with ``(seed, e)`` at the start of each epoch. On the CPU, training
2 epochs gives bit-identical weights to training 1 epoch, stopping, and resuming.

Speed: no host synchronisation inside an epoch (loss and accuracy accumulate on the
device); channels-last memory format; on CUDA, automatic mixed precision (bfloat16, or
float16 with a gradient scaler); the training set lives on the device; optionally
(``cuda_graphs=True``, ``pgd_at`` on one GPU) the training attack of every full batch is
replayed from a CUDA graph (:mod:`cifs_edu.engine.graphs`).

The run folder's files (checkpoints, history, results, cached evaluations), loading a saved
model and :func:`~cifs_edu.engine.runs.evaluate_run` live in :mod:`cifs_edu.engine.runs`.
"""
from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..engine import distributed as dist
from ..engine.checkpoint import CheckpointMismatchError, check_config, load_checkpoint, read_json, weights_digest, write_json
from ..engine.rundir import check_run_dir, clear_run, mark_run_dir
from ..engine.runlock import run_lock
from ..engine.runs import (
    LAST, RESULTS, load_model, read_history, resolve_device, restore_state, run_dir_for, save_epoch,
)
from ..errors import ConfigError
from ..evaluate import accuracy_counts, evaluate_model
from .config import TrainConfig
from .data import EpochPlan, TensorSplits, augment_batch, derive_seed, load_tensors
from .methods import TrainForward, batch_loss, fat_examples, pgd_examples, trades_examples

__all__ = ["TrainResult", "train", "load_or_train", "curves"]


@dataclass
class TrainResult:
    """What :func:`train` / :func:`load_or_train` return.

    Attributes:
        model: the last-epoch model, in eval mode, on the training device.
        config: the run's :class:`TrainConfig`.
        history: one dict per epoch (see :func:`read_history`).
        metrics: the content of ``results.json`` (``None`` if training stopped early).
        run_dir: the run folder.
        trained_epochs: epochs trained by this call (0 when the run was loaded).
    """

    model: nn.Module
    config: TrainConfig
    history: list[dict[str, Any]]
    metrics: dict[str, Any] | None
    run_dir: Path
    trained_epochs: int = 0

    @property
    def finished(self) -> bool:
        return self.metrics is not None

    def curves(self):
        """The history as a ``pandas.DataFrame`` indexed by epoch (for Fig. 4-style plots)."""
        return curves(self.history)

    def load_best(self, device: Any = None) -> nn.Module:
        """The best-epoch model (highest validation PGD accuracy)."""
        return load_model(self.run_dir, "best", device=device or next(self.model.parameters()).device)

    def __repr__(self) -> str:
        last = self.metrics.get("last") if self.metrics else None
        return f"TrainResult({self.run_dir.name}, epochs={len(self.history)}, trained_now={self.trained_epochs}, last={last})"


def curves(history: list[dict[str, Any]]):
    """A history (list of dicts) as a DataFrame indexed by epoch."""
    import pandas as pd

    frame = pd.DataFrame(history)
    return frame.set_index("epoch") if "epoch" in frame else frame


# ---------------------------------------------------------------------- runtime helpers


def _amp_dtype(config: TrainConfig, device: torch.device) -> torch.dtype | None:
    if device.type != "cuda" or config.amp == "off":
        return None
    if config.amp == "fp16":
        return torch.float16
    if config.amp == "bf16" or torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float16


def _fast_attack(config: TrainConfig, device: torch.device) -> bool:
    # "auto" = on for the CPU (about -10% per attack step at width 8); off on CUDA, where it paid only at batch 512
    return config.fast_attack == "on" or (config.fast_attack == "auto" and device.type == "cpu")


def _channels_last(config: TrainConfig, device: torch.device) -> bool:
    # "auto" = on: faster on CUDA (tensor cores) and on CPUs too (about 35% for a width-8 ResNet-18)
    return config.channels_last in ("on", "auto")


class _Noise:
    """Random-start noise of global batches, from a generator seeded with (seed, epoch)."""

    def __init__(self, seed: int, epoch: int, device: torch.device) -> None:
        self.device = device
        self.g = torch.Generator(device=device)
        self.g.manual_seed(derive_seed(seed, "epoch", epoch, "noise"))

    def drawer(self, shape: tuple[int, ...], part: slice, memory_format=torch.contiguous_format):
        def draw(kind: str) -> torch.Tensor:
            t = torch.empty(shape, device=self.device)
            if kind == "uniform":
                t.uniform_(-1.0, 1.0, generator=self.g)
            else:
                t.normal_(generator=self.g)
            return t[part].contiguous(memory_format=memory_format)

        return draw


def _payload_data(data: TensorSplits) -> dict[str, Any]:
    return {"in_channels": data.in_channels, "num_classes": data.num_classes, "classes": list(data.classes)}


def _warn_if_chance(config: TrainConfig, history: list[dict[str, Any]], data_info: dict[str, Any]) -> None:
    """Warn when a CIFS/CAS run's training accuracy is still at chance after its first epochs.

    Checked once, after the first two epochs of each phase (warm start, then ``method``): a run
    whose accuracy has not left 100/classes + 2 points by then is most likely stuck (the paper's
    softmax mask sums to 1 and shrinks the classifier's input by 1/C; see
    :data:`cifs_edu.profiles.MASK_SCALE_NOTE`), and more epochs would waste the budget."""
    if not config.adaptive:
        return
    n = len(history)
    first = {2, config.warm_start_epochs + 2} if config.warm_start_epochs else {2}
    if n not in first or n > config.epochs:
        return
    chance = 100.0 / max(int(data_info.get("num_classes", 10)), 1)
    acc = history[-1]["train_acc"]
    if acc <= chance + 2.0:
        warnings.warn(
            f"{config.defense} run {config.run_name}: training accuracy {acc:.1f}% after {n} epochs is still at "
            f"chance ({chance:.0f}%). A softmax mask that sums to 1 shrinks the classifier's input by 1/C; "
            "options: " + ("a longer natural warm start (warm_start_epochs, now "
                           f"{config.warm_start_epochs})" if config.warm_start_epochs else
                           "a natural warm start (warm_start_epochs)")
            + ", model_options={'scale': C}, or a longer schedule.",
            RuntimeWarning, stacklevel=3)


def _validate(model: nn.Module, data: TensorSplits, config: TrainConfig, device: torch.device) -> dict[str, float]:
    from ..attacks import PGD

    x, y = data.x_val, data.y_val
    info = dist.info()
    if info.active:
        x, y = x[info.rank :: info.world_size], y[info.rank :: info.world_size]
    kw = {"loss": "adaptive", "beta_atk": config.beta, "scale": config.loss_scale} if config.adaptive else {}
    atk = PGD(model, config.eps, alpha=config.val_alpha, steps=config.val_steps,
              amp=_amp_dtype(config, device) is not None, **kw)
    out = {}
    for name, attack in (("val_clean", None), ("val_pgd", atk)):
        correct = accuracy_counts(model, x, y, attack, batch_size=config.eval_batch_size)
        c = torch.tensor([float(correct.sum()), float(correct.numel())], dtype=torch.float64, device=device)
        c = dist.all_reduce_sum(c)
        out[name] = 100.0 * float(c[0]) / max(float(c[1]), 1.0)
    return out


def _final_eval(model: nn.Module, data: TensorSplits, config: TrainConfig, progress: bool) -> dict[str, Any]:
    n = data.x_test.shape[0] if config.eval_n is None else min(config.eval_n, data.x_test.shape[0])
    return evaluate_model(
        model, data.x_test[:n], data.y_test[:n], config.eval_attacks, eps=config.eps, adaptive=config.adaptive,
        beta=config.beta, sweep=config.eval_sweep, batch_size=config.eval_batch_size, aa_n=config.aa_n,
        num_classes=data.num_classes, seed=config.seed, progress=progress and dist.is_main(),
    )


def _build(config: TrainConfig, data_info: dict[str, Any], device: torch.device, channels_last: bool) -> nn.Module:
    model = config.build_model(data_info["in_channels"], data_info["num_classes"])
    model = model.to(device)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model


# ---------------------------------------------------------------------- train
def train(config: TrainConfig, *, run_dir: str | Path | None = None, resume: bool = True, progress: bool = True,
          device: Any = None, max_epochs: int | None = None) -> TrainResult:
    """Train (or resume) the run described by ``config``; see the module docstring.

    Args:
        config: the run.
        run_dir: its folder (default ``runs_dir() / config.run_name``).
        resume: continue from ``run_dir/last.pt`` when it exists (a finished run is only
            re-evaluated if ``results.json`` is missing); ``False`` deletes the files of the
            folder's previous run (:func:`~cifs_edu.engine.rundir.clear_run`: nothing else) and
            starts over.
        progress: tqdm progress bars.
        device: ``"cpu"``/``"cuda"``; default from the profile (CUDA when available and wanted).
        max_epochs: stop once this many epochs are done (the run stays resumable); for
            interrupting long runs and for tests.

    Returns:
        a :class:`TrainResult`.

    Raises:
        ConfigError: ``run_dir`` is a file, not writable, or a folder of someone else's files
            (:func:`~cifs_edu.engine.rundir.check_run_dir`), before any work.
        cifs_edu.datasets.DataNotFoundError: data missing (before any training).
        CheckpointError / CheckpointMismatchError: ``last.pt`` unusable or from another config.

    Holds the run's lock (:func:`~cifs_edu.engine.runlock.run_lock`) while it works: a second
    process training or evaluating the same run waits for this one.
    """
    if not isinstance(config, TrainConfig):
        raise ConfigError(f"config must be a TrainConfig (got {type(config).__name__})")
    check_run_dir(Path(run_dir) if run_dir is not None else run_dir_for(config))  # before any work
    with run_lock(Path(run_dir) if run_dir is not None else run_dir_for(config)):
        return _train(config, run_dir=run_dir, resume=resume, progress=progress, device=device, max_epochs=max_epochs)


def _train(config: TrainConfig, *, run_dir: str | Path | None = None, resume: bool = True, progress: bool = True,
           device: Any = None, max_epochs: int | None = None) -> TrainResult:
    from tqdm.auto import tqdm


    if max_epochs is not None and (not isinstance(max_epochs, int) or max_epochs < 1):
        raise ConfigError(f"max_epochs must be an integer >= 1 or None (got {max_epochs!r})")
    dist.init_from_env()
    info = dist.info()
    if config.batch_size < 2 * info.world_size:
        raise ConfigError(f"batch_size {config.batch_size} is too small for {info.world_size} processes")
    run_dir = Path(run_dir) if run_dir is not None else run_dir_for(config)
    dev = resolve_device(config, device)
    if config.cuda_graphs:  # the config checked the method and CUDA; the device and torchrun are known only here
        if dev.type != "cuda":
            raise ConfigError(f"cuda_graphs=True needs a CUDA device, but this run would train on {dev}")
        if info.active:
            raise ConfigError("cuda_graphs=True is not supported with distributed training (torchrun)")
    cl = _channels_last(config, dev)
    fast = _fast_attack(config, dev)
    amp_dtype = _amp_dtype(config, dev)
    autocast = (lambda: torch.autocast("cuda", dtype=amp_dtype)) if amp_dtype is not None else contextlib.nullcontext
    show = progress and info.rank == 0

    data = load_tensors(config)  # DataNotFoundError here, before any work
    if data.x_train.shape[0] < 2 * info.world_size:
        raise ConfigError(f"the training split has {data.x_train.shape[0]} images: too few")
    data = data.to(dev)
    data_info = _payload_data(data)

    last_path = run_dir / LAST
    payload = None
    if resume and last_path.exists():
        payload = load_checkpoint(last_path, kind="full")
        check_config(payload, config, last_path)
    elif not resume and info.rank == 0 and run_dir.exists():
        clear_run(run_dir)  # only what a run wrote
    if info.rank == 0:
        mark_run_dir(run_dir, config.key())
    dist.barrier()

    torch.manual_seed(derive_seed(config.seed, "init"))
    model = _build(config, data_info, dev, cl)
    if info.active:
        model = dist.global_batchnorm(model, dev.type)
    optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=list(config.milestones), gamma=config.lr_gamma)
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)
    history: list[dict[str, Any]] = []
    best: dict[str, Any] = {"epoch": None, "val_pgd": None}
    start = 0
    elapsed = 0.0
    if payload is not None:
        history, best, start, elapsed = restore_state(payload, last_path, model, optimizer, scheduler, scaler)
    del payload

    graphed = None
    if config.cuda_graphs:
        from ..engine.graphs import GraphedPGD

        graphed = GraphedPGD(model, config, autocast)  # captured on the first full batch, replayed after

    forward: nn.Module = TrainForward(model)
    if config.compile:
        forward = torch.compile(forward)
    if info.active:
        from torch.nn.parallel import DistributedDataParallel as DDP

        forward = DDP(forward, device_ids=[dev.index] if dev.type == "cuda" else None,
                      find_unused_parameters=isinstance(config.beta, str))

    stop = config.epochs if max_epochs is None else min(config.epochs, max_epochs)
    aug = config.resolved_augment()
    n_train = data.x_train.shape[0]
    has_val = data.x_val.shape[0] > 0
    mf = torch.channels_last if cl else torch.contiguous_format
    trained = 0
    epochs_bar = tqdm(range(start, stop), desc=f"{config.defense}/{config.method}", disable=not show,
                      initial=start, total=config.epochs)
    for epoch in epochs_bar:
        t0 = time.perf_counter()
        torch.manual_seed(derive_seed(config.seed, "epoch", epoch, "torch"))
        plan = EpochPlan.make(n_train, config.seed, epoch)
        noise = _Noise(config.seed, epoch, dev)
        tau = config.tau_at(epoch) if config.method == "fat" else None
        model.train()
        loss_sum = torch.zeros((), device=dev, dtype=torch.float64)
        hits = torch.zeros((), device=dev, dtype=torch.float64)
        seen = 0
        batches = plan.batches(config.batch_size, min_last=2 * info.world_size)
        for pos in tqdm(batches, desc=f"epoch {epoch + 1}", leave=False, disable=not show):
            gidx = plan.order[pos]
            b = gidx.numel()
            part = slice(info.rank * b // info.world_size, (info.rank + 1) * b // info.world_size)
            idx = gidx[part]
            idx_dev = idx.to(dev, non_blocking=True)
            x = augment_batch(data.x_train[idx_dev], plan.offsets[idx], plan.flips[idx], aug)
            x = x.contiguous(memory_format=mf)
            y = data.y_train[idx_dev]
            draw = noise.drawer((b,) + tuple(x.shape[1:]), part, mf)
            if config.natural_at(epoch):
                x_adv = None
            elif config.method == "pgd_at":
                if graphed is not None:  # same examples, one graph launch; other batch shapes run eagerly
                    x_adv = graphed(x, y, draw)
                else:
                    x_adv = pgd_examples(model, x, y, config, draw, autocast, fast)
            elif config.method == "fat":
                x_adv = fat_examples(model, x, y, config, draw, tau, autocast, fast)
            elif config.method == "trades":
                x_adv = trades_examples(model, x, y, config, draw, autocast, fast)
            else:
                x_adv = None
            model.train()
            optimizer.zero_grad(set_to_none=True)
            per_example, logits = batch_loss(forward, x, x_adv, y, config, autocast)
            loss = per_example.sum() * (info.world_size / b)  # DDP averages: global mean over the batch
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            loss_sum += per_example.detach().sum()
            hits += (logits.detach().argmax(1) == y).sum()
            seen += y.numel()
        scheduler.step()
        stats = dist.all_reduce_sum(torch.stack([loss_sum, hits, torch.tensor(float(seen), device=dev, dtype=torch.float64)]))
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "lr": config.lr_at(epoch),
            "train_loss": float(stats[0] / stats[2]),
            "train_acc": 100.0 * float(stats[1] / stats[2]),
            "val_clean": None,
            "val_pgd": None,
        }
        if tau is not None:
            record["tau"] = tau
        if config.warm_start_epochs:
            record["natural"] = config.natural_at(epoch)
        last_epoch = epoch + 1 == config.epochs
        if has_val and ((epoch + 1) % config.eval_every == 0 or last_epoch):
            record.update(_validate(model, data, config, dev))
        record["time_s"] = time.perf_counter() - t0
        elapsed += record["time_s"]
        history.append(record)
        _warn_if_chance(config, history, data_info)
        improved = False
        if record["val_pgd"] is not None:
            improved = best["val_pgd"] is None or record["val_pgd"] > best["val_pgd"]
        elif not has_val:
            improved = True  # no validation split: "best" is the latest epoch
        if improved:
            best = {"epoch": epoch + 1, "val_pgd": record["val_pgd"], "val_clean": record["val_clean"]}
        if info.rank == 0:
            save_epoch(run_dir, config, epoch + 1, model, optimizer, scheduler, scaler, history, best,
                       data_info, elapsed, improved)
        dist.barrier()
        trained += 1
        epochs_bar.set_postfix({k: round(v, 2) for k, v in record.items() if isinstance(v, float)})

    model.eval()
    done = len(history) >= config.epochs
    metrics = None
    if done:
        metrics = read_json(run_dir / RESULTS) if (run_dir / RESULTS).exists() and trained == 0 else None
        if metrics is None or metrics.get("key") != config.key() or metrics.get("eval") != config.eval_dict():
            metrics = _results(model, data, config, run_dir, history, best, data_info, elapsed, dev, progress)
    return TrainResult(model, config, history, metrics, run_dir, trained)


def _results(model, data, config, run_dir, history, best, data_info, elapsed, dev, progress) -> dict[str, Any]:
    from .._version import __version__

    t0 = time.perf_counter()
    ev_last = _final_eval(model, data, config, progress)
    ev_best = None
    digests = {"last": weights_digest(model.state_dict()), "best": None}
    if config.eval_best and best.get("epoch") is not None:
        if best["epoch"] == len(history):
            ev_best, digests["best"] = ev_last, digests["last"]
        else:
            bmodel = load_model(run_dir, "best", device=dev)
            ev_best, digests["best"] = _final_eval(bmodel, data, config, progress), bmodel.weights_sha256
    metrics = {
        "key": config.key(),
        "run_name": config.run_name,
        "config": config.to_dict(),
        "eval": config.eval_dict(),
        "epochs": len(history),
        "best_epoch": best.get("epoch"),
        "best_val_pgd": best.get("val_pgd"),
        "last": ev_last["accuracy"],
        "best": ev_best["accuracy"] if ev_best else None,
        "details": {"last": ev_last, "best": ev_best},
        "weights_sha256": digests,  # the weights these numbers belong to (see evaluate_run)
        "data": data_info,
        "train_time_s": elapsed,
        "eval_time_s": time.perf_counter() - t0,
        "device": str(dev),
        "world_size": dist.info().world_size,
        "version": __version__,
        "synthetic": config.dataset == "synthetic",
    }
    if dist.is_main():
        write_json(run_dir / RESULTS, metrics)
    dist.barrier()
    return metrics


# ---------------------------------------------------------------------- loading


def load_or_train(config: TrainConfig, *, run_dir: str | Path | None = None, progress: bool = True,
                  device: Any = None) -> TrainResult:
    """The finished run of ``config`` if it exists (no training), else resume or train it.

    A finished run (``results.json`` with the same key and training config) is loaded from
    ``last.pt`` without any training (``trained_epochs == 0``); when only the final-evaluation
    fields differ, the saved model is re-evaluated and ``results.json`` updated.

    Raises:
        CheckpointMismatchError: ``run_dir`` holds a run of another configuration.
    """
    run_dir = Path(run_dir) if run_dir is not None else run_dir_for(config)
    check_run_dir(run_dir)
    with run_lock(run_dir):  # another process training this run: wait for it, then load its result
        return _load_or_train(config, run_dir, progress, device)


def _load_or_train(config: TrainConfig, run_dir: Path, progress: bool, device: Any) -> TrainResult:
    results = run_dir / RESULTS
    if results.is_file():
        metrics = read_json(results)
        diffs = config.differences(metrics.get("config", {}))
        if diffs or metrics.get("key") != config.key():
            lines = ", ".join(f"{k}: saved={t!r} requested={m!r}" for k, (m, t) in diffs.items()) or "package/cache version"
            raise CheckpointMismatchError(f"{run_dir} holds a run of another configuration ({lines})")
        dev = resolve_device(config, device)
        model = load_model(run_dir, "last", device=dev)
        if metrics.get("eval") != config.eval_dict():
            data = load_tensors(config).to(dev)
            history = read_history(run_dir)
            best = {"epoch": metrics.get("best_epoch"), "val_pgd": metrics.get("best_val_pgd")}
            metrics = _results(model, data, config, run_dir, history, best, metrics.get("data") or _payload_data(data),
                               metrics.get("train_time_s", 0.0), dev, progress)
        return TrainResult(model, config, read_history(run_dir), metrics, run_dir, trained_epochs=0)
    return train(config, run_dir=run_dir, resume=True, progress=progress, device=device)


