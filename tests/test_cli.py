"""``python -m cifs_edu``: train, eval, reproduce, list; one-line errors with exit status 2."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from cifs_edu.tools.cli import build_parser, main
from cifs_edu.profiles import ConfigError

from .conftest import ROOT

TINY_SET = ["n_train=64", "n_val=32", "n_test=32", "eval_n=16", "width=4", "batch_size=32", "train_steps=1",
            "val_steps=2", "eval_batch_size=32", "milestones=[]"]


def _sets(items):
    out = []
    for s in items:
        out += ["--set", s]
    return out


def test_train_eval_and_reproduce_write_json(cifs_home, tmp_path, capsys):
    run_dir = tmp_path / "run"
    rc = main(["train", "--profile", "smoke", "--defense", "cifs", "--epochs", "1", "--imgf", "softmax",
               "--run-dir", str(run_dir), "--no-progress", "--json", *_sets(TINY_SET + ['eval_attacks=["natural","fgsm"]'])])
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((run_dir / "results.json").read_text())
    assert printed == saved and set(saved["last"]) == {"natural", "fgsm"}
    assert saved["config"]["defense"] == "cifs" and saved["config"]["model_options"] == {"scale": 32, "normalize": "synthetic"}  # imgf="softmax" is the default: dropped from the key
    # smoke rescales the softmax mask by the 32 channels of a width-4 ResNet-18's last block (MASK_SCALE_NOTE)

    rc = main(["eval", str(run_dir), "--attack", "pgd20", "--attack", "fgsm", "--n", "8", "--no-progress", "--json"])
    assert rc == 0
    ev = json.loads(capsys.readouterr().out)
    assert set(ev["accuracy"]) == {"pgd20", "fgsm"} and ev["n"]["pgd20"] == 8
    assert os.path.isfile(ev["path"]) and os.path.dirname(ev["path"]) == str(run_dir / "eval")
    assert "beta_atk=2" in ev["attacks"]["pgd20"]  # CIFS is attacked with the adaptive loss

    rc = main(["eval", str(run_dir / "best.pt"), "--attack", "sweep", "--n", "4", "--no-progress"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "per beta_atk" in out and "inf-P1" in out

    rc = main(["reproduce", "tableE2", "--profile", "smoke", "--rows", "vanilla,P1", "--no-progress",
               *_sets(TINY_SET + ["epochs=1"])])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Table E.2" in out and "paper" in out and "this run (smoke)" in out
    table = json.loads((cifs_home / "runs" / "tables" / "tableE2_positions-smoke.json").read_text())
    assert set(table["run"]) == {"vanilla", "P1"} and table["paper"]["P1"]["pgd20"] == 48.45


def test_train_uses_the_thread_policy_of_setup(monkeypatch):
    """CIFS_THREADS, else one thread for smoke, while the command runs; torch's setting is restored."""
    import torch

    import cifs_edu.training as T

    seen = []

    def fake_train(config, **kw):
        seen.append(torch.get_num_threads())
        raise ConfigError("stop here")

    monkeypatch.setattr(T, "train", fake_train)
    before = torch.get_num_threads()
    monkeypatch.delenv("CIFS_THREADS", raising=False)
    assert main(["train", "--profile", "smoke", "--no-progress"]) == 2
    monkeypatch.setenv("CIFS_THREADS", "3")
    assert main(["train", "--profile", "laptop", "--no-progress"]) == 2
    assert seen == [1, 3] and torch.get_num_threads() == before


def test_list_and_help(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert "table1_cifar10_resnet18_last" in out and "H100-h" in out
    parser = build_parser()
    train_help = parser._subparsers._group_actions[0].choices["train"].format_help()
    for flag in ("--profile", "--defense", "--method", "--epochs", "--no-resume", "--set"):
        assert flag in train_help
    for command in ("train", "prepare"):
        for action in parser._subparsers._group_actions[0].choices[command]._actions:
            assert action.help, (command, action.dest)  # every flag is documented
    assert main(["prepare", "--plan", "--profile", "smoke"]) == 0
    plan = capsys.readouterr().out.splitlines()
    assert len(plan) == 14 and sum("sweep on 100 test images" in line for line in plan) == 8
    from cifs_edu import zoo

    assert main(["prepare", "--plan", "--profile", "smoke", "--seed", "3"]) == 0  # the seed's own runs
    assert [re.search(r"smoke-\S+", line).group() for line in capsys.readouterr().out.splitlines()] == \
        [item.config.run_name for item in zoo.book_plan("smoke", seed=3)]


def _run(*args, env_home):
    env = dict(os.environ, PYTHONPATH=str(ROOT), CIFS_HOME=str(env_home))
    return subprocess.run([sys.executable, "-m", "cifs_edu", *args], capture_output=True, text=True, env=env, timeout=120)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--set", "eps=-1", "--set", "lr=0"], "eps must be"),
        (["train", "--set", "learning_rate=0.1"], "unknown TrainConfig field"),
        (["train", "--dataset", "folder:/no/such/folder", "--set", "n_train=8"], "folder"),
        (["eval", "/no/such/run"], "no checkpoint"),
        (["reproduce", "table99"], "unknown table"),
        (["prepare", "--jobs", "0"], "jobs must be"),
        (["train", "--cuda-graphs", "--method", "trades"], "cuda_graphs=True is not possible"),
    ],
)
def test_errors_are_one_line_with_status_2(tmp_path, args, message):
    proc = _run(*args, env_home=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_command_options_lists_train_flags_and_rejects_unknown_commands():
    from cifs_edu.tools.cli import command_options

    flags = [f for f, _ in command_options("train")]
    assert "--profile" in flags and "--defense" in flags and "-h, --help" not in flags
    assert all(isinstance(h, str) for _, h in command_options("train"))
    with pytest.raises(ValueError, match="unknown command 'fly'"):
        command_options("fly")


def test_train_options_are_generated_from_the_config_fields():
    """One configuration spine: every TrainConfig field (but profile, model_options) is a train flag
    with its FIELD_HELP line, and a flag sets exactly that field."""
    import dataclasses

    from cifs_edu.tools.cli import command_options
    from cifs_edu.training import TrainConfig
    from cifs_edu.training.config import FIELD_HELP

    names = [f.name for f in dataclasses.fields(TrainConfig)]
    assert set(FIELD_HELP) == set(names)
    helps = dict(command_options("train"))
    for name in names:
        if name not in ("profile", "model_options"):
            assert helps["--" + name.replace("_", "-")] == FIELD_HELP[name]
    args = build_parser().parse_args(["train", "--milestones", "3,4", "--eval-attacks", "natural,pgd20", "--lr", "0.05",
                                      "--eval-n", "null", "--cuda-graphs", "--random-start", "false", "--beta", "inf"])
    assert (args.milestones, args.eval_attacks, args.lr, args.eval_n) == ([3, 4], ["natural", "pgd20"], 0.05, None)
    assert (args.cuda_graphs, args.random_start, args.beta, args.epochs) == (True, False, "inf", None)


@pytest.mark.parametrize("key", ["table1_cifar10_resnet18_last", "table2_svhn_resnet18_last", "tableD1_fmnist_resnet10_last",
                                 "tableE2_positions", "tableE3_probe_arch", "table3_cifar10_fat_wrn28_10",
                                 "tableE1_beta_train"])
def test_printed_train_commands_parse_back_into_the_table_configs(key, monkeypatch, capsys):
    """experiments.train_command (what chapter 09 prints) given to the real CLI builds the row's config (same key)."""
    import shlex
    from types import SimpleNamespace

    import cifs_edu.training as training
    from cifs_edu.experiments import table_configs, train_command

    for row, config in table_configs(key, "paper").items():
        seen = []
        monkeypatch.setattr(training, "train", lambda c, **kw: seen.append(c) or SimpleNamespace(
            metrics=None, history=[], run_dir="-"))
        assert main(shlex.split(train_command(config))[3:]) == 0
        assert seen[0].key() == config.key(), (key, row)
