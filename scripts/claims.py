"""Run every chapter once per seed and print the table claim x seed (``make claims SEEDS="0 1 2 3 4"``).

For each seed the book's models are trained (``python -m cifs_edu prepare --seed S``; cached runs
are only loaded: the seed is part of every run's cache key, so one cache holds every seed), then
every chapter is executed in a fresh kernel with ``CIFS_SEED=S``, two at a time, with errors
allowed so that one failing check does not hide the next. A chapter's checks are

- every :func:`cifs_edu.claims.claim` call (label, measured value, threshold), and
- every hidden cell (tag ``remove-cell``) holding an ``assert``: it passes when it raises
  nothing; its label is the cell's first comment line.

The table has one row per check and one column per seed; the script exits 1 if any check failed
for any seed (or a chapter did not run), 0 otherwise. The records are also written as JSON lines.

    python scripts/claims.py --seeds 0 1 2 3 4 [--home DIR] [--chapters 05 06] [--jobs 2]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOOK = ROOT / "book"


def _hidden_label(source: str, index: int) -> str:
    for line in source.splitlines():
        line = line.strip()
        if line.startswith("#"):
            text = line.lstrip("# ").strip()
            for prefix in ("Claims:", "Claim:", "Claims", "Claim"):
                if text.startswith(prefix):
                    text = text[len(prefix):].strip(" :")
            return f"cell {index}: {text[:70]}"
    return f"cell {index}: hidden assert"


def run_chapter(path: str, seed: int, env: dict[str, str], log: str, timeout: int) -> dict:
    """Execute one chapter (in this worker process) and return its hidden-cell records and timing."""
    import nbformat
    from nbclient import NotebookClient

    os.environ.update(env)
    os.environ.update({"CIFS_SEED": str(seed), "CIFS_CLAIMS_LOG": log, "CIFS_CLAIMS_CHAPTER": Path(path).stem,
                       "CIFS_BOOK_BUILD": "1", "MPLBACKEND": "Agg"})
    nb = nbformat.read(path, as_version=4)
    t0 = time.perf_counter()
    died = None
    try:
        NotebookClient(nb, timeout=timeout, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(BOOK)}}).execute()
    except Exception as e:  # noqa: BLE001 -- a dead kernel or a timeout: reported as a failed check
        died = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
    records = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        tags = cell.get("metadata", {}).get("tags", [])
        errors = [o for o in cell.get("outputs", []) if o.get("output_type") == "error"
                  and "raises-exception" not in tags]  # a cell that shows an error on purpose
        hidden = "remove-cell" in tags
        if hidden and "assert" in cell.source or errors:
            err = f"{errors[0]['ename']}: {errors[0]['evalue']}"[:300] if errors else ""
            ran = cell.get("execution_count") is not None
            records.append({"chapter": Path(path).stem, "label": _hidden_label(cell.source, i), "ok": ran and not errors,
                            "error": err or ("" if ran else "not executed"), "cell": True})
    if died:
        records.append({"chapter": Path(path).stem, "label": "chapter ran to the end", "ok": False, "error": died, "cell": True})
    return {"chapter": Path(path).stem, "seconds": time.perf_counter() - t0, "records": records}


def run_seed(seed: int, chapters: list[Path], jobs: int, env: dict[str, str], out: Path, timeout: int) -> list[dict]:
    """Train the seed's models, then run the chapters ``jobs`` at a time; returns every record."""
    t0 = time.perf_counter()
    print(f"[claims] seed {seed}: models (prepare --jobs {jobs})", flush=True)
    subprocess.run([sys.executable, "-m", "cifs_edu", "prepare", "--jobs", str(jobs), "--seed", str(seed)],
                   check=True, env={**os.environ, **env, "CIFS_SEED": str(seed)}, cwd=ROOT)
    log = out / f"claims-seed{seed}.jsonl"
    log.unlink(missing_ok=True)
    log.touch()
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        futures = [pool.submit(run_chapter, str(c), seed, env, str(log), timeout) for c in chapters]
        results = [f.result() for f in futures]
    records = []
    for r in results:
        print(f"[claims] seed {seed}: {r['chapter']} {r['seconds']:.0f} s", flush=True)
        records += r["records"]
    records += [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    print(f"[claims] seed {seed} done in {time.perf_counter() - t0:.0f} s", flush=True)
    return [{**r, "seed": seed} for r in records]


def _cell(r: dict | None) -> str:
    if r is None:
        return "-"
    mark = "ok" if r["ok"] else "FAIL"
    if "value" in r:
        return f"{mark} {r['value']:.4g}"
    return mark if r["ok"] else f"FAIL ({r.get('error', '')[:40]})"


def table(records: list[dict], seeds: list[int]) -> str:
    """Markdown table: one row per check (chapter, label, threshold), one column per seed."""
    rows: dict[tuple[str, str], dict[int, dict]] = {}
    for r in records:
        rows.setdefault((r["chapter"], r["label"]), {})[r["seed"]] = r
    head = "| chapter | check | needs | " + " | ".join(f"seed {s}" for s in seeds) + " |"
    lines = [head, "|" + "---|" * (3 + len(seeds))]
    for (chapter, label), by_seed in sorted(rows.items()):
        any_r = next(iter(by_seed.values()))
        needs = f"{any_r['op']} {any_r['threshold']:.4g}" if "op" in any_r else "no error"
        if any_r.get("note"):
            needs += f" ({any_r['note']})"
        lines.append(f"| {chapter} | {label} | {needs} | " + " | ".join(_cell(by_seed.get(s)) for s in seeds) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="seeds (default 0 1 2 3 4)")
    p.add_argument("--chapters", nargs="*", help="chapter prefixes, e.g. 05 06 (default: all)")
    p.add_argument("--jobs", type=int, default=2, help="training processes and kernels at a time (default 2)")
    p.add_argument("--home", help="CIFS_HOME for the models (default: the current one)")
    p.add_argument("--out", default=str(ROOT / "_build" / "claims"), help="folder for the JSON lines and the table")
    p.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    args = p.parse_args(argv)
    if any(s < 0 for s in args.seeds) or args.jobs < 1:
        p.error("seeds must be >= 0 and --jobs >= 1")
    chapters = sorted(BOOK.glob("[0-9][0-9]_*.ipynb"))
    if args.chapters:
        chapters = [c for c in chapters if any(c.name.startswith(x) for x in args.chapters)]
        if not chapters:
            p.error(f"no chapter matches {args.chapters}")
    env = {"CIFS_PROFILE": os.environ.get("CIFS_PROFILE", "smoke")}
    if args.home:
        env["CIFS_HOME"] = str(Path(args.home).resolve())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    records: list[dict] = []
    for seed in args.seeds:
        records += run_seed(seed, chapters, args.jobs, env, out, args.timeout)
    text = table(records, args.seeds)
    (out / "claims.md").write_text(text + "\n")
    (out / "claims.json").write_text(json.dumps(records, indent=1))
    failed = [r for r in records if not r["ok"]]
    print(text)
    print(f"[claims] {len(records) - len(failed)} of {len(records)} checks passed over seeds {args.seeds}; "
          f"table in {out / 'claims.md'}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
