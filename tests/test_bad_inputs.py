"""Bad or unusual inputs, through the API and the CLI: each gets one clear message (naming the value and
the fix) or is handled correctly, before any work starts, and nothing a user had is written or lost."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

import cifs_edu
from cifs_edu.attacks import FGSM, PGD, robust_accuracy
from cifs_edu.models import build_model


@pytest.fixture(scope="module")
def net():
    torch.manual_seed(0)
    return build_model("resnet18", defense="none", width=2).eval()


@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(0)
    return torch.rand(4, 3, 32, 32, generator=g), torch.tensor([0, 1, 2, 3])


# ---------------------------------------------------------------- attacks and evaluation: inputs
@pytest.mark.parametrize("make_x, message", [
    (lambda x: x * 255, r"x must lie in \[0, 1\] \(got values from .* to 25"),          # 0-255 pixels
    (lambda x: (x - 0.5) / 0.25, r"x must lie in \[0, 1\].*normalise inside"),         # normalised inputs
    (lambda x: x - 2, r"x must lie in \[0, 1\]"),                                       # all negative
    (lambda x: torch.full_like(x, float("nan")), r"x must lie in \[0, 1\] \(got values from nan"),
    (lambda x: (x * 255).to(torch.uint8), r"floating-point image tensor.*x.float\(\) / 255"),  # uint8
    (lambda x: x[:0], r"at least one image"),                                           # empty batch
])
def test_attack_refuses_images_outside_the_unit_range(net, batch, make_x, message):
    x, y = batch
    with pytest.raises(ValueError, match=message):
        PGD(net, 8 / 255, steps=2)(make_x(x), y[: len(make_x(x))])


@pytest.mark.parametrize("make_y, message", [
    (lambda y: y.float(), r"1-D integer label tensor of length 4 \(got torch.float32"),  # float labels
    (lambda y: y[:3], r"length 4 \(got torch.int64, shape \(3,\)\)"),                   # wrong length
    (lambda y: y[:, None], r"1-D integer label tensor"),                                # 2-D labels
    (lambda y: y > 1, r"1-D integer label tensor.*torch.bool"),                         # boolean labels
    (lambda y: [0, 1, 2, 3], r"1-D integer label tensor of length 4 \(got list\)"),     # a list
])
def test_attack_refuses_bad_labels(net, batch, make_y, message):
    x, y = batch
    with pytest.raises(ValueError, match=message):
        FGSM(net, 8 / 255)(x, make_y(y))


def test_attack_under_inference_mode_says_why(net, batch):
    x, y = batch
    with torch.inference_mode(), pytest.raises(RuntimeError, match=r"outside torch.inference_mode\(\)"):
        PGD(net, 8 / 255, steps=1)(x, y)


def test_attack_on_inference_tensors_and_under_no_grad_works(net, batch):
    x, y = batch
    with torch.inference_mode():
        xi = x.clone()  # an inference tensor
    a = PGD(net, 8 / 255, steps=2)(xi, y)
    with torch.no_grad():
        b = PGD(net, 8 / 255, steps=2)(x, y)
    assert torch.equal(a, b) and (a - x).abs().max() <= 8 / 255 + 1e-6


def test_float64_and_float16_inputs_are_attacked_in_the_models_dtype(net, batch):
    x, y = batch
    ref = PGD(net, 8 / 255, steps=2)(x, y)
    out64 = PGD(net, 8 / 255, steps=2)(x.double(), y)
    assert out64.dtype == torch.float64 and torch.allclose(out64.float(), ref, atol=1e-6)
    assert robust_accuracy(net, (x.double(), y), progress=False).accuracy == robust_accuracy(net, (x, y), progress=False).accuracy
    g = PGD(net, 8 / 255, steps=1).input_gradient(x.double(), y)
    assert g.dtype == torch.float32 and g.shape == x.shape


def test_clean_accuracy_refuses_unnormalised_images_and_empty_data(net, batch):
    x, y = batch
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
        robust_accuracy(net, (x * 255, y), progress=False)
    with pytest.raises(ValueError, match="holds no examples"):
        robust_accuracy(net, (x[:0], y[:0]), progress=False)


@pytest.mark.parametrize("kwargs, message", [
    ({"eps": 8}, r"eps must be in \[0, 1\].*8/255"),       # eps in pixel units
    ({"eps": -0.1}, r"eps must be in \[0, 1\]"),
    ({"eps": "8/255"}, "eps must be a number"),
    ({"eps": 8 / 255, "loss": "kl"}, "loss must be 'ce' or 'adaptive'"),
    ({"eps": 8 / 255, "loss": "adaptive", "beta_atk": "inf"}, "adaptive"),   # no probes to attack
    ({"eps": 8 / 255, "beta_atk": -1, "loss": "adaptive"}, "beta"),
])
def test_attack_refuses_bad_settings(net, kwargs, message):
    from cifs_edu.profiles import ConfigError

    with pytest.raises(ConfigError, match=message):
        PGD(net, **kwargs)


def test_setup_refuses_a_bad_seed_and_profile(monkeypatch):
    from cifs_edu.profiles import ConfigError

    with pytest.raises(ValueError, match="seed must be a non-negative int"):
        cifs_edu.setup(seed=-3, quiet=True)
    monkeypatch.setenv("CIFS_SEED", "three")
    with pytest.raises(ConfigError, match="CIFS_SEED must be an integer >= 0, got 'three'"):
        cifs_edu.setup(quiet=True)


# ---------------------------------------------------------------- evaluate_run / `eval`: before loading anything
@pytest.mark.parametrize("kwargs, message", [
    ({"n": -5}, r"n must be a number of test images >= 1.*got -5"),
    ({"n": 0}, r"n must be a number of test images >= 1.*got 0"),
    ({"n": 2.5}, r"n must be a number of test images"),
    ({"attacks": []}, "attacks must be a non-empty list"),
    ({"attacks": "pgd20"}, "attacks must be a non-empty list"),
    ({"attacks": ["pgd-twenty"]}, "pgd-twenty"),
    ({"sweep": "yes"}, "sweep must be True or False"),
    ({"beta": -2}, "beta"),
])
def test_evaluate_run_refuses_bad_requests_before_loading(tmp_path, kwargs, message):
    from cifs_edu.profiles import ConfigError
    from cifs_edu.training import evaluate_run

    args = {"attacks": ["pgd20"], **kwargs}
    with pytest.raises(ConfigError, match=message):
        evaluate_run(tmp_path / "no-such-run", **args)  # fails on the request, not on the missing run
    assert not (tmp_path / "no-such-run").exists()


def test_evaluate_run_on_a_missing_checkpoint_names_it(tmp_path):
    from cifs_edu.training import evaluate_run

    (tmp_path / "empty-run").mkdir()
    with pytest.raises(FileNotFoundError, match=r"no checkpoint at .*empty-run/last.pt"):
        evaluate_run(tmp_path / "empty-run", ["natural"])
    assert list((tmp_path / "empty-run").iterdir()) == []  # nothing written into the user's folder


@pytest.mark.parametrize("argv, message", [
    (["eval", "RUN", "--n", "-5"], "n must be a number of test images >= 1"),
    (["eval", "RUN", "--n", "0"], "n must be a number of test images >= 1"),
    (["eval", "RUN", "--attack", "pgd-twenty"], "pgd-twenty"),
    (["eval", "RUN", "--beta-atk", "-1"], "beta"),
    (["eval", "MISSING"], "no checkpoint at"),
])
def test_cli_eval_bad_inputs_are_one_line_errors(tmp_path, capsys, argv, message):
    from cifs_edu.tools.cli import main

    (tmp_path / "run").mkdir()
    argv = [str(tmp_path / "run") if a == "RUN" else str(tmp_path / "missing") if a == "MISSING" else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err
    assert list((tmp_path / "run").iterdir()) == []


# ---------------------------------------------------------------- run folders: never destroy what is not ours
def _tiny_config(**kw):
    from cifs_edu.training import TrainConfig

    return TrainConfig.from_profile("smoke", n_train=40, n_val=0, n_test=20, epochs=1, eval_n=20, width=2,
                                    batch_size=20, train_steps=1, eval_attacks=("natural",), eval_best=False, **kw)


def _snapshot(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_train_refuses_a_folder_of_someone_elses_files_and_touches_nothing(tmp_path, cifs_home):
    from cifs_edu.profiles import ConfigError
    from cifs_edu.training import train

    mine = tmp_path / "my-project"
    (mine / "eval").mkdir(parents=True)
    (mine / "results.json").write_text('{"mine": true}')
    (mine / "eval" / "notes.txt").write_text("keep me")
    (mine / "paper.tex").write_text("\\documentclass{article}")
    before = _snapshot(mine)
    for resume in (True, False):
        with pytest.raises(ConfigError, match=r"already holds files that cifs_edu did not write \(paper.tex\)"):
            train(_tiny_config(), run_dir=mine, resume=resume, progress=False)
    assert _snapshot(mine) == before


def test_train_refuses_a_file_and_an_unwritable_folder_before_any_work(tmp_path, cifs_home, monkeypatch):
    from cifs_edu.profiles import ConfigError
    from cifs_edu.engine import rundir
    from cifs_edu.training import train

    f = tmp_path / "a-file"
    f.write_text("data")
    with pytest.raises(ConfigError, match="is a file, not a folder"):
        train(_tiny_config(), run_dir=f, progress=False)
    assert f.read_text() == "data"
    # a read-only place (root, who runs CI, may write anywhere: the permission answer is simulated)
    ro = tmp_path / "read-only"
    ro.mkdir()
    monkeypatch.setattr(rundir.os, "access", lambda path, mode: Path(path) != ro)
    with pytest.raises(ConfigError, match=r"cannot write the run folder .*read-only/run: .*read-only is not writable"):
        train(_tiny_config(), run_dir=ro / "run", progress=False)
    assert list(ro.iterdir()) == []


def test_no_resume_deletes_only_what_the_run_wrote(tmp_path, cifs_home):
    from cifs_edu.training import train

    run = tmp_path / "run"
    first = train(_tiny_config(), run_dir=run, progress=False)
    assert (run / ".cifs_edu_run").is_file() and (run / "last.pt").is_file() and first.metrics is not None
    (run / "eval").mkdir(exist_ok=True)
    (run / "eval" / "my-notes.txt").write_text("keep me")
    (run / "eval" / "last-0123456789.json").write_text("{}")  # an evaluation of ours
    again = train(_tiny_config(), run_dir=run, resume=False, progress=False)
    assert again.trained_epochs == 1
    assert (run / "eval" / "my-notes.txt").read_text() == "keep me"
    assert not (run / "eval" / "last-0123456789.json").exists()


# ---------------------------------------------------------------- checkpoints and cached evaluations
def test_flipped_bytes_in_a_checkpoint_are_refused_and_a_cached_evaluation_needs_the_same_weights(tmp_path, cifs_home):
    import torch as _torch

    from cifs_edu.engine.checkpoint import CheckpointError, load_checkpoint, weights_digest
    from cifs_edu.training import evaluate_run, load_model, train

    run = tmp_path / "run"
    train(_tiny_config(), run_dir=run, progress=False)
    first = evaluate_run(run, ["natural"], n=20, progress=False)
    assert first["weights_sha256"] == load_model(run).weights_sha256
    # other valid weights under the same name: the saved evaluation is not reused
    payload = load_checkpoint(run / "last.pt")
    payload["model"] = {k: (v + 0.5 if v.is_floating_point() else v) for k, v in payload["model"].items()}
    payload["weights_sha256"] = weights_digest(payload["model"])
    _torch.save(payload, run / "last.pt")
    again = evaluate_run(run, ["natural"], n=20, progress=False)
    assert again["weights_sha256"] == payload["weights_sha256"] != first["weights_sha256"]
    # the same weights with a few flipped bytes: refused, with the file named
    data = bytearray((run / "last.pt").read_bytes())
    vec = next(v for v in payload["model"].values() if v.is_floating_point() and v.dim() == 1 and v.numel() >= 4)
    blob = vec[:4].numpy().tobytes()  # a BatchNorm vector: stored as it is laid out
    at = data.find(blob)
    assert at > 0
    data[at:at + 4] = bytes(b ^ 0xFF for b in data[at:at + 4])
    (run / "last.pt").write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=r"last.pt is corrupt: its weights do not match the digest"):
        evaluate_run(run, ["natural"], n=20, progress=False)


def test_a_torchvision_data_set_without_torchvision_says_how_to_get_it(tmp_path, monkeypatch):
    """torchvision is an extra (cifs_edu[data]); without it the downloaders fail with the fix."""
    import sys

    from cifs_edu.datasets import DataNotFoundError, load_data

    monkeypatch.setitem(sys.modules, "torchvision", None)
    monkeypatch.setitem(sys.modules, "torchvision.datasets", None)
    with pytest.raises(DataNotFoundError, match=r"torchvision is not installed.*pip install torchvision.*cifs_edu\[data\]"):
        load_data("cifar10", root=tmp_path, download=False)
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------- configurations and data sizes
def test_synthetic_data_too_large_for_memory_fails_before_allocating(monkeypatch):
    from cifs_edu import datasets
    from cifs_edu.profiles import ConfigError

    monkeypatch.setattr(datasets, "available_memory", lambda: 2 * 2**30)  # a 2 GiB machine
    with pytest.raises(ConfigError, match=r"10,002,000 synthetic images .* need about 143.1 GiB, but only 2.0 GiB"):
        datasets.load_data("synthetic", n_train=10_000_000, n_test=2_000)


@pytest.mark.parametrize("overrides, message", [
    ({"model_options": {"width": 64}}, r"model_options may not set \['width'\]"),
    ({"defense": "cifs", "model_options": {"defense": "cas"}}, r"model_options may not set \['defense'\]"),
    ({"model_options": {"num_classes": 100}}, r"may not set \['num_classes'\].*come from the data set"),
    ({"model_options": {"kk": 3}}, "model_options"),                         # unknown option
    ({"epochs": 0}, "epochs must be an integer > 0"),
    ({"width": -8}, "width must be an integer > 0"),
    ({"lr": float("nan")}, "lr must be a number > 0"),
    ({"eps": 8}, "eps must be <= 1"),
    ({"seed": -1}, "seed must be an integer >= 0"),
    ({"n_train": 0}, "n_train must be an integer > 0"),
    ({"milestones": (4, 2)}, "milestones must be strictly increasing"),
    ({"method": "trades", "train_steps": 0}, "needs train_steps >= 1"),
    ({"dataset": "imagenet"}, "dataset must be one of"),
    ({"eval_attacks": ("pgd-zero",)}, "pgd-zero"),
])
def test_train_config_refuses_bad_values(overrides, message):
    from cifs_edu.profiles import ConfigError
    from cifs_edu.training import TrainConfig

    with pytest.raises(ConfigError, match=message):
        TrainConfig.from_profile("smoke", **overrides)


@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "0"], "epochs must be an integer > 0"),
    (["train", "--width", "-1"], "width must be an integer > 0"),
    (["train", "--seed", "-2"], "seed must be an integer >= 0"),
    (["train", "--dataset", "nope"], "dataset must be one of"),
    (["train", "--set", "nope=1"], "unknown TrainConfig field"),
    (["train", "--set", "lr"], "--set expects KEY=VALUE"),
    (["train", "--option", "width=4"], "model_options may not set"),
    (["train", "--beta", "-1"], "beta"),
    (["train", "--run-dir", "FILE", "--epochs", "1"], "is a file, not a folder"),
    (["train", "--run-dir", "THEIRS", "--epochs", "1"], "already holds files that cifs_edu did not write"),
    (["prepare", "--jobs", "0"], "jobs must be"),
    (["reproduce", "table99"], "unknown table"),
])
def test_cli_bad_inputs_are_one_line_errors_and_touch_nothing(tmp_path, capsys, cifs_home, argv, message):
    from cifs_edu.tools.cli import main

    target = tmp_path / "target"
    if "FILE" in argv:
        target.write_text("mine")
    if "THEIRS" in argv:
        target.mkdir()
        (target / "thesis.tex").write_text("mine")
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    argv = [str(target) if a in ("FILE", "THEIRS") else a for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err and "Traceback" not in err, err
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before
