"""The reference runs on real CIFAR-10: train vanilla and CIFS with one recipe, evaluate in stages.

This is the program behind ``python -m cifs_edu reference`` and the committed results that
:mod:`cifs_edu.reference` reads (the chapters only read; they never import this module).

What the evaluation measures (:data:`SIZES` gives the image counts; test images are taken in
one fixed seeded order, so smaller sets are prefixes of larger ones):

=============  =============================================================================
``attacks``    clean, FGSM and PGD-20 (cross-entropy on the final logits) on every test image;
               top-1/2/3 accuracy (Table 4); per-class accuracy; per-image correctness (a
               '0'/'1' string in the seeded test order); mask selectivity (CIFS)
``channels``   Fig. 1 / A.1: per-channel activation magnitude and frequency at P1 (what the
               final linear layer sees) for natural and PGD-20 images of all ten classes
``sweep``      CIFS: FGSM and PGD-20 for every attacker's beta (Table B.3), the paper's
               per-column worst and our per-image worst; which output survives each attack
               point (Table 5). Vanilla: the same images under plain FGSM / PGD-20
``full_grad``  CIFS: PGD-20 with gradients through the masks (``mask_grad="full"``)
``report``     :func:`cifs_edu.report.robustness_report` (the checklist; laptop preset
               without its AutoAttack check, which runs on more images below)
``autoattack`` standard AutoAttack (torchattacks: APGD-CE, APGD-T, FAB-T, Square)
=============  =============================================================================
"""
from __future__ import annotations

import json
import platform
import subprocess
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
import torch.nn as nn
from torch import Tensor

from ..analysis import mask_selectivity
from ..errors import ConfigError
from .. import reference
from ..reference import _MODELS, DATA_LABEL, RECIPE, SCHEMA, load, test_order, validate

__all__ = ["RECIPES", "STAGES", "SIZES", "TINY_TRAINING", "reference_config", "evaluate_model", "run", "export_weights",
           "extend"]


#: Every reference recipe: the CPU one and the paper-width one for a single GPU.
RECIPES = ("reference-cpu", "reference-gpu")


#: Evaluation stages, in the order they run (each is saved as soon as it finishes).
STAGES = ("attacks", "channels", "sweep", "full_grad", "report", "autoattack")


#: Test images per stage (``None`` = all): the issue's sizes, and a toy size for tests.
SIZES: dict[str, dict[str, int | None]] = {
    "full": {"attacks": None, "channels": None, "sweep": 2000, "full_grad": 2000, "report": 500, "autoattack": 1000},
    "tiny": {"attacks": 200, "channels": 200, "sweep": 100, "full_grad": 100, "report": 40, "autoattack": 40},
}


#: Training overrides of the toy run (``--tiny``): a few hundred images, one warm-start and one AT epoch.
TINY_TRAINING = {"n_train": 384, "n_val": 64, "n_test": 200, "width": 4, "epochs": 2, "milestones": (2,),
                 "warm_start_epochs": 1}


def reference_config(defense: str, dataset: str = "cifar10", *, seed: int = 0, tiny: bool = False,
                     recipe: str = RECIPE, **overrides: Any):
    """The :class:`~cifs_edu.training.TrainConfig` of one reference model.

    Args:
        defense: ``"none"`` (vanilla PGD-AT) or ``"cifs"`` (the paper's softmax mask, which sums
            to 1, and the paper's label rule, the library's default: the probe's top-1 replaced by the
            true label).
        dataset: ``"cifar10"`` (torchvision's download) or ``"folder:<path>"``.
        tiny: the toy size of :data:`TINY_TRAINING` (for tests).
        recipe: the profile (:data:`RECIPE`, or ``"reference-gpu"``: width 64, PGD-10, one GPU).
    """
    from ..training import TrainConfig

    if defense not in _MODELS.values():
        raise ConfigError(f"defense must be one of {tuple(_MODELS.values())} (got {defense!r})")
    values = {"defense": defense, "dataset": dataset, "model_options": {}, "seed": seed,
              "eval_attacks": ("natural",), "eval_best": False, **(TINY_TRAINING if tiny else {}), **overrides}
    if recipe not in RECIPES:
        raise ConfigError(f"recipe must be one of {RECIPES} (got {recipe!r})")
    return TrainConfig.from_profile(recipe, **values)


def _read(model: nn.Module, x: Tensor, batch_size: int) -> dict[str, Tensor]:
    """Eval-mode logits of the final output and of every probe, and the masks, for ``x``."""
    out: dict[str, list[Tensor]] = {}
    model.eval()
    with torch.no_grad():
        for i in range(0, x.shape[0], batch_size):
            aux = model.forward_with_aux(x[i:i + batch_size])
            out.setdefault("final", []).append(aux.logits)
            for p, v in (aux.probe_logits or {}).items():
                out.setdefault(f"{p} probe", []).append(v)
            for p, v in (aux.masks or {}).items():
                out.setdefault(f"{p} mask", []).append(v)
    return {k: torch.cat(v) for k, v in out.items()}


def _adversarial(attack: Callable[[Tensor, Tensor], Tensor], x: Tensor, y: Tensor, batch_size: int,
                 desc: str, progress: bool) -> Tensor:
    from tqdm.auto import tqdm

    starts = range(0, x.shape[0], batch_size)
    return torch.cat([attack(x[i:i + batch_size], y[i:i + batch_size])
                      for i in tqdm(starts, desc=desc, leave=False, disable=not progress)])


def _pct(correct: Tensor) -> float:
    return 100.0 * float(correct.double().mean()) if correct.numel() else float("nan")


def _topk(logits: Tensor, y: Tensor) -> dict[str, float]:
    from ..analysis import topk_correct

    return {f"top{k}": _pct(hit) for k, hit in topk_correct(logits, y, (1, 2, 3)).items()}


def _stage_attacks(model, cifs: bool, X, Y, eps, bs, progress, keep: dict) -> dict[str, Any]:
    from ..attacks import FGSM, PGD

    out: dict[str, Any] = {"n": int(Y.numel())}
    read = {"natural": _read(model, X, bs)}
    adv = {"fgsm": _adversarial(FGSM(model, eps), X, Y, bs, "FGSM", progress),
           "pgd20": _adversarial(PGD(model, eps, steps=20), X, Y, bs, "PGD-20", progress)}
    keep["pgd20"] = adv["pgd20"]
    read.update({k: _read(model, v, bs) for k, v in adv.items()})
    num_classes = read["natural"]["final"].shape[1]
    for name, r in read.items():
        correct = r["final"].argmax(1) == Y
        out[name] = {"accuracy": _pct(correct), **_topk(r["final"], Y),
                     "per_class": [_pct(correct[Y == c]) for c in range(num_classes)],
                     "correct": "".join("1" if c else "0" for c in correct.tolist())}
        if cifs:
            out[name]["probes"] = {k.split()[0]: _pct(v.argmax(1) == Y) for k, v in r.items() if k.endswith("probe")}
            out[name]["selectivity"] = {k.split()[0]: mask_selectivity(v) for k, v in r.items() if k.endswith("mask")}
    return out


def _stage_channels(model, X, Y, bs, keep: dict) -> dict[str, Any]:
    from ..analysis import channel_stats

    classes = sorted(int(c) for c in Y.unique())
    out = {}
    for c in classes:
        s = channel_stats(model, X, Y, c, x_adv=keep["pgd20"])
        out[str(c)] = {"order": s.order.tolist(), "weight": _round(s.weight),
                       "magnitude": {k: _round(v) for k, v in s.magnitude.items()},
                       "frequency": {k: _round(v) for k, v in s.frequency.items()},
                       "raw_mean": {k: _round(v, 6) for k, v in s.raw_mean.items()}}
    return {"n": int(Y.numel()), "position": "P1 (pooled, what the final linear layer sees)", "attack": "PGD-20",
            "classes": out}


def _round(t: Tensor, digits: int = 4) -> list[float]:
    return [round(float(v), digits) for v in t.flatten()]


def _stage_sweep(model, cifs: bool, X, Y, eps, bs, progress) -> dict[str, Any]:
    from ..attacks import FGSM, PGD
    from ..losses import BETA_SWEEP

    if not cifs:  # beta_atk changes nothing without probes: the plain attacks on the same images
        res = {}
        for name, atk in (("fgsm", FGSM(model, eps)), ("pgd20", PGD(model, eps, steps=20))):
            res[name] = _pct(_read(model, _adversarial(atk, X, Y, bs, name, progress), bs)["final"].argmax(1) == Y)
        return {"n": int(Y.numel()), "plain": res}
    out: dict[str, Any] = {"n": int(Y.numel()), "betas": [str(b) for b in BETA_SWEEP], "fgsm": {}, "pgd20": {},
                           "outputs": {}}
    worst = {"fgsm": torch.ones_like(Y, dtype=torch.bool), "pgd20": torch.ones_like(Y, dtype=torch.bool)}
    for b in BETA_SWEEP:
        for name, make in (("fgsm", lambda: FGSM(model, eps, loss="adaptive", beta_atk=b)),
                           ("pgd20", lambda: PGD(model, eps, steps=20, loss="adaptive", beta_atk=b))):
            r = _read(model, _adversarial(make(), X, Y, bs, f"{name} beta_atk={b}", progress), bs)
            correct = r["final"].argmax(1) == Y
            worst[name] &= correct
            out[name][str(b)] = _pct(correct)
            if name == "pgd20":  # Table 5: which output survives this attack point
                out["outputs"][str(b)] = {k: _pct(v.argmax(1) == Y) for k, v in r.items() if not k.endswith("mask")}
                probe_fooled = {k: v.argmax(1) != Y for k, v in r.items() if k.endswith("probe")}
                out["outputs"][str(b)]["purified"] = {k.split()[0]: int((f & correct).sum()) for k, f in probe_fooled.items()}
    for name in ("fgsm", "pgd20"):
        col = min(out[name], key=out[name].get)
        out[name + "_lowest_column"] = {"beta": col, "accuracy": out[name][col]}
        out[name + "_per_image_worst"] = _pct(worst[name])
    return out


def _stage_full_grad(model, cifs: bool, X, Y, eps, bs, progress, betas: Sequence[Any]) -> dict[str, Any]:
    from ..attacks import PGD, beta_label

    if not cifs:
        return {"n": int(Y.numel()), "skipped": "no masks: the full gradient equals the plain one"}
    out: dict[str, Any] = {"n": int(Y.numel()), "pgd20": {}}
    worst = torch.ones_like(Y, dtype=torch.bool)
    for b in betas:
        atk = PGD(model, eps, steps=20, loss="adaptive", beta_atk=b, mask_grad="full")
        correct = _read(model, _adversarial(atk, X, Y, bs, f"full-gradient beta_atk={b}", progress), bs)["final"].argmax(1) == Y
        worst &= correct
        out["pgd20"][beta_label(b)] = _pct(correct)
    out["per_image_worst"] = _pct(worst)
    return out


def _stage_report(model, X, Y, surrogate, name, progress, tiny: bool) -> dict[str, Any]:
    from ..report import CHECKS, ReportConfig, robustness_report

    checks = tuple(c for c in CHECKS if c != "autoattack")
    cfg = ReportConfig.from_profile("smoke" if tiny else "laptop", n=None, checks=checks)
    rep = robustness_report(model, (X, Y), cfg, surrogate=surrogate, name=name, progress=progress)
    d = rep.to_dict()
    d["summary"] = rep.summary()
    d["worst_case_accuracy"] = rep.worst_case_accuracy
    d["flag_codes"] = [f.code for f in rep.flags]
    return d


def _stage_autoattack(model, X, Y, eps, bs, progress, tiny: bool) -> dict[str, Any]:
    from ..attacks import AutoAttack

    if tiny:
        atk = AutoAttack(model, eps, version="custom", attacks_to_run=("apgd-ce", "square"), steps=5, n_queries=20)
    else:
        atk = AutoAttack(model, eps, version="standard")
    correct = _read(model, _adversarial(atk, X, Y, bs, "AutoAttack", progress), bs)["final"].argmax(1) == Y
    return {"n": int(Y.numel()), "accuracy": _pct(correct), "attack": str(atk), "version": "custom (toy)" if tiny else "standard"}


def evaluate_model(model: nn.Module, config, X: Tensor, Y: Tensor, *, sizes: Mapping[str, int | None],
                   stages_path: Path, surrogate: nn.Module | None = None, name: str = "", progress: bool = True,
                   stages: Sequence[str] = STAGES, tiny: bool = False) -> dict[str, Any]:
    """Run the evaluation ``stages`` on the test images ``X`` (N, 3, 32, 32) in [0, 1], labels ``Y``.

    Each stage's result is written to ``stages_path`` (JSON) as soon as it finishes, with the
    weights' digest; a second call skips the stages already there for the same weights.
    Returns ``{stage: result}`` and ``{stage: seconds}`` under ``"_time_s"``.
    """
    from ..attacks import PGD
    from ..engine.checkpoint import weights_digest
    from ..losses import parse_beta

    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ConfigError(f"unknown stages {unknown}; choose from {STAGES}")
    digest = weights_digest(model.state_dict())
    done: dict[str, Any] = {}
    if stages_path.exists():
        saved = json.loads(stages_path.read_text())
        if saved.get("weights_sha256") == digest:
            done = saved
    done.update({"weights_sha256": digest})
    done.setdefault("_time_s", {})
    cifs = config.defense == "cifs"
    eps, bs = config.eps, config.eval_batch_size
    take = lambda stage: (X, Y) if sizes[stage] is None else (X[:sizes[stage]], Y[:sizes[stage]])  # noqa: E731
    keep: dict[str, Tensor] = {}
    model.eval()
    for stage in stages:
        if stage in done:
            continue
        t0 = time.perf_counter()
        x, y = take(stage)
        if stage == "attacks":
            result = _stage_attacks(model, cifs, x, y, eps, bs, progress, keep)
        elif stage == "channels":
            if "pgd20" not in keep:  # the attacks stage ran in an earlier call
                keep["pgd20"] = _adversarial(PGD(model, eps, steps=20), x, y, bs, "PGD-20", progress)
            n = keep["pgd20"].shape[0]
            result = _stage_channels(model, x[:n], y[:n], bs, keep)
        elif stage == "sweep":
            result = _stage_sweep(model, cifs, x, y, eps, bs, progress)
        elif stage == "full_grad":
            col = done.get("sweep", {}).get("pgd20_lowest_column", {}).get("beta")
            betas = [0] + ([col] if col not in (None, "0") else [])
            result = _stage_full_grad(model, cifs, x, y, eps, bs, progress, [parse_beta(b) for b in betas])
        elif stage == "report":
            result = _stage_report(model, x, y, surrogate, name, progress, tiny)
        else:
            result = _stage_autoattack(model, x, y, eps, bs, progress, tiny)
        done[stage] = result
        done["_time_s"][stage] = round(time.perf_counter() - t0, 1)
        stages_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = stages_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(done))
        tmp.replace(stages_path)
    return done


def _git_commit() -> str | None:
    try:
        return subprocess.run(["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True,
                              text=True, timeout=10).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def _data_source(dataset: str) -> dict[str, Any]:
    if dataset.startswith("folder:"):
        marker = Path(dataset[7:]) / "SOURCE.json"
        if marker.exists():
            src = json.loads(marker.read_text())
            return {"dataset": dataset, "label": DATA_LABEL, "sha256": src.get("sha256"), "source": src.get("source")}
        return {"dataset": dataset, "label": f"image folder {dataset[7:]}", "sha256": None}
    return {"dataset": dataset, "label": "CIFAR-10 (torchvision)" if dataset == "cifar10" else dataset, "sha256": None}


def _hardware() -> dict[str, Any]:
    import os

    return {"machine": platform.machine(), "processor": platform.processor() or None, "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def run(dataset: str = "cifar10", out: str | Path = "reference-run", *, models: Sequence[str] = ("vanilla", "cifs"),
        seed: int = 0, tiny: bool = False, stages: Sequence[str] = STAGES, progress: bool = True,
        name: str | None = None, recipe: str = RECIPE, device: Any = None) -> dict[str, Any]:
    """Train (or resume) the reference models and evaluate them; write ``<out>/<name>.json``.

    Args:
        dataset: ``"cifar10"`` or ``"folder:<path>"`` (train/ and test/ image folders).
        out: folder for the run folders (``<out>/<model>/``) and the results.
        models: which of ``"vanilla"`` and ``"cifs"`` (both by default; one at a time lets two
            processes share a 2-core machine: run ``--model vanilla`` and ``--model cifs`` side by
            side, then once more with both to collect the JSON, which trains and evaluates nothing new).
        tiny: toy size (:data:`TINY_TRAINING`, :data:`SIZES` ``"tiny"``): minutes on a CPU.
        stages: evaluation stages (:data:`STAGES`); finished ones are skipped.
        recipe: :data:`RECIPES`; device: ``None`` (the recipe's) or e.g. ``"cpu"`` (a ``--tiny``
            check of the GPU recipe on a CPU).

    Returns:
        the results (the dict that :func:`load` returns for a committed run).
    """
    from ..training import load_model, train
    from ..training.data import load_tensors

    unknown = [m for m in models if m not in _MODELS]
    if unknown or not models:
        raise ConfigError(f"models must be a non-empty subset of {tuple(_MODELS)} (got {list(models)})")
    bad = [s for s in stages if s not in STAGES]
    if bad:
        raise ConfigError(f"unknown stages {bad}; choose from {STAGES}")
    out = Path(out)
    name = name or ("tiny" if tiny else "reference")
    graphs = {"cuda_graphs": True} if recipe == "reference-gpu" and device != "cpu" and torch.cuda.is_available() else {}
    configs = {m: reference_config(_MODELS[m], dataset, seed=seed, tiny=tiny, recipe=recipe, **graphs) for m in _MODELS}
    data = load_tensors(configs["vanilla"])
    order = test_order(data.y_test.numel(), seed)
    X, Y = data.x_test[order], data.y_test[order]
    results: dict[str, Any] = {}
    trained = {}
    for m in models:
        trained[m] = train(configs[m], run_dir=out / m, progress=progress, device=device)
    for m in models:
        other = "cifs" if m == "vanilla" else "vanilla"
        surrogate = load_model(out / other, "last") if (out / other / "last.pt").exists() else None
        model = trained[m].model.eval()
        dev = next(model.parameters()).device
        if surrogate is not None:
            surrogate = surrogate.to(dev)
        ev = evaluate_model(model, configs[m], X.to(dev), Y.to(dev), sizes=SIZES["tiny" if tiny else "full"],
                            stages_path=out / m / "reference_eval.json", surrogate=surrogate, name=m,
                            progress=progress, stages=stages, tiny=tiny)
        results[m] = {"run_name": configs[m].run_name, "config": configs[m].to_dict(),
                      "weights_sha256": ev["weights_sha256"], "history": trained[m].history,
                      "train_time_s": (trained[m].metrics or {}).get("train_time_s"),
                      "eval_time_s": ev["_time_s"], "eval": {s: ev[s] for s in STAGES if s in ev}}
    record = {"schema": SCHEMA, "name": name, "recipe": recipe, "tiny": tiny, "seed": seed,
              "data": _data_source(dataset), "classes": list(data.classes), "code_commit": _git_commit(), "hardware": _hardware(),
              "sizes": SIZES["tiny" if tiny else "full"], "models": results,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    if set(models) == set(_MODELS):
        validate(record)
        path = out / f"{name}.json"
        path.write_text(json.dumps(record, indent=None, separators=(",", ":")))
    return record


def export_weights(run_dir: str | Path, path: str | Path) -> Path:
    """Write the weights of ``<run_dir>/last.pt`` (no optimiser state: about 3 MB at width 16) to
    ``path``, a checkpoint that :func:`cifs_edu.training.load_model` reads."""
    from ..engine.checkpoint import atomic_torch_save, load_checkpoint

    src = Path(run_dir) / "last.pt"
    payload = load_checkpoint(src, kind="full")
    keep = ("format", "version", "config", "key", "epoch", "model", "weights_sha256", "data", "best")
    atomic_torch_save({**{k: payload[k] for k in keep if k in payload}, "kind": "weights"}, Path(path))
    return Path(path)


def extend(name: str, dataset: str, stages: Sequence[str], *, models: Sequence[str] = ("vanilla", "cifs"),
           progress: bool = True, work: str | Path | None = None) -> dict[str, Any]:
    """Run more evaluation ``stages`` on the committed weights of reference run ``name`` and write
    the results back into its JSON (e.g. ``stages=("autoattack",)`` when a session ran out of time).

    The weights are ``cifs_edu/data/reference/<name>-<model>.pt`` (:func:`export_weights`); their
    digest must be the one the results were computed on. Stages already in the record are kept.
    """
    import tempfile

    from ..training import load_model
    from ..training.data import load_tensors

    record = load(name)
    work = Path(work) if work is not None else Path(tempfile.mkdtemp(prefix=f"reference-{name}-"))
    cfgs = {m: _config_from(record["models"][m]["config"]) for m in models}
    data = load_tensors(next(iter(cfgs.values())).replace(dataset=dataset))
    order = test_order(data.y_test.numel(), record["seed"])
    X, Y = data.x_test[order], data.y_test[order]
    nets = {m: load_model(reference._DIR / f"{name}-{m}.pt").eval() for m in _MODELS}
    for m in models:
        r = record["models"][m]
        if nets[m].weights_sha256 != r["weights_sha256"]:
            raise ConfigError(f"{reference._DIR / f'{name}-{m}.pt'}: weights differ from those of the record {name!r}")
        stages_path = work / m / "reference_eval.json"
        stages_path.parent.mkdir(parents=True, exist_ok=True)
        stages_path.write_text(json.dumps({**r["eval"], "weights_sha256": r["weights_sha256"], "_time_s": r["eval_time_s"]}))
        other = nets["cifs" if m == "vanilla" else "vanilla"]
        ev = evaluate_model(nets[m], cfgs[m], X, Y, sizes=record["sizes"], stages_path=stages_path, surrogate=other,
                            name=m, progress=progress, stages=stages, tiny=bool(record.get("tiny")))
        r["eval"] = {s: ev[s] for s in STAGES if s in ev}
        r["eval_time_s"] = ev["_time_s"]
    from filelock import FileLock

    with FileLock(str(Path(tempfile.gettempdir()) / f"cifs_edu-reference-{name}.lock")):
        return _merge(name, record, models, stages)


def _merge(name: str, record: dict[str, Any], models: Sequence[str], stages: Sequence[str]) -> dict[str, Any]:
    """Write ``record``'s ``models`` into the committed results ``name`` as they are now on disk."""
    latest = load(name)  # another process may have extended the other model meanwhile: merge, do not overwrite
    for m in models:
        latest["models"][m] = record["models"][m]
    latest.setdefault("extended", []).append({"stages": list(stages), "models": list(models), "code_commit": _git_commit(),
                                              "hardware": _hardware(),
                                              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    validate(latest)
    tmp = reference._DIR / f"{name}.json.tmp"
    tmp.write_text(json.dumps(latest, indent=None, separators=(",", ":")))
    tmp.replace(reference._DIR / f"{name}.json")
    return latest


def _config_from(d: Mapping[str, Any]):
    from ..training import TrainConfig

    return TrainConfig.from_dict(d)

