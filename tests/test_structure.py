"""The library's structure: no import cycles (lazy imports inside functions included), and the book's
build machinery stays outside it."""
from __future__ import annotations

import ast
import collections

from .conftest import ROOT

PKG = ROOT / "cifs_edu"


def _import_graph() -> dict[str, set[str]]:
    """module -> library modules it imports anywhere in its source (``cifs_edu.x.y`` names)."""
    mods = {}
    for p in PKG.rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p
    graph: dict[str, set[str]] = collections.defaultdict(set)
    for name, p in mods.items():
        pkg = name if p.name == "__init__.py" else name.rsplit(".", 1)[0]
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                hits = {f"{target}.{a.name}" for a in node.names} & set(mods)
                graph[name] |= (hits or ({target} & set(mods))) - {name}
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names} & set(mods) - {name}
    return {m: graph[m] for m in mods}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_library_has_no_import_cycles():
    graph = _import_graph()
    assert "cifs_edu.cifs" in graph and graph["cifs_edu"]  # the scan sees the package
    assert _cycles(graph) == []


def test_the_scan_finds_a_cycle_when_there_is_one():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_library_module_imports_the_book_executor():
    for p in PKG.rglob("*.py"):
        for node in ast.walk(ast.parse(p.read_text())):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any("bookexec" in n for n in names), p


def _line_count(paths) -> int:
    return sum(len(p.read_text().splitlines()) for p in paths)


def test_neither_the_core_nor_the_chapters_import_the_tools():
    """cifs_edu.tools (CLI, reference-run program) sits above the core: only tools and __main__ import it."""
    graph = _import_graph()
    for mod, deps in graph.items():
        if not mod.startswith(("cifs_edu.tools", "cifs_edu.__main__")):
            assert not any(d.startswith("cifs_edu.tools") for d in deps), mod
    for md in (ROOT / "book").glob("*.md"):
        assert "cifs_edu.tools" not in md.read_text() and "cifs_edu.cli" not in md.read_text(), md


def test_the_engine_stays_within_its_line_budget():
    """Issue 19: the scale machinery (cifs_edu/engine) is at most 1,500 lines."""
    assert _line_count((PKG / "engine").glob("*.py")) <= 1500


def test_the_package_imports_its_names_on_first_use():
    """``import cifs_edu.cifs`` loads the CIFS layer alone; every public name still resolves to its home module's object."""
    import importlib
    import subprocess
    import sys

    code = ("import sys, cifs_edu.cifs; "
            "print(sorted(m for m in sys.modules if m.startswith('cifs_edu')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert eval(out) == ["cifs_edu", "cifs_edu._version", "cifs_edu.cifs", "cifs_edu.errors"]
    import cifs_edu

    for name in cifs_edu.__all__:
        value = getattr(cifs_edu, name)
        home = cifs_edu._HOME.get(name)
        if home is not None:
            assert value is getattr(importlib.import_module(f"cifs_edu.{home}"), name), name
    assert set(cifs_edu._HOME) <= set(cifs_edu.__all__)
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'no_such_name'"):
        cifs_edu.no_such_name  # noqa: B018


def test_attacks_and_models_load_what_is_used():
    """``from cifs_edu.attacks import PGD`` loads no AutoAttack, C&W or beta sweep; ``build_model("resnet18")``
    loads neither the WRN nor the checkpoint loaders; every public name of both packages resolves to its home."""
    import importlib
    import subprocess
    import sys

    code = ("import sys; from cifs_edu.attacks import PGD; from cifs_edu.models import build_model; "
            "build_model('resnet18', defense='cifs', width=2); "
            "print(sorted(m for m in sys.modules if m.startswith('cifs_edu.attacks') or m.startswith('cifs_edu.models')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert eval(out) == ["cifs_edu.attacks", "cifs_edu.attacks.base", "cifs_edu.attacks.pgd", "cifs_edu.models",
                         "cifs_edu.models.base", "cifs_edu.models.normalize", "cifs_edu.models.resnet"]
    import cifs_edu.attacks as A
    import cifs_edu.models as M

    for pkg, homes in ((A, A._HOME), (M, M._LAZY)):
        assert set(homes) <= set(pkg.__all__)
        for name in pkg.__all__:
            value = getattr(pkg, name)
            if name in homes:
                home = homes[name]
                module = importlib.import_module(home if home.startswith(".") else "." + home, pkg.__name__)
                assert value is getattr(module, name), name
    # a submodule imported first must not hide the function (Python binds a submodule to its parent's attribute)
    code = "import cifs_edu.attacks.beta_sweep; from cifs_edu.attacks import sweep; print(sweep.__module__, callable(sweep))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT).stdout
    assert out.split() == ["cifs_edu.attacks.beta_sweep", "True"]
    import pytest

    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        A.nope  # noqa: B018
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        M.nope  # noqa: B018


def test_the_readme_module_map_names_every_module():
    """The README's map ("Where things live") lists every public module and subpackage of cifs_edu."""
    readme = (ROOT / "README.md").read_text()
    names = [p.name for p in PKG.glob("*.py") if not p.name.startswith("_")]
    names += [p.name + "/" for p in PKG.iterdir() if (p / "__init__.py").is_file()]
    missing = [n for n in names if f"`{n}`" not in readme]
    assert not missing, f"README module map lacks {missing}"


def test_core_size_counts_modules_whose_functions_ran(tmp_path):
    """scripts/core_size.py --executed: a module counts when one of its function bodies ran; a function
    that never ran is listed once (its nested functions are not listed again)."""
    import ast
    import importlib.util

    import coverage

    spec = importlib.util.spec_from_file_location("core_size", ROOT / "scripts" / "core_size.py")
    core_size = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(core_size)
    cas = PKG / "cas.py"
    funcs = [n for n in ast.walk(ast.parse(cas.read_text())) if isinstance(n, ast.FunctionDef)]
    ran, idle = funcs[0], funcs[1]
    data = coverage.CoverageData(basename=str(tmp_path / ".coverage.x"))
    data.add_lines({str(cas): [ran.body[0].lineno]})
    data.write()
    out = core_size.executed({"x": tmp_path / ".coverage.x"})
    assert out["lines of modules whose functions ran"] == {"x": len(cas.read_text().splitlines()),
                                                           "all chapters (union)": len(cas.read_text().splitlines())}
    never = [name for _, name in out["functions no chapter ran"]["functions"]]
    assert any(name.startswith("cas.py:") and name.endswith(idle.name) for name in never)
    assert not any(name.startswith("cas.py:") and name.endswith("." + ran.name) or name == f"cas.py:{ran.name}"
                   for name in never)
