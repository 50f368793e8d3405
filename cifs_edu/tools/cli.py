"""Command line: ``python -m cifs_edu {train, eval, reproduce, prepare, reference, list}``.

Examples::

    python -m cifs_edu train --profile smoke --defense cifs --method pgd_at
    python -m cifs_edu train --profile laptop --dataset folder:/data/cifar10-sample --defense cifs
    python -m cifs_edu eval ~/.cache/cifs_edu/runs/smoke-resnet18-cifs-pgd_at-<key> --attack pgd20 --attack cw
    python -m cifs_edu eval RUN_DIR --attack sweep --n 200
    python -m cifs_edu reproduce table1 --profile smoke
    python -m cifs_edu prepare --jobs 2        # train every model the book uses, two at a time
    python -m cifs_edu reference --dataset folder:/data/cifar10 --out runs/reference   # the real-data reference run
    python -m cifs_edu list
    torchrun --nproc_per_node=4 -m cifs_edu train --profile paper --defense cifs     # several GPUs

Results are JSON files next to the checkpoints (``results.json`` of a run; ``eval/*.json``
for ``eval``; ``runs_dir()/tables/<table>-<profile>.json`` for ``reproduce``) and the
same JSON is printed on stdout (``--json``) or summarised. Configuration and data errors
print one line and exit with status 2. ``train`` and ``reproduce`` use the CPU threads that
:func:`cifs_edu.setup` would (``CIFS_THREADS``, else one for ``smoke``); ``prepare`` has ``--threads``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import sys
from typing import Any, Sequence

from ..errors import ConfigError
from ..profiles import PROFILES

__all__ = ["main", "build_parser", "command_options"]


def _value(text: str) -> Any:
    """Parse a --set value: JSON when possible (numbers, true/false/null, lists), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _pairs(items: Sequence[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"{flag} expects KEY=VALUE (got {item!r})")
        k, v = item.split("=", 1)
        out[k.strip()] = _value(v.strip())
    return out


def _list_value(text: str) -> list[Any]:
    """A list flag: JSON (``[3,4]``) or comma-separated (``3,4``, ``natural,pgd20``)."""
    value = _value(text)
    if isinstance(value, list):
        return value
    return [_value(part.strip()) for part in str(text).split(",") if part.strip()]


def _bool_value(text: str) -> bool:
    low = text.strip().lower()
    if low in ("true", "1", "yes", "on"):
        return True
    if low in ("false", "0", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false (got {text!r})")


def _add_config_options(parser: argparse.ArgumentParser) -> None:
    """One ``--field-name`` per TrainConfig field (not ``profile``, ``model_options``), typed and
    described from the config itself: the CLI and the Python API share one configuration spine."""
    from ..training import TrainConfig
    from ..training.config import FIELD_CHOICES, FIELD_HELP

    for f in dataclasses.fields(TrainConfig):
        if f.name in ("profile", "model_options"):
            continue
        kw: dict[str, Any] = {"dest": f.name, "default": None, "help": FIELD_HELP[f.name]}
        kind = str(f.type)
        if kind == "bool":
            kw.update(type=_bool_value, nargs="?", const=True, metavar="BOOL")
        elif f.name in FIELD_CHOICES:
            kw.update(choices=FIELD_CHOICES[f.name])
        elif kind.startswith("tuple"):
            kw.update(type=_list_value, metavar="A,B")
        else:
            kw.update(type=_value, metavar=f.name.upper())
        parser.add_argument("--" + f.name.replace("_", "-"), **kw)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m cifs_edu``."""
    from ..cifs import IMGFS
    from ..evaluate import ATTACK_HELP

    p = argparse.ArgumentParser(prog="python -m cifs_edu", description="Train, evaluate and reproduce CIFS (Yan et al., ICML 2021).")
    sub = p.add_subparsers(dest="command", required=True, metavar="{train,eval,reproduce,prepare,reference,list}")

    t = sub.add_parser("train", help="train (or resume) one model", description="Train one model; resumes an interrupted run of the same configuration.")
    t.add_argument("--profile", choices=sorted(PROFILES), default=None, help="scale of the run (default: $CIFS_PROFILE or smoke)")
    _add_config_options(t)  # --arch, --defense, --method, --epochs, --lr, ...: every TrainConfig field
    t.add_argument("--imgf", choices=IMGFS, help="CIFS importance-mask function")
    t.add_argument("--k", type=int, help="CIFS top-k (default 2)")
    t.add_argument("--positions", help="CIFS/CAS positions, comma-separated (P1 = last block, P2 = second-to-last)")
    t.add_argument("--set", action="append", metavar="FIELD=VALUE", help="any TrainConfig field, e.g. --set lr=0.05 --set milestones=[3,4] (repeatable)")
    t.add_argument("--option", action="append", metavar="KEY=VALUE", help="any build_model option, e.g. --option probes=linear (repeatable)")
    t.add_argument("--run-dir", help="run folder (default: runs_dir()/<profile>-<arch>-<defense>-<method>-<key>)")
    t.add_argument("--no-resume", action="store_true", help="start over even if a checkpoint of this run exists")
    t.add_argument("--device", choices=["cpu", "cuda"], help="force a device (default from the profile)")
    t.add_argument("--max-epochs", type=int, help="stop after this many epochs (resume later with the same command)")
    t.add_argument("--no-progress", action="store_true", help="no progress bars")
    t.add_argument("--json", action="store_true", help="print the full results JSON")

    e = sub.add_parser("eval", help="evaluate a trained run under attacks", description="Evaluate a run folder or checkpoint on its test split.")
    e.add_argument("source", help="run folder or checkpoint file (last.pt / best.pt)")
    e.add_argument("--attack", action="append", metavar="NAME", help=f"attack ({ATTACK_HELP}, or sweep = PGD-20 over the attacker's betas); repeatable; default pgd20")
    e.add_argument("--sweep", action="store_true", help="CIFS/CAS: worst case over the attacker's betas (Table B.3)")
    e.add_argument("--beta-atk", help="attacker's beta for CIFS/CAS (default: the training beta)")
    e.add_argument("--which", choices=["last", "best"], default="last", help="checkpoint of a run folder (default last)")
    e.add_argument("--n", type=int, help="test images (default: the run's eval_n)")
    e.add_argument("--device", choices=["cpu", "cuda"], help="force a device")
    e.add_argument("--no-cache", action="store_true", help="recompute even if this evaluation was saved")
    e.add_argument("--no-progress", action="store_true", help="no progress bars")
    e.add_argument("--json", action="store_true", help="print the full JSON")

    r = sub.add_parser("reproduce", help="run the models behind a paper table and compare", description="Train (once) and evaluate the models of a paper table; print the paper's numbers beside the run's.")
    r.add_argument("table", help="table key or prefix (see `list`), e.g. table1 or tableE2_positions")
    r.add_argument("--profile", choices=sorted(PROFILES), default=None, help="scale (default: $CIFS_PROFILE or smoke)")
    r.add_argument("--rows", help="only these rows, comma-separated")
    r.add_argument("--set", action="append", metavar="FIELD=VALUE", help="TrainConfig field for every row, e.g. --set epochs=2 (repeatable)")
    r.add_argument("--device", choices=["cpu", "cuda"], help="force a device")
    r.add_argument("--no-progress", action="store_true", help="no progress bars")

    pr = sub.add_parser("prepare", help="train every model the book uses (and its sweeps), in parallel",
                        description="Train (once) every model the book's chapters load, and run the beta_atk sweeps "
                                    "they show, several processes at a time; the chapters then read the cache.")
    pr.add_argument("--profile", choices=sorted(PROFILES), default=None, help="scale (default: $CIFS_PROFILE or smoke)")
    pr.add_argument("--jobs", type=int, default=1, help="processes at a time (default 1; 2 on a 2-core machine)")
    pr.add_argument("--threads", type=int, default=None, help="CPU threads per process (default: the profile's; 1 for smoke)")
    pr.add_argument("--seed", type=int, default=None, help="the models' seed (default: $CIFS_SEED or 0)")
    pr.add_argument("--plan", action="store_true", help="only list the models and sweeps, train nothing")

    rf = sub.add_parser("reference", help="train and evaluate the reference models on real CIFAR-10",
                        description="Train (or resume) the reference-cpu recipe (vanilla and CIFS, same budget, schedule "
                                    "and seed), evaluate them on the test images and write <out>/<name>.json, the file "
                                    "that cifs_edu.reference.load reads (see cifs_edu.reference).")
    rf.add_argument("--dataset", default="cifar10", help="'cifar10' (torchvision's download) or 'folder:<path>' (default cifar10)")
    rf.add_argument("--out", default="reference-run", help="folder for the run folders and the results (default ./reference-run)")
    rf.add_argument("--model", action="append", choices=["vanilla", "cifs"], help="train/evaluate only this model (repeatable; default both)")
    rf.add_argument("--stage", action="append", help="evaluation stage (repeatable; default all: attacks, channels, sweep, full_grad, report, autoattack)")
    rf.add_argument("--seed", type=int, default=0, help="seed of both models (default 0)")
    rf.add_argument("--tiny", action="store_true", help="toy size: a few hundred images, two epochs, small attacks (minutes)")
    rf.add_argument("--recipe", choices=["reference-cpu", "reference-gpu"], default="reference-cpu",
                    help="reference-cpu (width 16, PGD-3; default) or reference-gpu (width 64, PGD-10, one GPU)")
    rf.add_argument("--device", choices=["cpu", "cuda"], help="force a device (default: the recipe's)")
    rf.add_argument("--name", help="results file name <out>/<name>.json (default: reference, or tiny with --tiny)")
    rf.add_argument("--extend", metavar="NAME", help="instead of training: run the --stage stages on the committed weights "
                    "of reference results NAME (e.g. cpu) and write them into its JSON")
    rf.add_argument("--no-progress", action="store_true", help="no progress bars")

    sub.add_parser("list", help="list the reproducible tables", description="List the tables `reproduce` knows.")
    return p


def command_options(command: str) -> list[tuple[str, str]]:
    """The options of one sub-command (``"train"``, ``"eval"``, ``"reproduce"``, ``"list"``) as
    ``(flags, help)`` pairs, e.g. ``("--lr", "learning rate ...")``, in the order ``--help`` prints them.

    Raises:
        ValueError: unknown command (the message lists the known ones).
    """
    parser = build_parser()
    subs = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if command not in subs.choices:
        raise ValueError(f"unknown command {command!r}: choose one of {sorted(subs.choices)}")
    return [(", ".join(a.option_strings), a.help or "") for a in subs.choices[command]._actions
            if a.option_strings and a.dest != "help"]


@contextlib.contextmanager
def _cpu_threads(profile: str | None):
    """Use the thread policy of :func:`cifs_edu.setup` while a command runs (``CIFS_THREADS``, else
    the profile's: one thread for ``smoke``), then restore torch's setting (``main`` may run in-process)."""
    import torch

    from ..profiles import get_profile
    from ..runtime import cpu_threads

    before = torch.get_num_threads()
    n = cpu_threads(get_profile(profile))
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _train(args) -> int:
    from ..training import TrainConfig, train

    fields = [f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("profile", "model_options")]
    over: dict[str, Any] = {name: getattr(args, name) for name in fields if getattr(args, name) is not None}
    options = _pairs(args.option, "--option")
    for name in ("imgf", "k"):
        if getattr(args, name) is not None:
            options[name] = getattr(args, name)
    if args.positions:
        options["positions"] = [p.strip() for p in args.positions.split(",") if p.strip()]
    if options:
        over["model_options"] = options
    over.update(_pairs(args.set, "--set"))
    config = TrainConfig.from_profile(args.profile, **over)
    result = train(config, run_dir=args.run_dir, resume=not args.no_resume, progress=not args.no_progress,
                   device=args.device, max_epochs=args.max_epochs)
    from ..engine import distributed as dist

    if not dist.is_main():
        return 0
    if result.metrics is None:
        print(f"stopped after epoch {len(result.history)} of {config.epochs}; resume with the same command. run: {result.run_dir}")
        return 0
    if args.json:
        print(json.dumps(result.metrics, indent=2))
    else:
        print(f"run      : {result.run_dir}")
        print(f"epochs   : {result.metrics['epochs']} (trained now: {result.trained_epochs}); best epoch {result.metrics['best_epoch']}")
        print(f"last     : {_fmt(result.metrics['last'])}")
        if result.metrics.get("best"):
            print(f"best     : {_fmt(result.metrics['best'])}")
        print(f"results  : {result.run_dir / 'results.json'}")
    return 0


def _fmt(acc: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.2f}%" for k, v in acc.items())


def _eval(args) -> int:
    from ..training import evaluate_run

    attacks = args.attack or ["pgd20"]
    sweep = args.sweep
    if "sweep" in attacks:
        attacks = [a for a in attacks if a != "sweep"] or []
        if "pgd20" not in attacks:
            attacks.append("pgd20")
        sweep = True
    result = evaluate_run(args.source, attacks, which=args.which, n=args.n, sweep=sweep,
                          beta=_value(args.beta_atk) if args.beta_atk is not None else None,
                          device=args.device, progress=not args.no_progress, cache=not args.no_cache)
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"run     : {result['run_name']} ({result['spec']['checkpoint']}, epoch {result['spec']['epoch']})")
        for name, acc in result["accuracy"].items():
            extra = ""
            if name in result.get("per_beta", {}):
                extra = "  (per beta_atk: " + ", ".join(f"{b}: {v:.2f}" for b, v in result["per_beta"][name].items()) + ")"
            print(f"{name:10s}: {acc:6.2f}% of {result['n'][name]}{extra}")
        print(f"saved   : {result['path']}")
    return 0


def _reproduce(args) -> int:
    from .reproduce import reproduce
    from ..profiles import get_profile

    rows = [r.strip() for r in args.rows.split(",")] if args.rows else None
    reproduce(args.table, get_profile(args.profile).name, rows=rows, device=args.device,
              progress=not args.no_progress, verbose=True, **_pairs(args.set, "--set"))
    return 0


def _prepare(args) -> int:
    from .. import zoo
    from ..profiles import get_profile

    profile = get_profile(args.profile)
    if args.plan:
        for item in zoo.book_plan(profile, args.seed):
            sweep = f"sweep on {item.sweep_n or 'all'} test images" if item.sweep else "no sweep"
            print(f"{item.name:26s} {item.config.run_name}  ({sweep})")
        return 0
    from ..engine.prepare import prepare

    prepare(profile, jobs=args.jobs, threads=args.threads, seed=args.seed)
    return 0


def _reference(args) -> int:
    from .. import reference
    from . import reference_run

    if args.extend:
        rec = reference_run.extend(args.extend, args.dataset, tuple(args.stage or ("autoattack",)),
                               models=tuple(args.model or ("vanilla", "cifs")), progress=not args.no_progress)
        print(reference.table1(rec).round(1).to_string())
        return 0
    rec = reference_run.run(args.dataset, args.out, models=tuple(args.model or ("vanilla", "cifs")), seed=args.seed,
                            tiny=args.tiny, stages=tuple(args.stage or reference_run.STAGES),
                            progress=not args.no_progress, recipe=args.recipe, device=args.device, name=args.name)
    print(reference.table1(rec).round(1).to_string())
    return 0


def _list(args) -> int:
    from ..experiments import list_tables

    for t in list_tables():
        hours = "?" if t["gpu_hours_paper"] is None else f"{t['gpu_hours_paper']:.0f}"
        print(f"{t['key']:32s} {len(t['rows'])} models, {t['which']:4s}, ~{hours:>4s} H100-h at paper | {t['title']}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for configuration, data and checkpoint errors)."""
    from ..engine.checkpoint import CheckpointError

    try:
        from ..datasets import DataNotFoundError
    except ImportError:  # pragma: no cover - the data module is part of the package
        DataNotFoundError = FileNotFoundError  # type: ignore[misc,assignment]

    parser = build_parser()
    args = parser.parse_args(argv)
    handlers = {"train": _train, "eval": _eval, "reproduce": _reproduce, "prepare": _prepare, "reference": _reference, "list": _list}
    try:
        if args.command in ("train", "reproduce"):  # prepare sets threads in its workers; eval has no profile
            with _cpu_threads(args.profile):
                return handlers[args.command](args)
        return handlers[args.command](args)
    except (ConfigError, DataNotFoundError, CheckpointError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    finally:
        from ..engine import distributed as dist

        dist.shutdown()
