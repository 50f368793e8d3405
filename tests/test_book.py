"""The book's structure: pairing, output-free notebooks, Colab set-up, TOC, configuration."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
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
