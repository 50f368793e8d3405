"""The book's structure: pairing, output-free notebooks, Colab set-up, TOC, configuration."""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from .conftest import ROOT

BOOK = ROOT / "book"
EXT = BOOK / "_ext"  # the book's executor (a Sphinx extension), outside the library
if str(EXT) not in sys.path:
    sys.path.insert(0, str(EXT))
CHAPTERS = sorted(p for p in BOOK.glob("*.md") if "kernelspec:" in p.read_text().split("---")[1 if p.read_text().startswith("---") else 0])
REPO_URL = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]


def _toc_files() -> list[str]:
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    files = [toc["root"]]
    for part in toc.get("parts", []):
        files += [c["file"] for c in part["chapters"]]
    return files


def test_there_are_chapters():
    assert len(CHAPTERS) >= 1


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_notebook_is_paired_in_sync_and_output_free(md, tmp_path):
    nb_path = md.with_suffix(".ipynb")
    assert nb_path.exists(), f"{md.name} has no paired {nb_path.name}: run `make sync`"
    nb = json.loads(nb_path.read_text())
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            assert cell.get("outputs") == [] and cell.get("execution_count") is None, (
                f"{nb_path.name} carries outputs: strip them before committing"
            )
    # Re-pair a copy and compare: the committed .ipynb must be what jupytext makes of the .md.
    shutil.copy(md, tmp_path / md.name)
    shutil.copy(nb_path, tmp_path / nb_path.name)
    subprocess.run([sys.executable, "-m", "jupytext", "--quiet", "--to", "ipynb", "--update", str(tmp_path / md.name)],
                   check=True)
    fresh = json.loads((tmp_path / nb_path.name).read_text())
    assert fresh["cells"] == nb["cells"], f"{nb_path.name} is out of sync with {md.name}: run `make sync`"


def _version() -> str:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_chapter_starts_with_colab_install_then_setup(md):
    cells = re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", md.read_text(), re.S)
    assert cells, f"{md.name} has no code cells"
    first = cells[0]
    assert '"google.colab" in sys.modules' in first and "pip" in first, "first cell must be the Colab-only install"
    assert f"git+{REPO_URL}@v{_version()}" in first, \
        "the Colab install must use the repository URL of _config.yml at the release tag of pyproject's version"
    assert "--no-deps" not in first.split("torchattacks")[0], "cifs_edu itself installs with its (ranged) dependencies"
    assert "cifs_edu.setup(" in cells[1], "the second code cell must call cifs_edu.setup(...)"


def test_toc_lists_existing_files_and_every_chapter():
    files = _toc_files()
    for f in files:
        assert (BOOK / f"{f}.md").exists(), f"_toc.yml lists {f}, but book/{f}.md does not exist"
    for md in CHAPTERS:
        assert md.stem in files, f"{md.name} is not in _toc.yml"


def test_toc_symlink_and_config():
    link = BOOK / "_toc.yml"
    assert link.is_symlink() and link.resolve() == (ROOT / "_toc.yml").resolve()
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    assert cfg["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert cfg["repository"]["path_to_book"] == "book"
    assert cfg["only_build_toc_files"] is True
    assert "**.ipynb" in cfg["exclude_patterns"]
    assert cfg["sphinx"]["config"]["nb_execution_raise_on_error"] is True
    # chapters run in parallel ahead of Sphinx (book/_ext/cifs_bookexec.py) into the cache that myst-nb reads
    assert cfg["execute"]["execute_notebooks"] == "cache" and cfg["sphinx"]["local_extensions"] == {"cifs_bookexec": "book/_ext"}
    assert (BOOK / cfg["bibtex_bibfiles"][0]).exists()


def test_plain_build_command_finds_toplevel_config(tmp_path):
    """`jupyter-book build book/` from the root finds _config.yml and _toc.yml (execution off to stay fast)."""
    jb = Path(sys.executable).parent / "jupyter-book"
    if not jb.exists():
        pytest.skip("jupyter-book is not installed in this environment")
    work = tmp_path / "repo"
    shutil.copytree(BOOK, work / "book", symlinks=True, ignore=shutil.ignore_patterns("_build"))
    shutil.copy(ROOT / "_toc.yml", work / "_toc.yml")
    cfg = yaml.safe_load((ROOT / "_config.yml").read_text())
    cfg["execute"]["execute_notebooks"] = "off"
    (work / "_config.yml").write_text(yaml.safe_dump(cfg))
    res = subprocess.run([str(jb), "build", "book/"], cwd=work, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    html = next(work.glob("**/_build/html/index.html"))
    assert html.exists()
    page = (html.parent / "00_how_to_use.html").read_text()
    assert "colab.research.google.com/github/" in page and "book/00_how_to_use.ipynb" in page


_MYST_HEADER = """---
jupytext:
  text_representation:
    extension: .md
    format_name: myst
kernelspec:
  display_name: Python 3
  language: python
  name: python3
---
"""


def _toy_book(tmp_path, chapters: dict[str, str]):
    """A two-level toy book (intro + ``chapters``: name -> MyST body) built with the book's executor.

    Returns ``build(*flags)`` -> (return code, log), running ``jupyter-book build`` on it, and the book folder.
    """
    jb = Path(sys.executable).parent / "jupyter-book"
    if not jb.exists():
        pytest.skip("jupyter-book is not installed in this environment")
    book = tmp_path / "book"
    book.mkdir()
    (book / "intro.md").write_text("# Intro\n\nPlain text.\n")
    for name, body in chapters.items():
        (book / f"{name}.md").write_text(_MYST_HEADER + f"\n# Chapter {name}\n\n" + body)
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n"
                                   + "".join(f"  - file: {name}\n" for name in chapters))
    (book / "_config.yml").write_text(yaml.safe_dump({
        "title": "t", "execute": {"execute_notebooks": "cache", "timeout": 60},
        "sphinx": {"local_extensions": {"cifs_bookexec": str(EXT)}}}))
    env = {**os.environ, "CIFS_BOOK_JOBS": "2", "CIFS_BOOK_PREPARE": "0"}

    def build(*flags: str) -> tuple[int, str]:
        res = subprocess.run([str(jb), "build", str(book), *flags], capture_output=True, text=True, timeout=600, env=env)
        return res.returncode, res.stdout + res.stderr

    return build, book


def _cell(source: str, tag: str | None = None) -> str:
    return "```{code-cell} ipython3\n" + (f":tags: [{tag}]\n\n" if tag else "") + source + "\n```\n\n"


def test_book_build_executes_chapters_in_parallel_into_the_cache(tmp_path):
    """The build's extension runs the chapters N at a time; myst-nb then only reads them from the cache."""
    build, book = _toy_book(tmp_path, {name: _cell(f"print('answer', {value} * 111)") for name, value in (("a", 6), ("b", 7))})
    rc, log = build("-W", "-n")
    assert rc == 0, log[-3000:]
    assert "[book] executing 2 chapters, 2 at a time" in log and log.count("Using cached notebook") == 2, log[-3000:]
    assert "Executing notebook" not in log  # myst-nb executed nothing itself
    html = book / "_build" / "html"
    assert "answer 666" in (html / "a.html").read_text() and "answer 777" in (html / "b.html").read_text()


def test_a_failing_chapter_leaves_every_other_page_and_a_non_zero_exit(tmp_path):
    """A chapter whose hidden check fails: the others are built, its page shows the error, the build
    names it last and exits non-zero, even without -W."""
    build, book = _toy_book(tmp_path, {
        "a": _cell("print('answer', 6 * 111)") + _cell("raise ValueError('shown on purpose')", "raises-exception"),
        "b": _cell("print('before')") + _cell("assert 1 + 1 == 3, 'planted claim failed'", "remove-cell")
             + _cell("print('after')"),
    })  # a's error is shown on purpose: not a failure
    rc, log = build()
    assert rc != 0, log[-3000:]
    assert "1 chapter(s) failed while executing: b" in log, log[-3000:]
    html = book / "_build" / "html"
    assert "answer 666" in (html / "a.html").read_text() and (html / "intro.html").exists()
    assert "shown on purpose" in (html / "a.html").read_text() and "Chapter failed: a" not in (html / "a.html").read_text()
    page = (html / "b.html").read_text()
    assert "Chapter failed: b" in page and "planted claim failed" in page
    assert "before" in page and "after" in page  # the cells after the failing one ran too
    # the next build runs the failed chapter again although its source did not change (and only it)
    rc, log = build()
    assert rc != 0 and "[book] executing 1 chapters" in log and "failed while executing: b" in log, log[-3000:]


def _notebook(*sources: str):
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(src) for src in sources])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def test_execute_notebooks_reports_a_failing_chapter(tmp_path):
    from cifs_bookexec import book_jobs, execute_notebooks

    good = _notebook("x = 40 + 2\nprint(x)")
    bad = _notebook("raise ValueError('chapter claim failed')")
    out = execute_notebooks([("good", good, tmp_path / "good.ipynb"), ("bad", bad, tmp_path / "bad.ipynb")], 2,
                            timeout=60, log=lambda m: None)
    assert out["good"]["error"] is None and out["good"]["nb"].cells[0].outputs[0]["text"] == "42\n"
    assert "chapter claim failed" in out["bad"]["error"]
    assert book_jobs() >= 1


def test_a_stuck_chapter_is_killed_and_restarted_once(tmp_path):
    from cifs_bookexec import execute_notebooks

    pids = tmp_path / "kernel-pids"
    slow = _notebook(f"import os, time\nwith open({str(pids)!r}, 'a') as f:\n    print(os.getpid(), file=f)\ntime.sleep(60)")
    lines = []
    t0 = time.perf_counter()
    out = execute_notebooks([("slow", slow, tmp_path / "slow.ipynb")], 1, timeout=120, limit=6, retries=1, log=lines.append)
    assert time.perf_counter() - t0 < 40  # two attempts of about 6 s, not the 60 s the cell wants
    assert out["slow"]["attempts"] == 2 and "did not finish within 6 s in 2 attempts" in out["slow"]["error"]
    assert any("killed, starting it again in a fresh kernel" in line for line in lines)
    psutil = pytest.importorskip("psutil")
    kernels = [int(v) for v in pids.read_text().split()]
    assert len(kernels) == 2
    time.sleep(1)
    for pid in kernels:  # the kernels died with their workers (they run in sessions of their own)
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_execute_notebooks_starts_only_what_capacity_allows(tmp_path):
    """No chapter starts while capacity() is 0; at capacity 1 they run one after the other."""
    from cifs_bookexec import execute_notebooks

    t_open = time.time() + 3
    stamp = "import time\nprint(time.time())\ntime.sleep(1)\nprint(time.time())"
    nbs = [(n, _notebook(stamp), tmp_path / f"{n}.ipynb") for n in ("a", "b")]
    out = execute_notebooks(nbs, 2, timeout=60, log=lambda m: None, capacity=lambda: 0 if time.time() < t_open else 1)
    texts = ["".join(o.get("text", "") for o in out[n]["nb"].cells[0].outputs) for n in ("a", "b")]
    spans = sorted(tuple(float(v) for v in text.split()) for text in texts)
    assert spans[0][0] >= t_open and spans[1][0] >= spans[0][1]  # none early, never two at once


def test_a_capacity_error_kills_the_running_chapters_and_propagates(tmp_path):
    """Killed early (the worker still starting, before its setsid) and late (its kernel running)."""
    from cifs_bookexec import execute_notebooks

    t0, markers = time.time(), []
    for after in (1, 20):  # capacity() calls (0.1 s apart) before it fails
        marker = tmp_path / f"survived-{after}"
        markers.append(marker)
        nb = _notebook(f"import time\ntime.sleep(4)\nopen({str(marker)!r}, 'w').close()")
        calls = []

        def capacity(calls=calls, after=after):
            calls.append(1)
            if len(calls) > after:
                raise RuntimeError("training failed")
            return 1

        with pytest.raises(RuntimeError, match="training failed"):
            execute_notebooks([("a", nb, tmp_path / "a.ipynb")], 1, timeout=60, log=lambda m: None, capacity=capacity)
    time.sleep(max(0.0, t0 + 12 - time.time()))
    assert not any(m.exists() for m in markers)  # no chapter (worker or kernel) lived on


def test_preparer_gives_cores_to_chapters_as_training_runs_out(monkeypatch):
    import threading

    import cifs_bookexec as bookexec
    from cifs_edu import zoo

    monkeypatch.setattr(zoo, "book_plan", lambda profile=None: [1, 2, 3])
    go = [threading.Event() for _ in range(4)]
    seen = []

    def fake_prepare(jobs, log, on_done):
        for i in range(3):
            go[i].wait(10)
            on_done({"name": i})
            seen.append(i)
        go[3].wait(10)

    from cifs_edu.engine import prepare as engine_prepare

    monkeypatch.setattr(engine_prepare, "prepare", fake_prepare)
    p = bookexec._Preparer(2, lambda m: None)
    caps = [p.capacity()]
    for i in range(4):
        go[i].set()
        t0 = time.time()
        while len(seen) < min(i + 1, 3) and time.time() - t0 < 10:
            time.sleep(0.01)
        if i == 3:
            p.join()
        caps.append(p.capacity())
    assert caps == [0, 0, 1, 2, 2]  # 3 items on 2 processes: a core frees when 1 item is left; all at the end

    def failing(jobs, log, on_done):
        raise ValueError("no data")

    monkeypatch.setattr(engine_prepare, "prepare", failing)
    p = bookexec._Preparer(2, lambda m: None)
    p.join()
    with pytest.raises(bookexec._PrepareFailed, match="ValueError: no data"):
        p.capacity()


def test_book_jobs_setting(monkeypatch):
    from cifs_bookexec import book_jobs

    monkeypatch.setenv("CIFS_BOOK_JOBS", "3")
    assert book_jobs() == 3
    for bad in ("0", "two"):
        monkeypatch.setenv("CIFS_BOOK_JOBS", bad)
        with pytest.raises(ValueError, match="CIFS_BOOK_JOBS must be an integer >= 1"):
            book_jobs()
    from cifs_bookexec import chapter_limit

    monkeypatch.setenv("CIFS_BOOK_CHAPTER_TIMEOUT", "0")
    assert chapter_limit() is None
    monkeypatch.setenv("CIFS_BOOK_CHAPTER_TIMEOUT", "-3")
    with pytest.raises(ValueError, match="CIFS_BOOK_CHAPTER_TIMEOUT must be"):
        chapter_limit()
    monkeypatch.delenv("CIFS_BOOK_CHAPTER_TIMEOUT")
    monkeypatch.setenv("CIFS_PROFILE", "smoke")
    assert chapter_limit() == 180
