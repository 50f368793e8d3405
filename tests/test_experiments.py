"""The registry of paper tables: recipes per profile, and reproduce() on tiny settings."""
from __future__ import annotations

import dataclasses
import json

import pytest

from cifs_edu.experiments import TABLES, estimate_gpu_hours, list_tables, table_attacks, table_configs
from cifs_edu.tools.reproduce import reproduce
from cifs_edu.paper import paper_table
from cifs_edu.profiles import PROFILES, ConfigError

TINY = dict(n_train=64, n_val=32, n_test=32, eval_n=16, width=4, epochs=1, batch_size=32, train_steps=1,
            val_steps=2, eval_batch_size=32, milestones=())

REQUIRED = [
    "table1_cifar10_resnet18_last", "table1_cifar10_wrn28_10_last", "table2_svhn_resnet18_last",
    "table3_cifar10_fat_resnet18", "tableB1_autoattack_last", "tableB2_cifar10_resnet18_best",
    "tableB3_beta_atk_resnet18", "tableB4_at_variants_resnet18", "tableD1_fmnist_resnet10_last",
    "tableE1_beta_train", "tableE2_positions", "tableE3_probe_arch", "table4_topk_at_resnet18",
    "table5_topk_feedback_pgd20", "section3_3_imgf_pgd20",
]


def test_registry_covers_the_papers_tables():
    for key in REQUIRED:
        assert key in TABLES
    for table in TABLES.values():
        paper_table(table.paper_key)  # every table has the paper's numbers to compare with
        assert len(table.columns) >= 1 and table.rows


@pytest.mark.parametrize("profile", sorted(PROFILES))
def test_every_table_builds_valid_configs(profile):
    for key in TABLES:
        configs = table_configs(key, profile)
        assert list(configs) == [r.name for r in TABLES[key].rows]
        for cfg in configs.values():
            assert cfg.profile == profile
            if profile == "smoke":
                assert cfg.dataset == "synthetic"  # smoke is always the embedded data


def test_paper_profile_is_the_appendix_recipe():
    r18 = table_configs("table1_cifar10_resnet18_last", "paper")
    for cfg in r18.values():
        assert (cfg.dataset, cfg.arch, cfg.width, cfg.epochs, cfg.milestones) == ("cifar10", "resnet18", 64, 120, (75, 90))
        assert (cfg.lr, cfg.weight_decay, cfg.momentum, cfg.batch_size) == (0.1, 2e-4, 0.9, 128)
        assert cfg.train_steps == 10 and cfg.train_step_size == pytest.approx(2 / 255) and cfg.eps == pytest.approx(8 / 255)
        assert cfg.method == "pgd_at" and cfg.beta == 2.0 and cfg.n_train is None
    assert [c.defense for c in r18.values()] == ["none", "cas", "cifs"]
    wrn = table_configs("table1_cifar10_wrn28_10_last", "paper")["cifs"]
    assert (wrn.arch, wrn.width, wrn.epochs, wrn.weight_decay, wrn.milestones) == ("wrn28_10", 10, 110, 5e-4, (75, 90))
    svhn = table_configs("table2_svhn_resnet18_last", "paper")["cifs"]
    assert (svhn.dataset, svhn.lr, svhn.weight_decay, svhn.epochs) == ("svhn", 0.01, 5e-4, 120)
    fm = table_configs("tableD1_fmnist_resnet10_last", "paper")["cifs"]
    assert (fm.dataset, fm.arch, fm.eps, fm.train_steps, fm.train_step_size) == ("fmnist", "resnet10", 0.3, 20, 0.02)
    assert (fm.milestones, fm.lr, fm.weight_decay, fm.epochs) == ((45, 75, 90), 0.1, 2e-4, 120)
    assert table_attacks("tableD1_fmnist_resnet10_last", fm) == ["natural", "fgsm", "pgd20@0.01", "pgd100@0.02"]
    assert table_attacks("table1_cifar10_resnet18_last", wrn) == ["natural", "fgsm", "pgd20", "cw", "pgd100"]
    fat = table_configs("table3_cifar10_fat_resnet18", "paper")
    assert [c.method for c in fat.values()] == ["fat", "fat"]


def test_ablation_rows_change_one_thing():
    e1 = table_configs("tableE1_beta_train", "paper")
    assert [c.beta for n, c in e1.items() if n != "vanilla"] == [0.1, 1.0, 2.0, 10.0, 100.0]
    e2 = table_configs("tableE2_positions", "paper")
    assert e2["P1"].model_options == {"positions": ["P1"]} and e2["P1-P2"].model_options == {}
    assert table_configs("tableE3_probe_arch", "paper")["linear-linear"].model_options == {"probes": "linear"}
    t5 = table_configs("table5_topk_feedback_pgd20", "paper")
    assert [t5[r].model_options.get("k", 2) for r in ("top1", "top2", "top3")] == [1, 2, 3]
    imgf = table_configs("section3_3_imgf_pgd20", "paper")
    assert imgf["cifs_sigmoid_alpha10"].model_options == {"imgf": "sigmoid", "alpha": 10.0}
    b4 = table_configs("tableB4_at_variants_resnet18", "paper")
    assert [c.method for c in b4.values()] == ["pgd_at", "trades", "fat"] * 2
    # models shared between tables are the same run (trained once)
    assert e1["2"].key() == table_configs("table1_cifar10_resnet18_last", "paper")["cifs"].key() == e2["P1-P2"].key()


def test_smaller_profiles_keep_the_dataset_recipe():
    lap = table_configs("tableD1_fmnist_resnet10_last", "laptop")["cifs"]
    prof = PROFILES["laptop"]
    assert lap.dataset == "fmnist" and lap.eps == 0.3 and lap.epochs == prof.epochs
    assert lap.train_step_size == pytest.approx(0.3 * prof.train_step_size / prof.eps)
    assert lap.milestones == tuple(sorted(set(lap.milestones))) and lap.milestones[-1] <= prof.epochs
    assert table_configs("table2_svhn_resnet18_last", "colab")["cifs"].lr == 0.01
    wrn = table_configs("table1_cifar10_wrn28_10_last", "colab")["cifs"]
    assert wrn.width == 10 and wrn.weight_decay == 5e-4
    assert table_configs("table1_cifar10_wrn28_10_last", "smoke")["cifs"].width == 1
    folder = table_configs("table1_cifar10_resnet18_last", "laptop", dataset="folder:/x")["cifs"]
    assert folder.dataset == "folder:/x"
    with pytest.raises(ConfigError, match="unknown table"):
        table_configs("table99", "smoke")
    assert table_configs("tableE2", "smoke").keys() == table_configs("tableE2_positions", "smoke").keys()


def test_gpu_hour_estimates():
    for row in list_tables():
        assert row["gpu_hours_paper"] is not None and row["gpu_hours_paper"] > 0, row["key"]
    assert estimate_gpu_hours("table1_cifar10_wrn28_10_last") > estimate_gpu_hours("table1_cifar10_resnet18_last")


def test_reproduce_on_tiny_settings(cifs_home, capsys):
    res = reproduce("tableE3_probe_arch", "smoke", rows=["vanilla", "linear-linear"], progress=False, **TINY)
    out = capsys.readouterr().out
    assert "SYNTHETIC" in out and "paper" in out
    assert set(res.run) == {"vanilla", "linear-linear"}
    for row in res.run.values():
        assert set(row) == {"natural", "fgsm", "pgd20", "pgd100"}
        assert 0 <= row["pgd100"] <= 100
    assert res.frame.loc[("linear-linear", "paper"), "pgd20"] == 51.32
    assert res.frame.loc[("vanilla", "this run (smoke)"), "natural"] == res.run["vanilla"]["natural"]
    saved = json.loads(res.path.read_text())
    assert saved["run"] == res.run and saved["profile"] == "smoke" and res.path.parent == cifs_home / "runs" / "tables"
    # a second call trains nothing and evaluates nothing new
    files = [p for p in (cifs_home / "runs").rglob("*") if p.is_file() and "tables" not in p.parts]
    assert any(p.name == "history.jsonl" for p in files) and any(p.parent.name == "eval" for p in files)
    stamps = {p: p.stat().st_mtime_ns for p in files}
    again = reproduce("tableE3_probe_arch", "smoke", rows=["vanilla", "linear-linear"], progress=False, verbose=False, **TINY)
    assert again.run == res.run
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_reproduce_special_tables(cifs_home, monkeypatch):
    t4 = reproduce("table4_topk_at_resnet18", "smoke", progress=False, verbose=False, **TINY)
    assert set(t4.run) == {"fgsm", "pgd20"}
    for row in t4.run.values():
        assert row["top1"] <= row["top2"] <= row["top3"]
    t5 = reproduce("table5_topk_feedback_pgd20", "smoke", rows=["top2"], progress=False, verbose=False, **TINY)
    assert set(t5.run["top2"]) == {"natural_final", "adap_final", "cifs_cifs", "cifs_final"}
    # Table B.3 with its FGSM column only (the full sweep runs 9 x 151 attack steps)
    key = "tableB3_beta_atk_resnet18"
    monkeypatch.setitem(TABLES, key, dataclasses.replace(TABLES[key], attacks=("fgsm",), columns=("fgsm",)))
    b3 = reproduce(key, "smoke", rows=["cifs"], progress=False, verbose=False, **{**TINY, "eval_n": 8})
    assert set(b3.run) == {f"cifs beta_atk={b}" for b in ("0", "0.1", "1", "2", "10", "100", "inf", "inf-P1", "inf-P2")}
    # the paper's "inf-1" is its first CIFS layer in forward order: our P2
    assert b3.frame.loc[("cifs beta_atk=inf-P2", "paper"), "fgsm"] == 61.06
    assert b3.frame.loc[("cifs beta_atk=inf-P1", "paper"), "fgsm"] == 60.03
    assert b3.frame.loc[("cifs beta_atk=2", "this run (smoke)"), "fgsm"] == b3.run["cifs beta_atk=2"]["fgsm"]
