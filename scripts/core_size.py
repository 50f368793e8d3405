"""How much of the library a chapter makes its reader hold: lines of every ``cifs_edu`` module loaded
while the chapter runs (issue 19's "teaching core": everything a chapter imports, minus the engine).

Each chapter notebook is executed in its own kernel (as ``pytest --nbval`` and the book build do);
one cell appended at the end lists the ``cifs_edu`` modules in ``sys.modules``. Lines are
``wc -l`` lines of those modules' files, split into the core, ``cifs_edu.engine`` and
``cifs_edu.tools`` (the programs, which no chapter should load).

    python scripts/core_size.py                       # every chapter, 2 kernels at a time
    python scripts/core_size.py --chapters 03 06 --json benchmarks/results/core_size.json
    python scripts/core_size.py --executed            # also: which modules' functions actually ran

``--executed`` runs each chapter under ``coverage`` (source ``cifs_edu``, engine and tools left out) and
adds, per chapter, the lines of the core modules in which at least one function body ran, and for
the union the functions no chapter ran.

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


def loaded_modules(notebook: Path, timeout: int, coverage_file: Path | None = None) -> list[str]:
    """Execute ``notebook`` (cwd: its folder) and return the ``cifs_edu`` modules its kernel loaded
    (with ``coverage_file``: record the lines of the core that ran there)."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(notebook, as_version=4)
    if coverage_file is not None:
        nb.cells.insert(0, nbformat.v4.new_code_cell(
            f"import coverage as _cv; _cov = _cv.Coverage(data_file={str(coverage_file)!r}, source=['cifs_edu'], "
            "omit=['*/engine/*', '*/tools/*']); _cov.start()"))
        nb.cells.append(nbformat.v4.new_code_cell("_cov.stop(); _cov.save()"))
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


def _function_bodies(path: Path) -> list[tuple[str, int, set[int]]]:
    """``(qualified name, lines, body line numbers)`` of every function of a module, nested ones included."""
    import ast

    out: list[tuple[str, int, set[int]]] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                out.append((prefix + child.name, child.end_lineno - child.lineno + 1,
                            set(range(child.body[0].lineno, child.end_lineno + 1))))
                visit(child, prefix + child.name + ".")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")

    visit(ast.parse(path.read_text()), "")
    return out


def executed(coverage_files: dict[str, Path]) -> dict[str, object]:
    """Per chapter: lines of the core modules in which some function body ran; for all chapters:
    the functions (outermost unexecuted ones) that no chapter ran, and their lines."""
    import coverage

    core = [p for p in sorted((ROOT / "cifs_edu").rglob("*.py")) if tier(_module_name(p)) == "core"]
    bodies = {p: _function_bodies(p) for p in core}
    size = {p: len(p.read_text().splitlines()) for p in core}
    ran: dict[Path, set[int]] = {p: set() for p in core}
    rows: dict[str, int] = {}
    for chapter, file in coverage_files.items():
        data = coverage.CoverageData(basename=str(file))
        data.read()
        used = 0
        for p in core:
            lines = set(data.lines(str(p)) or ())
            ran[p] |= lines
            if any(lines & body for _, _, body in bodies[p]):
                used += size[p]
        rows[chapter] = used
    rows["all chapters (union)"] = sum(size[p] for p in core
                                       if any(ran[p] & body for _, _, body in bodies[p]))
    never: list[tuple[int, str]] = []
    for p in core:
        skip: list[str] = []
        for name, n, body in bodies[p]:
            if not body & ran[p] and not any(name.startswith(s + ".") for s in skip):
                skip.append(name)
                never.append((n, f"{p.relative_to(ROOT / 'cifs_edu')}:{name}"))
    return {"lines of modules whose functions ran": rows,
            "functions no chapter ran": {"lines": sum(n for n, _ in never), "functions": sorted(never, reverse=True)}}


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
    return ".".join(parts)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chapters", nargs="*", help="chapter prefixes, e.g. 03 06 (default: every chapter)")
    p.add_argument("--jobs", type=int, default=2, help="kernels at a time (default 2)")
    p.add_argument("--timeout", type=int, default=900, help="seconds per cell (default 900)")
    p.add_argument("--json", type=Path, help="also write the numbers here")
    p.add_argument("--executed", action="store_true", help="also measure which modules' functions ran (coverage)")
    args = p.parse_args(argv)
    books = sorted((ROOT / "book").glob("[0-9]*.ipynb"))
    if args.chapters:
        books = [b for b in books if any(b.name.startswith(c) for c in args.chapters)]
        if not books:
            p.error(f"no chapter matches {args.chapters}")
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="core_size_"))
    cov = {b.name: tmp / f".coverage.{b.stem}" for b in books} if args.executed else {}
    with concurrent.futures.ThreadPoolExecutor(max(1, args.jobs)) as pool:
        loaded = dict(zip((b.name for b in books),
                          pool.map(lambda b: loaded_modules(b, args.timeout, cov.get(b.name)), books)))
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
    report: dict[str, object] = {"lines": rows, "modules": loaded}
    if args.executed:
        report["executed"] = ran = executed(cov)
        print("core lines of the modules whose functions ran:")
        for name, n in ran["lines of modules whose functions ran"].items():
            print(f"  {name:{width}s}  {n:6d}")
        never = ran["functions no chapter ran"]
        print(f"functions no chapter ran: {never['lines']} lines; largest:",
              ", ".join(f"{name} {n}" for n, name in never["functions"][:10]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
