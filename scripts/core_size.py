"""How much of the library a chapter makes its reader hold: lines of every ``cifs_edu`` module loaded
while the chapter runs (issue 19's "teaching core": everything a chapter imports, minus the engine).

Each chapter notebook is executed in its own kernel (as ``pytest --nbval`` and the book build do);
one cell appended at the end lists the ``cifs_edu`` modules in ``sys.modules``. Lines are
``wc -l`` lines of those modules' files, split into the core, ``cifs_edu.engine`` and
``cifs_edu.tools`` (the programs, which no chapter should load).

    python scripts/core_size.py                       # every chapter, 2 kernels at a time
    python scripts/core_size.py --chapters 03 06 --json benchmarks/results/core_size.json

The chapters train nothing new when their models are cached (``python -m cifs_edu prepare``).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MARK = "CIFS_EDU_MODULES="
PROBE = ("import sys as _s, json as _j\n"
         f"print({MARK!r} + _j.dumps(sorted(m for m in _s.modules if m == 'cifs_edu' or m.startswith('cifs_edu.'))))")


def module_lines(name: str) -> int:
    """``wc -l`` of the module's source file (a package's ``__init__.py``)."""
    path = ROOT.joinpath(*name.split("."))
    path = path / "__init__.py" if path.is_dir() else path.with_suffix(".py")
    return len(path.read_text().splitlines())


def tier(name: str) -> str:
    """``engine``, ``tools`` or ``core``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in ("engine", "tools") else "core"


def loaded_modules(notebook: Path, timeout: int) -> list[str]:
    """Execute ``notebook`` (cwd: its folder) and return the ``cifs_edu`` modules its kernel loaded."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    nb.cells.append(nbformat.v4.new_code_cell(PROBE))
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(notebook.parent)}}).execute()
    for out in nb.cells[-1].get("outputs", []):
        for line in out.get("text", "").splitlines():
            if line.startswith(MARK):
                return json.loads(line[len(MARK):])
    raise RuntimeError(f"{notebook.name}: the probe cell printed nothing")


def summarise(modules: list[str]) -> dict[str, int]:
    out = {"core": 0, "engine": 0, "tools": 0}
    for m in modules:
        out[tier(m)] += module_lines(m)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chapters", nargs="*", help="chapter prefixes, e.g. 03 06 (default: every chapter)")
    p.add_argument("--jobs", type=int, default=2, help="kernels at a time (default 2)")
    p.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    args = p.parse_args(argv)
    books = sorted((ROOT / "book").glob("[0-9]*.ipynb"))
    if args.chapters:
        books = [b for b in books if any(b.name.startswith(c) for c in args.chapters)]
        if not books:
            p.error(f"no chapter matches {args.chapters}")
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        loaded = dict(zip((b.name for b in books), pool.map(lambda b: loaded_modules(b, args.timeout), books)))
    union = sorted(set().union(*loaded.values()))
    rows = {name: summarise(mods) for name, mods in loaded.items()}
    rows["all chapters (union)"] = summarise(union)
    width = max(map(len, rows))
    print(f"{'chapter':{width}s}  {'core':>6s}  {'engine':>6s}  {'tools':>6s}")
    for name, r in rows.items():
        print(f"{name:{width}s}  {r['core']:6d}  {r['engine']:6d}  {r['tools']:6d}")
    print("largest core modules of the union:",
          ", ".join(f"{m} {module_lines(m)}" for m in sorted(union, key=module_lines, reverse=True)
                    if tier(m) == "core")[:400])
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"lines": rows, "modules": loaded}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
