"""One command for every benchmark: prints a table (text or markdown) and writes JSON.

    python -m benchmarks.run                      # steps, attack, PGD-20, relevance (about an hour on 2 busy cores)
    python -m benchmarks.run --quick              # the same, smaller (a few minutes)
    python -m benchmarks.run --only pgd --json out.json
    python -m benchmarks.run --only chapters,book # every chapter under nbval (cold, warm) and the cold book build

``--only`` takes any of: train, attack, at (the training engine's steps), pgd, relevance,
chapters, book (the last two are slow and never run by default). Medians over ``--repeats``
runs after warm-up, interleaved so that load changes hit every variant alike; min and max
are kept, with the process CPU time and the load average before and after. Nothing here
is a test: no number is asserted.
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from pathlib import Path

import torch

from .timing import load_average, machine_info

BENCHMARKS = ("train", "attack", "at", "pgd", "relevance", "chapters", "book")
DEFAULT = ("train", "attack", "at", "pgd", "relevance")

#: the issue's targets: (description, row selector, field, limit)
TARGETS = {
    "cifs_train_step_ratio": "CIFS train step / vanilla, width 64 (<= 1.05)",
    "cifs_at_step_ratio": "CIFS PGD-10 AT step / vanilla, width 64 (<= 1.05)",
    "pgd20_ratio_vs_torchattacks": "cifs_edu PGD-20 / torchattacks, vanilla (<= 0.9)",
    "chapters_nbval_cold_s": "all chapters under nbval, cold (<= 600 s)",
    "book_build_cold_s": "cold book build: jupyter-book build book/, models included (<= 480 s)",
}
LIMITS = {"cifs_train_step_ratio": 1.05, "cifs_at_step_ratio": 1.05, "pgd20_ratio_vs_torchattacks": 0.9,
          "chapters_nbval_cold_s": 600.0, "book_build_cold_s": 480.0}

PRESETS = {
    "full": dict(widths=(64, 8), batch=128, repeats=5, warmup=1, at_widths=(64, 8), at_repeats=3, at_steps=10,
                 pgd_width=64, pgd_batch=128, pgd_steps=20, pgd_repeats=3, pgd_defenses=("vanilla", "cifs"),
                 rel_widths=(64, 8), rel_repeats=30),
    "quick": dict(widths=(64, 8), batch=128, repeats=3, warmup=1, at_widths=(8,), at_repeats=2, at_steps=10,
                  pgd_width=16, pgd_batch=128, pgd_steps=20, pgd_repeats=2, pgd_defenses=("vanilla",),
                  rel_widths=(64, 8), rel_repeats=10),
    # for tests only: everything runs, nothing is meaningful
    "tiny": dict(widths=(4,), batch=8, repeats=1, warmup=0, at_widths=(4,), at_repeats=1, at_steps=2,
                 pgd_width=4, pgd_batch=8, pgd_steps=3, pgd_repeats=1, pgd_defenses=("vanilla", "cifs"),
                 rel_widths=(4,), rel_repeats=2),
}


def _ints(text: str) -> tuple[int, ...]:
    return tuple(int(t) for t in text.split(",") if t.strip())


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes and fewer repeats")
    p.add_argument("--tiny", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--only", default=",".join(DEFAULT), help=f"comma-separated subset of {','.join(BENCHMARKS)}")
    p.add_argument("--json", type=Path, default=None, help="write every row and the machine facts here")
    p.add_argument("--markdown", action="store_true", help="print the table as markdown")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--widths", type=_ints, default=None, help="ResNet-18 widths of the step benchmarks, e.g. 64,8")
    p.add_argument("--batch", type=int, default=None)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--at-repeats", type=int, default=None)
    p.add_argument("--at-widths", type=_ints, default=None)
    p.add_argument("--at-steps", type=int, default=None, help="PGD steps of the AT step (default 10, the paper's)")
    p.add_argument("--defenses", default="vanilla,cas,cifs,cifs_autograd",
                   help="step benchmarks: vanilla, cas, cifs, cifs_autograd (CIFS with autograd relevance)")
    p.add_argument("--variants", default="engine",
                   help="step benchmarks: engine, engine+cl, engine+fastatk, engine+cl+fastatk (comma-separated)")
    p.add_argument("--pgd-width", type=int, default=None)
    p.add_argument("--pgd-batch", type=int, default=None)
    p.add_argument("--pgd-repeats", type=int, default=None)
    p.add_argument("--pgd-defenses", default=None, help="vanilla,cifs")
    p.add_argument("--pgd-variants", default="exact,fold,cl,default",
                   help="cifs_edu PGD variants (exact, fold, cl, default); torchattacks is always timed")
    p.add_argument("--profile", default="smoke", help="profile of the chapter / book benchmarks")
    p.add_argument("--no-warm", action="store_true", help="chapters: only the cold run")
    args = p.parse_args(argv)
    only = tuple(s.strip() for s in args.only.split(",") if s.strip())
    bad = [s for s in only if s not in BENCHMARKS]
    if bad:
        p.error(f"unknown benchmark(s) {bad}; choose from {BENCHMARKS}")
    args.only = only
    preset = dict(PRESETS["tiny" if args.tiny else "quick" if args.quick else "full"])
    for key in ("widths", "batch", "repeats", "at_repeats", "at_widths", "at_steps", "pgd_width", "pgd_batch",
                "pgd_repeats"):
        if getattr(args, key) is not None:
            preset[key] = getattr(args, key)
    if args.pgd_defenses:
        preset["pgd_defenses"] = tuple(s for s in args.pgd_defenses.split(",") if s)
    if args.widths is not None and args.at_widths is None:
        preset["at_widths"] = tuple(w for w in preset["at_widths"] if w in args.widths) or args.widths
    args.preset = preset
    args.defenses = tuple(s for s in args.defenses.split(",") if s)
    args.variants = tuple(s for s in args.variants.split(",") if s)
    args.pgd_variants = tuple(s for s in args.pgd_variants.split(",") if s)
    from .pgd import VARIANTS
    from .steps import DEFENSES

    for given, known, what in ((args.pgd_variants, VARIANTS, "--pgd-variants"), (args.defenses, DEFENSES, "--defenses"),
                               (args.variants, ("engine", "engine+cl", "engine+fastatk", "engine+cl+fastatk"),
                                "--variants")):
        bad = [g for g in given if g not in known]
        if bad:
            p.error(f"{what}: unknown {bad}; choose from {tuple(known)}")
    return args


# ---------------------------------------------------------------------------- table
def _fmt_s(v) -> str:
    if v is None:
        return ""
    return f"{v * 1e3:.2f} ms" if v < 1 else f"{v:.3f} s"


def table_rows(rows: list[dict]) -> tuple[list[str], list[list[str]]]:
    head = ["benchmark", "case", "variant/width/batch", "median", "min", "max", "n", "ratio", "cpu ratio", "note"]
    out = []
    for r in rows:
        shape = []
        if r.get("variant"):
            shape.append(r["variant"])
        if r.get("width") is not None:
            shape.append(f"w{r['width']}")
        if r.get("batch") is not None:
            shape.append(f"b{r['batch']}")
        note = ""
        if r.get("ratio_to"):
            note = f"vs {r['ratio_to']}"
        if "agreement" in r:
            a = r["agreement"]
            keys = [k for k in a if k.startswith("predictions_equal")]
            note += (f"; preds same {a[keys[0]]:.4f}" if keys else "") + f"; rob.acc {a['robust_accuracy']:.1f}%"
        if r.get("units_per_s") is not None and r["benchmark"] in ("pgd", "steps"):
            note += f"; {r['units_per_s']:.1f} img/s"
        if "passed" in r:
            note += ("; " if note else "") + ("passed" if r["passed"] else "FAILED")
        if "max_abs_diff" in r:
            note += f"; max|diff| {r['max_abs_diff']:.1e}"
        out.append([r["benchmark"], r["case"], "/".join(shape), _fmt_s(r.get("median_s")), _fmt_s(r.get("min_s")),
                    _fmt_s(r.get("max_s")), str(r.get("n", "")),
                    f"{r['ratio']:.3f}" if r.get("ratio") is not None else "",
                    f"{r['cpu_ratio']:.3f}" if r.get("cpu_ratio") is not None else "", note.strip("; ")])
    return head, out


def format_table(rows: list[dict], markdown: bool = False) -> str:
    head, body = table_rows(rows)
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return "\n".join(lines)
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(head)]
    fmt = "  ".join(f"{{:{'<' if i < 3 or i == len(head) - 1 else '>'}{w}}}" for i, w in enumerate(widths))
    lines = [fmt.format(*head), fmt.format(*("-" * w for w in widths))]
    lines += [fmt.format(*r) for r in body]
    return "\n".join(lines)


def targets(rows: list[dict]) -> dict[str, dict]:
    """The issue's targets, measured (value, limit, met) or ``None`` when not measured."""
    def find(**kw):
        for r in rows:
            if all(r.get(k) == v for k, v in kw.items()):
                return r
        return None

    found = {
        "cifs_train_step_ratio": find(benchmark="steps", kind="train", defense="cifs", variant="engine", width=64),
        "cifs_at_step_ratio": find(benchmark="steps", kind="at", defense="cifs", variant="engine", width=64),
        "pgd20_ratio_vs_torchattacks": find(benchmark="pgd", defense="vanilla", impl="cifs_edu[default]"),
        "chapters_nbval_cold_s": find(benchmark="chapters", case="all chapters cold"),
        "book_build_cold_s": find(benchmark="book", case="cold book build (total)"),
    }
    out = {}
    for key, r in found.items():
        if r is None:
            out[key] = {"description": TARGETS[key], "value": None, "limit": LIMITS[key], "met": None}
            continue
        value = r["ratio"] if key.endswith("ratio") or "ratio" in key else r["median_s"]
        out[key] = {"description": TARGETS[key], "value": value, "cpu_value": r.get("cpu_ratio"),
                    "limit": LIMITS[key], "met": bool(value <= LIMITS[key]) and r.get("passed", True)}
    return out


def format_targets(t: dict[str, dict]) -> str:
    lines = ["Targets:"]
    for v in t.values():
        if v["value"] is None:
            lines.append(f"  {v['description']}: not measured")
        else:
            extra = f" (cpu-time ratio {v['cpu_value']:.3f})" if v.get("cpu_value") is not None else ""
            lines.append(f"  {v['description']}: {v['value']:.3f}{extra} -> {'met' if v['met'] else 'NOT met'}")
    return "\n".join(lines)


# ---------------------------------------------------------------------------- main
def main(argv=None) -> dict:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    pre = args.preset
    log = lambda msg: print(msg, flush=True)  # noqa: E731
    started = _dt.datetime.now().isoformat(timespec="seconds")
    load_before = load_average()
    log(f"cifs_edu benchmarks: {', '.join(args.only)} | threads {args.threads} | load {load_before}")
    rows: list[dict] = []
    t0 = time.perf_counter()
    kinds = tuple(k for k in ("train", "attack", "at") if k in args.only)
    if kinds:
        from . import steps

        rows += steps.run(widths=pre["widths"], batch=pre["batch"], defenses=args.defenses, kinds=kinds,
                          repeats=pre["repeats"], warmup=pre["warmup"], at_repeats=pre["at_repeats"],
                          at_widths=pre["at_widths"], at_steps=pre["at_steps"], variants=args.variants, log=log)
    if "pgd" in args.only:
        from . import pgd

        rows += pgd.run(width=pre["pgd_width"], batch=pre["pgd_batch"], steps=pre["pgd_steps"],
                        defenses=pre["pgd_defenses"], repeats=pre["pgd_repeats"], variants=args.pgd_variants, log=log)
    if "relevance" in args.only:
        from . import relevance

        for w in pre["rel_widths"]:
            rows += relevance.run(width=w, batch=pre["batch"], repeats=pre["rel_repeats"],
                                  warmup=max(1, pre["warmup"]), log=log)
    if "chapters" in args.only:
        from . import chapters

        rows += chapters.run_chapters(profile=args.profile, warm=not args.no_warm, threads=args.threads, log=log)
    if "book" in args.only:
        from . import chapters

        rows += chapters.run_book_build(profile=args.profile, threads=args.threads, log=log)
    result = {
        "started": started,
        "finished": _dt.datetime.now().isoformat(timespec="seconds"),
        "elapsed_s": time.perf_counter() - t0,
        "argv": list(sys.argv[1:] if argv is None else argv),
        "preset": {k: list(v) if isinstance(v, tuple) else v for k, v in pre.items()},
        "machine": machine_info("cpu"),
        "load_before": load_before,
        "load_after": load_average(),
        "rows": rows,
        "targets": targets(rows),
    }
    print()
    print(format_table(rows, markdown=args.markdown))
    print()
    print(format_targets(result["targets"]))
    print(f"load average before {load_before}, after {result['load_after']}; {args.threads} thread(s)")
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1))
        print(f"wrote {args.json}")
    return result


if __name__ == "__main__":
    main()
