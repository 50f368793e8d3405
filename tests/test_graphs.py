"""The CUDA-graph training attack (``TrainConfig(cuda_graphs=True)``, ``cifs_edu.engine.graphs``).

On a CPU-only machine: the option's validation, that it is a runtime field (no new cache key,
resumable either way, loadable on the CPU) and the eager fallback of :class:`GraphedPGD`. The
captured path itself is tested only where CUDA is available (``skipif``).
"""
from __future__ import annotations

import pytest
import torch

from cifs_edu.profiles import ConfigError
from cifs_edu.engine.graphs import GraphedPGD
from cifs_edu.training import RUNTIME_FIELDS, TrainConfig, load_model, train
from cifs_edu.training.methods import pgd_examples

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def tiny(**kw) -> TrainConfig:
    values = dict(n_train=64, n_val=0, n_test=32, eval_n=32, width=4, epochs=1, batch_size=32, milestones=(),
                  train_steps=1, eval_attacks=("natural",), eval_batch_size=32, eval_best=False)
    values.update(kw)
    return TrainConfig.from_profile("smoke", **values)


@pytest.fixture
def fake_cuda(monkeypatch):
    """``torch.cuda.is_available()`` answers True (only the config's check asks it here)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)


# ---------------------------------------------------------------------- validation
def test_cuda_graphs_off_by_default_and_not_in_the_key():
    cfg = tiny()
    assert cfg.cuda_graphs is False and "cuda_graphs" in cfg.to_dict()
    assert RUNTIME_FIELDS == ("cuda_graphs",) and "cuda_graphs" not in cfg.training_dict()


def test_cuda_graphs_without_cuda_is_a_config_error(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match=r"cuda_graphs=True is not possible: it needs a CUDA device"):
        tiny(cuda_graphs=True)


@pytest.mark.parametrize("method", ["trades", "fat", "standard"])
def test_cuda_graphs_needs_pgd_at(fake_cuda, method):
    with pytest.raises(ConfigError, match=rf"replays the pgd_at training attack only \(method='{method}'\)"):
        tiny(method=method, cuda_graphs=True)


def test_cuda_graphs_problems_in_one_message(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        tiny(method="trades", cuda_graphs=True)
    text = str(err.value)
    assert text.count("cuda_graphs=True is not possible") == 1 and "pgd_at" in text and "CUDA device" in text


def test_cuda_graphs_must_be_a_bool():
    with pytest.raises(ConfigError, match="cuda_graphs must be True or False"):
        tiny(cuda_graphs=1)


def test_cuda_graphs_is_a_runtime_field(fake_cuda):
    eager, graphed = tiny(defense="cifs"), tiny(defense="cifs", cuda_graphs=True)
    assert graphed.key() == eager.key() and graphed.run_name == eager.run_name
    assert graphed.differences(eager) == {} and eager.differences(graphed.to_dict()) == {}
    assert TrainConfig.from_dict(graphed.to_dict()) == graphed
    # a checkpoint saved before the field existed compares equal too
    old = {k: v for k, v in eager.to_dict().items() if k != "cuda_graphs"}
    assert graphed.differences(old) == {}


def test_train_refuses_cuda_graphs_on_the_cpu(fake_cuda, cifs_home, tmp_path):
    cfg = tiny(cuda_graphs=True)
    with pytest.raises(ConfigError, match="cuda_graphs=True needs a CUDA device, but this run would train on cpu"):
        train(cfg, run_dir=tmp_path / "run", progress=False, device="cpu")
    assert not (tmp_path / "run" / "last.pt").exists()


def test_checkpoint_of_a_graphed_run_loads_on_the_cpu(cifs_home, tmp_path, monkeypatch):
    run = train(tiny(), run_dir=tmp_path / "run", progress=False)
    path = tmp_path / "run" / "last.pt"
    payload = torch.load(path, weights_only=False)
    payload["config"]["cuda_graphs"] = True  # as a GPU run with the option saves it
    torch.save(payload, path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = load_model(path)
    assert model.train_config.cuda_graphs is False and model.train_config.key() == run.config.key()
    sa, sb = model.state_dict(), run.model.state_dict()
    assert all(torch.equal(sa[k], sb[k].cpu()) for k in sa)


# ---------------------------------------------------------------------- GraphedPGD
def _model_batch(defense="cifs", batch=6, steps=2):
    cfg = tiny(defense=defense, train_steps=steps, batch_size=batch)
    torch.manual_seed(0)
    model = cfg.build_model(3, 10).train()
    g = torch.Generator().manual_seed(1)
    x = torch.rand(batch, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (batch,), generator=g)
    noise = torch.rand(batch, 3, 32, 32, generator=g) * 2 - 1
    return cfg, model, x, y, noise


def test_graphed_pgd_runs_eagerly_on_the_cpu():
    cfg, model, x, y, noise = _model_batch()
    calls = []

    def draw(kind):
        calls.append(kind)
        return noise

    graphed = GraphedPGD(model, cfg)
    out = graphed(x, y, draw)
    assert torch.equal(out, pgd_examples(model, x, y, cfg, lambda k: noise))
    assert calls == ["uniform"]  # the engine's noise is drawn exactly once, as the eager attack does
    assert graphed.eager_calls == 1 and graphed.replays == 0 and not graphed.captured
    assert model.training  # the caller's mode is kept


def test_graphed_pgd_is_for_pgd_at_only():
    cfg = tiny(method="trades")
    with pytest.raises(ValueError, match="pgd_at"):
        GraphedPGD(cfg.build_model(3, 10), cfg)


def test_graph_check_runs_on_the_cpu():
    """benchmarks/gpu.py's correctness check (eager fallback on the CPU: everything equal)."""
    from benchmarks.gpu import _check_line, graph_check

    c = graph_check("cifs", 4, 4, 2, torch.device("cpu"), None, True)
    assert c["first"]["bitwise_equal"] and c["after_step"]["bitwise_equal"]
    assert c["first"]["identical_predictions"] == 1.0 and c["stale"]["max_abs_diff"] > 0
    assert "graph check cifs" in _check_line(c)


@cuda
@pytest.mark.parametrize("defense", ["none", "cifs"])
def test_graphed_pgd_equals_eager_and_follows_sgd_steps(defense):
    from benchmarks.gpu import graph_check

    name = {"none": "vanilla"}.get(defense, defense)
    c = graph_check(name, 8, 16, 3, torch.device("cuda"), torch.bfloat16, True)
    assert c["captured"] and c["replays"] == 2 and c["eager_calls"] == 0
    assert c["first"]["max_abs_diff"] <= 2 * 8 / 255 and c["first"]["identical_pixels"] > 0.99
    assert c["after_step"]["identical_pixels"] > 0.99
    assert c["stale"]["identical_pixels"] < c["after_step"]["identical_pixels"]


@cuda
def test_train_with_cuda_graphs_matches_eager(cifs_home, tmp_path):
    runs = {}
    for graphs in (False, True):
        cfg = tiny(defense="cifs", n_train=80, epochs=2, cuda_graphs=graphs, amp="off")  # 2 full batches + 16
        runs[graphs] = train(cfg, run_dir=tmp_path / str(graphs), progress=False, device="cuda")
    for a, b in zip(runs[False].history, runs[True].history):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-3, abs=1e-4)
    assert runs[False].config.key() == runs[True].config.key()
