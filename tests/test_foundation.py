"""setup(), profiles, paths, packaging pins and the paper's tables."""
from __future__ import annotations

import re
import tomllib

import pytest
import torch

import cifs_edu
from cifs_edu import paths
from cifs_edu.paper import comparison, paper_table, paper_tables
from cifs_edu.profiles import PROFILES, ConfigError, get_profile

from .conftest import ROOT


def test_setup_defaults_to_smoke_and_prints_block(monkeypatch, capsys):
    monkeypatch.delenv("CIFS_PROFILE", raising=False)
    s = cifs_edu.setup()
    out = capsys.readouterr().out
    assert s.profile.name == "smoke"
    assert s.device == torch.device("cpu")
    assert f"torch {torch.__version__}" in out and "profile : smoke" in out and "device  : cpu" in out
    assert "NOT CIFAR-10" in out  # smoke numbers are labelled as synthetic
    assert cifs_edu.current() is s


def test_setup_turns_on_deterministic_algorithms_on_the_cpu():
    """Without importing torch._inductor (2 s of every chapter's start) when it is not loaded yet."""
    import subprocess
    import sys

    code = ("import sys, torch, cifs_edu; cifs_edu.setup(quiet=True); "
            "print(torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(), "
            "'torch._inductor' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.split() == ["True", "True", "False"], out.stderr


def test_setup_reads_environment_and_argument_wins(monkeypatch):
    monkeypatch.setenv("CIFS_PROFILE", "laptop")
    assert cifs_edu.setup(quiet=True).profile.name == "laptop"
    assert cifs_edu.setup(profile="smoke", quiet=True).profile.name == "smoke"


def test_setup_unknown_profile_lists_choices(monkeypatch):
    with pytest.raises(ConfigError, match=r"unknown profile 'huge'.*colab.*laptop.*paper.*smoke"):
        cifs_edu.setup(profile="huge")
    monkeypatch.setenv("CIFS_PROFILE", "nope")
    with pytest.raises(ConfigError, match="CIFS_PROFILE"):
        cifs_edu.setup()


def test_setup_seeds_everything():
    import random

    import numpy as np

    cifs_edu.setup(seed=7, quiet=True)
    a = (random.random(), np.random.rand(), torch.rand(3))
    cifs_edu.setup(seed=7, quiet=True)
    b = (random.random(), np.random.rand(), torch.rand(3))
    assert a[0] == b[0] and a[1] == b[1] and torch.equal(a[2], b[2])
    cifs_edu.setup(seed=8, quiet=True)
    assert not torch.equal(torch.rand(3), a[2])
    with pytest.raises(ValueError, match="seed"):
        cifs_edu.setup(seed=-1, quiet=True)


def test_setup_thread_policy(monkeypatch):
    before = torch.get_num_threads()
    try:
        monkeypatch.delenv("CIFS_THREADS", raising=False)
        cifs_edu.setup(profile="smoke", quiet=True)
        assert torch.get_num_threads() == 1  # smoke: one thread is fastest for its tiny models
        monkeypatch.setenv("CIFS_THREADS", "2")
        cifs_edu.setup(profile="smoke", quiet=True)
        assert torch.get_num_threads() == 2
        cifs_edu.setup(profile="smoke", threads=1, quiet=True)  # the argument wins
        assert torch.get_num_threads() == 1
        monkeypatch.setenv("CIFS_THREADS", "many")
        with pytest.raises(ValueError, match="CIFS_THREADS"):
            cifs_edu.setup(profile="smoke", quiet=True)
        with pytest.raises(ValueError, match="positive"):
            cifs_edu.setup(profile="smoke", threads=0, quiet=True)
    finally:
        torch.set_num_threads(before)


def test_gpu_profile_without_gpu_gives_hint(monkeypatch, capsys):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    s = cifs_edu.setup(profile="colab")
    out = capsys.readouterr().out
    assert s.device.type == "cpu"
    assert "HINT" in out and "GPU" in out and "Runtime" in out
    with pytest.raises(RuntimeError, match="cuda"):
        cifs_edu.setup(profile="smoke", device="cuda")


def test_setup_applies_figure_style():
    import matplotlib as mpl

    mpl.rcdefaults()
    cifs_edu.setup(quiet=True)
    assert mpl.rcParams["axes.grid"] is True
    assert mpl.rcParams["axes.spines.top"] is False


@pytest.mark.parametrize(
    "change, message",
    [
        ({"eps": -0.1}, "eps must be >= 0"),
        ({"epochs": 0}, "epochs must be > 0"),
        ({"milestones": (5, 3)}, "milestones"),
        ({"dataset": "imagenet"}, "dataset must be one of"),
        ({"device": "tpu"}, "device must be"),
        ({"n_train": 0}, "n_train must be > 0"),
        ({"sweep_n": 0}, "sweep_n must be > 0"),
        ({"normalize": "imagenet"}, "normalize must be None or one of"),
    ],
)
def test_profile_validation(change, message):
    with pytest.raises(ConfigError, match=message):
        get_profile("smoke").replace(**change)


def test_sweep_images_defaults_to_eval_n():
    assert get_profile("smoke").sweep_images == 100 < get_profile("smoke").eval_n
    assert get_profile("paper").sweep_images is None  # the whole test set, like eval_n
    assert get_profile("laptop").replace(sweep_n=None).sweep_images == get_profile("laptop").eval_n


def test_profile_validation_reports_all_problems_at_once():
    with pytest.raises(ConfigError) as err:
        get_profile("smoke").replace(eps=-1, epochs=0)
    assert "eps" in str(err.value) and "epochs" in str(err.value)


def test_smoke_models_normalise_with_the_synthetic_statistics():
    """smoke puts normalize="synthetic" into every model's options (see NORMALIZE_NOTE); the CIFAR-10
    profiles follow the authors (no normalisation); an explicit option wins."""
    import torch

    from cifs_edu.datasets import load_data
    from cifs_edu.models import DATASET_STATS, Normalize
    from cifs_edu.training import TrainConfig

    assert PROFILES["smoke"].normalize == "synthetic"
    assert all(PROFILES[p].normalize is None for p in ("laptop", "colab", "paper"))
    for defense in ("none", "cas", "cifs"):
        cfg = TrainConfig.from_profile("smoke", defense=defense)
        assert cfg.model_options["normalize"] == "synthetic"
        norm = next(m for m in cfg.build_model().modules() if isinstance(m, Normalize))
        mean, std = DATASET_STATS["synthetic"]
        assert norm.mean.flatten().tolist() == list(mean) and norm.std.flatten().tolist() == list(std)
    assert "normalize" not in TrainConfig.from_profile("laptop").model_options
    # the statistics belong to the synthetic data: smoke on another data set gets none
    assert "normalize" not in TrainConfig.from_profile("smoke", dataset="cifar10").model_options
    assert TrainConfig.from_profile("smoke", model_options={"normalize": None}).model_options == {"normalize": None}
    assert TrainConfig.from_profile("smoke").key() != TrainConfig.from_profile("smoke", model_options={"normalize": None}).key()
    # the statistics are the data set's own (measured on its training images)
    x = load_data("synthetic", n_train=1000, n_test=10).train.images.float() / 255
    assert torch.allclose(x.mean((0, 2, 3)), torch.tensor(mean), atol=0.01)
    assert torch.allclose(x.std((0, 2, 3)), torch.tensor(std), atol=0.01)


def test_paper_profile_is_the_papers_recipe():
    p = PROFILES["paper"]
    s = paper_tables()["settings"]["cifar10"]
    assert (p.epochs, p.milestones, p.lr, p.batch_size) == (s["epochs"]["resnet18"], (75, 90), 0.1, 128)
    assert p.weight_decay == s["weight_decay"]["resnet18"] and p.momentum == 0.9
    assert p.eps == pytest.approx(8 / 255) and p.train_steps == 10 and p.train_step_size == pytest.approx(2 / 255)
    assert p.width == 64 and p.dataset == "cifar10" and p.n_train is None


def test_paths_follow_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("CIFS_HOME", str(tmp_path))
    monkeypatch.delenv("CIFS_DATA", raising=False)
    monkeypatch.delenv("CIFS_RUNS", raising=False)
    assert paths.data_dir() == tmp_path / "data" and paths.runs_dir() == tmp_path / "runs"
    monkeypatch.setenv("CIFS_DATA", str(tmp_path / "elsewhere"))
    assert paths.data_dir() == tmp_path / "elsewhere"


def test_paper_tables_and_comparison():
    t1 = paper_table("table1_cifar10_resnet18_last")
    assert t1["rows"]["cifs"]["pgd100"] == 48.74 and t1["rows"]["vanilla"]["natural"] == 84.56
    with pytest.raises(KeyError, match="known tables"):
        paper_table("table99")
    frame = comparison({"cifs": {"natural": 70.0, "pgd20": 40.0}}, "table1_cifar10_resnet18_last", "smoke")
    assert frame.loc[("cifs", "this run (smoke)"), "pgd20"] == 40.0
    assert frame.loc[("cifs", "paper"), "pgd20"] == 51.23
    assert frame.loc[("vanilla", "paper"), "natural"] == 84.56


def _pins() -> dict[str, str]:
    """constraints.txt: the exact versions the book is built and tested with."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            m = re.fullmatch(r"([A-Za-z0-9_.\-]+)==(\S+)", line)
            assert m, f"constraints.txt line {line!r} is not an exact pin"
            pins[m.group(1).lower()] = m.group(2)
    return pins


def _pyproject_requirements() -> list[str]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    reqs = list(data["project"]["dependencies"])
    for extra in data["project"]["optional-dependencies"].values():
        reqs += extra
    return reqs


def test_pyproject_states_ranges_that_the_constraints_satisfy():
    """pip install cifs_edu must not force exact versions on a user's environment (e.g. Colab's torch)."""
    from packaging.requirements import Requirement

    pins = _pins()
    names = set()
    for text in _pyproject_requirements():
        req = Requirement(text)
        assert not any(s.operator == "==" for s in req.specifier), f"{text}: a range, not an exact pin"
        assert req.name.lower() in pins, f"{req.name} has no exact version in constraints.txt"
        assert req.specifier.contains(pins[req.name.lower()]), f"constraints.txt {req.name}=={pins[req.name.lower()]} is outside {text}"
        names.add(req.name.lower())
    assert names == set(pins)  # nothing pinned that is not required, nothing required that is not pinned


def test_environment_yml_matches_the_constraints():
    pins = _pins()
    text = (ROOT / "environment.yml").read_text()
    env_pins = dict(
        (m.group(1).lower(), m.group(2)) for m in re.finditer(r"^\s*-\s*([A-Za-z0-9_.\-]+)==(\S+)\s*$", text, re.M)
    )
    assert env_pins, "environment.yml lists no pinned pip packages"
    assert env_pins == pins
    assert re.search(r"^\s*-\s*python=3\.11\s*$", text, re.M)
    for key in ("torch", "torchvision", "jupyter-book", "nbval", "jupytext"):
        assert key in pins


def test_make_env_applies_the_constraints_and_a_console_script_exists():
    make = (ROOT / "Makefile").read_text()
    assert "-c constraints.txt" in make
    data = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert data["project"]["scripts"]["cifs-edu"] == "cifs_edu.tools.cli:main"




def test_required_pins():
    pins = _pins()
    assert pins["torch"] == "2.14.1" and pins["torchvision"] == "0.29.1"
    assert pins["jupyter-book"] == "1.0.4.post1"


def test_auto_profile_and_the_gpu_hint(monkeypatch, capsys):
    """'auto' is colab on a GPU and smoke without; a default smoke session on a GPU says how to use it."""
    monkeypatch.delenv("CIFS_PROFILE", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert cifs_edu.setup(profile="auto", quiet=True).profile.name == "smoke"
    monkeypatch.setenv("CIFS_PROFILE", "auto")
    assert get_profile(None).name == "smoke"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert get_profile("auto").name == "colab" and get_profile(None).name == "colab"
    monkeypatch.delenv("CIFS_PROFILE")
    cifs_edu.setup(device="cpu")  # an explicit device: no hint
    assert "HINT" not in capsys.readouterr().out
    monkeypatch.setattr("cifs_edu.runtime.pick_device", lambda prof, device=None: (torch.device("cpu"), None))
    cifs_edu.setup()
    assert "HINT: a CUDA GPU is available: cifs_edu.setup(profile='colab')" in capsys.readouterr().out


def test_package_version_matches_pyproject():
    import cifs_edu

    assert cifs_edu.__version__ == tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]


def test_glued_text_reaches_the_page_verbatim(monkeypatch):
    """myst-nb reads a glued text/plain back with literal_eval: the text must survive it unchanged
    (before the fix "[+0.2, +2.9]" rendered as "[0.2, 2.9]" and "6.40, 6.23" as "(6.4, 6.23)")."""
    import IPython.display
    from myst_nb.core.variables import format_plain_text

    from cifs_edu.claims import _GLUE_PREFIX, glue

    seen = []
    monkeypatch.setattr(IPython.display, "display", lambda data, **kw: seen.append((data, kw)))
    for value, fmt, page in (("[+0.2, +2.9]", None, "[+0.2, +2.9]"), ("6.40, 6.23", None, "6.40, 6.23"),
                             (1.5, "+.1f", "+1.5"), (6.4, ".2f", "6.40"), (1000, ",", "1,000"),
                             ("it's 'quoted'", None, "it's 'quoted'"), (3, None, "3")):
        seen.clear()
        glue("name", value, fmt)
        data, kw = seen[0]
        assert format_plain_text(data[_GLUE_PREFIX + "text/plain"], "") == page
        assert kw["metadata"]["scrapbook"]["name"] == "name" and kw["raw"] is True
