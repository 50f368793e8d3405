"""Functional tests of the benchmark harness (benchmarks/): it runs on tiny sizes and writes valid JSON.

No test here asserts anything about time.
"""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest
import torch

from .conftest import ROOT

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    yield
    torch.set_num_threads(previous)


def _finite_positive(v) -> bool:
    return isinstance(v, float) and math.isfinite(v) and v > 0


def test_run_tiny_writes_the_table_and_valid_json(tmp_path, capsys):
    from benchmarks import run

    out = tmp_path / "bench.json"
    result = run.main(["--tiny", "--threads", "1", "--only", "train,attack,at,pgd,relevance",
                       "--defenses", "vanilla,cifs", "--pgd-defenses", "vanilla", "--json", str(out)])
    data = json.loads(out.read_text())
    assert data["rows"] == json.loads(json.dumps(result["rows"]))
    assert data["machine"]["torch_threads"] == 1 and data["machine"]["cpu_count"] >= 1
    rows = data["rows"]
    steps = [r for r in rows if r["benchmark"] == "steps"]
    assert {(r["kind"], r["defense"]) for r in steps} == {(k, d) for k in ("train", "attack", "at")
                                                            for d in ("vanilla", "cifs")}
    for r in rows:
        assert r["n"] >= 1 and _finite_positive(r["median_s"]) and r["min_s"] <= r["median_s"] <= r["max_s"]
    for r in steps:
        if r["defense"] == "vanilla":
            assert r["ratio"] == 1.0
        assert r["units_per_s"] == pytest.approx(r["batch"] / r["median_s"])
    pgd = {r["impl"]: r for r in rows if r["benchmark"] == "pgd"}
    assert set(pgd) == {"torchattacks", "cifs_edu[exact]", "cifs_edu[fold]", "cifs_edu[cl]", "cifs_edu[default]"}
    for r in pgd.values():
        a = r["agreement"]
        assert 0.0 <= a["pixels_equal_to_torchattacks"] <= 1.0 and 0.0 <= a["robust_accuracy"] <= 100.0
        assert a["max_linf_from_x"] <= 8 / 255 + 1e-6
    assert pgd["torchattacks"]["agreement"]["pixels_equal_to_torchattacks"] == 1.0
    rel = [r for r in rows if r["benchmark"] == "relevance"]
    assert len(rel) == 12 and all(r["max_abs_diff"] < 1e-5 for r in rel)
    assert set(data["targets"]) == set(run.TARGETS)
    assert data["targets"]["chapters_nbval_cold_s"]["value"] is None
    text = capsys.readouterr().out
    assert "median" in text and "Targets:" in text and "cifs_edu[default]" in text


def test_table_formats_and_targets():
    from benchmarks.run import format_table, targets

    rows = [
        {"benchmark": "steps", "case": "train vanilla", "kind": "train", "defense": "vanilla", "variant": "engine",
         "width": 64, "batch": 128, "median_s": 2.0, "min_s": 1.9, "max_s": 2.5, "n": 3, "ratio": 1.0,
         "cpu_ratio": 1.0, "ratio_to": "vanilla"},
        {"benchmark": "steps", "case": "train cifs", "kind": "train", "defense": "cifs", "variant": "engine",
         "width": 64, "batch": 128, "median_s": 2.2, "min_s": 2.0, "max_s": 2.6, "n": 3, "ratio": 1.1,
         "cpu_ratio": 1.02, "ratio_to": "vanilla"},
        {"benchmark": "pgd", "case": "pgd20 vanilla cifs_edu[default]", "defense": "vanilla", "impl": "cifs_edu[default]",
         "steps": 20, "median_s": 0.5, "min_s": 0.5, "max_s": 0.5, "n": 1, "ratio": 0.5, "ratio_to": "torchattacks"},
        {"benchmark": "chapters", "case": "all chapters cold", "median_s": 700.0, "min_s": 700.0, "max_s": 700.0,
         "n": 1, "passed": True},
        {"benchmark": "book", "case": "cold prepare --jobs 2", "median_s": 300.0, "min_s": 300.0, "max_s": 300.0,
         "n": 1, "passed": True},
    ]
    t = targets(rows)
    assert t["cifs_train_step_ratio"]["value"] == 1.1 and t["cifs_train_step_ratio"]["met"] is False
    assert t["pgd20_ratio_vs_torchattacks"]["met"] is True
    assert t["chapters_nbval_cold_s"]["met"] is False and t["book_build_cold_s"]["value"] is None  # no total row
    t = targets(rows + [{"benchmark": "book", "case": "cold book build (total)", "median_s": 470.0, "min_s": 470.0,
                         "max_s": 470.0, "n": 1, "passed": True}])
    assert t["book_build_cold_s"]["value"] == 470.0 and t["book_build_cold_s"]["met"] is True
    md = format_table(rows, markdown=True).splitlines()
    assert md[0].startswith("| benchmark") and len(md) == 2 + len(rows) and all(line.endswith("|") for line in md)
    text = format_table(rows).splitlines()
    assert len({len(line.rstrip()) <= len(text[0]) for line in text}) == 1 and "2.200 s" in text[3]


def test_bad_benchmark_name_is_an_error():
    from benchmarks.run import parse_args

    with pytest.raises(SystemExit):
        parse_args(["--only", "pgd,nonsense"])


def test_chapter_list_and_worktree_copy(tmp_path):
    from benchmarks.chapters import _copy_worktree, chapter_notebooks

    nbs = chapter_notebooks(ROOT)
    assert nbs and all(p.suffix == ".ipynb" and p.parent.name == "book" for p in nbs)
    _copy_worktree(ROOT, tmp_path)
    assert (tmp_path / "benchmarks" / "run.py").is_file() and (tmp_path / "cifs_edu" / "cifs.py").is_file()
    assert not (tmp_path / ".git").exists()
    toc = ROOT / "book" / "_toc.yml"
    if toc.is_symlink():
        assert (tmp_path / "book" / "_toc.yml").is_symlink()


def test_gpu_script_runs_on_the_cpu(tmp_path):
    """benchmarks/gpu.sh end to end (bash wrapper included) in its --cpu --tiny mode."""
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "OMP_NUM_THREADS": "1"}
    cmd = ["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--cpu", "--tiny", "--batches", "8", "--fast-attack", "8",
           "--box", "0.5"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert p.returncode == 0, p.stdout + p.stderr
    data = json.loads((tmp_path / "gpu_bench.json").read_text())
    assert "errors" not in data, data.get("errors")
    train = {(r["defense"], r["fast_attack"]): r for r in data["training"]}
    assert set(train) == {("vanilla", False), ("cifs", False), ("vanilla", True), ("cifs", True)}
    for r in train.values():
        assert _finite_positive(r["images_per_s"]) and r["timed_steps"] >= 1
        assert r["epoch_s"] == pytest.approx(50_000 / r["images_per_s"])
        assert r["epochs_120_s"] == pytest.approx(120 * r["epoch_s"])
    assert {r["defense"] for r in data["evaluation"]} == {"vanilla", "cifs"}
    assert all(_finite_positive(r["images_per_s"]) for r in data["evaluation"])
    assert "img/s" in p.stdout and "s/epoch" in p.stdout


def test_gpu_amp_autocast_path_runs_on_the_cpu():
    """The bf16 autocast + channels_last training step (the GPU's path) runs, on the CPU, and trains."""
    from benchmarks.steps import make_steps

    torch.set_num_threads(1)
    steps = make_steps("cifs", width=4, batch=8, at_steps=2, amp=torch.bfloat16, channels_last=True, fast_attack=True)
    steps["at"]()
    steps["at"]()
