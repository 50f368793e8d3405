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


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_chapter_starts_with_colab_install_then_setup(md):
    cells = re.findall(r"```\{code-cell\}[^\n]*\n(.*?)```", md.read_text(), re.S)
    assert cells, f"{md.name} has no code cells"
    first = cells[0]
    assert '"google.colab" in sys.modules' in first and "pip" in first, "first cell must be the Colab-only install"
    assert f"git+{REPO_URL}" in first, "the Colab install must use the repository URL of _config.yml"
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
    # chapters run in parallel ahead of Sphinx (cifs_edu.bookexec) into the cache that myst-nb reads
    assert cfg["execute"]["execute_notebooks"] == "cache" and "cifs_edu.bookexec" in cfg["sphinx"]["extra_extensions"]
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


def test_book_build_executes_chapters_in_parallel_into_the_cache(tmp_path):
    """The build's extension runs the chapters N at a time; myst-nb then only reads them from the cache."""
    jb = Path(sys.executable).parent / "jupyter-book"
    if not jb.exists():
        pytest.skip("jupyter-book is not installed in this environment")
    book = tmp_path / "book"
    book.mkdir()
    (book / "intro.md").write_text("# Intro\n\nPlain text.\n")
    for name, value in (("a", 6), ("b", 7)):
        (book / f"{name}.md").write_text(_MYST_HEADER + f"\n# Chapter {name}\n\n```{{code-cell}} ipython3\n"
                                         f"print('answer', {value} * 111)\n```\n")
    (book / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: a\n  - file: b\n")
    (book / "_config.yml").write_text(yaml.safe_dump({
        "title": "t", "execute": {"execute_notebooks": "cache", "timeout": 60},
        "sphinx": {"extra_extensions": ["cifs_edu.bookexec"]}}))
    env = {**os.environ, "CIFS_BOOK_JOBS": "2", "CIFS_BOOK_PREPARE": "0"}
    res = subprocess.run([str(jb), "build", str(book), "-W", "-n"], capture_output=True, text=True, timeout=600, env=env)
    log = res.stdout + res.stderr
    assert res.returncode == 0, log[-3000:]
    assert "[book] executing 2 chapters, 2 at a time" in log and log.count("Using cached notebook") == 2, log[-3000:]
    assert "Executing notebook" not in log  # myst-nb executed nothing itself
    html = book / "_build" / "html"
    assert "answer 666" in (html / "a.html").read_text() and "answer 777" in (html / "b.html").read_text()


def test_execute_notebooks_reports_a_failing_chapter(tmp_path):
    import nbformat

    from cifs_edu.bookexec import book_jobs, execute_notebooks

    good = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 40 + 2\nprint(x)")])
    bad = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("raise ValueError('chapter claim failed')")])
    for nb in (good, bad):
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    out = execute_notebooks([("good", good, tmp_path / "good.ipynb"), ("bad", bad, tmp_path / "bad.ipynb")], 2,
                            timeout=60, log=lambda m: None)
    assert out["good"]["error"] is None and out["good"]["nb"].cells[0].outputs[0]["text"] == "42\n"
    assert "chapter claim failed" in out["bad"]["error"]
    assert book_jobs() >= 1


def test_a_stuck_chapter_is_killed_and_restarted_once(tmp_path):
    import nbformat

    from cifs_edu.bookexec import execute_notebooks

    slow = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("import time\ntime.sleep(60)")])
    slow.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    lines = []
    t0 = time.perf_counter()
    out = execute_notebooks([("slow", slow, tmp_path / "slow.ipynb")], 1, timeout=120, limit=6, retries=1, log=lines.append)
    assert time.perf_counter() - t0 < 40  # two attempts of about 6 s, not the 60 s the cell wants
    assert out["slow"]["attempts"] == 2 and "did not finish within 6 s in 2 attempts" in out["slow"]["error"]
    assert any("killed, starting it again in a fresh kernel" in line for line in lines)


def test_book_jobs_setting(monkeypatch):
    from cifs_edu.bookexec import book_jobs

    monkeypatch.setenv("CIFS_BOOK_JOBS", "3")
    assert book_jobs() == 3
    for bad in ("0", "two"):
        monkeypatch.setenv("CIFS_BOOK_JOBS", bad)
        with pytest.raises(ValueError, match="CIFS_BOOK_JOBS must be an integer >= 1"):
            book_jobs()
    from cifs_edu.bookexec import chapter_limit

    monkeypatch.setenv("CIFS_BOOK_CHAPTER_TIMEOUT", "0")
    assert chapter_limit() is None
    monkeypatch.setenv("CIFS_BOOK_CHAPTER_TIMEOUT", "-3")
    with pytest.raises(ValueError, match="CIFS_BOOK_CHAPTER_TIMEOUT must be"):
        chapter_limit()
    monkeypatch.delenv("CIFS_BOOK_CHAPTER_TIMEOUT")
    monkeypatch.setenv("CIFS_PROFILE", "smoke")
    assert chapter_limit() == 180
