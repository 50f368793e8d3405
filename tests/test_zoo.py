"""The named recipes share cache keys with the paper-table rows that mean the same model."""
import pytest

from cifs_edu import zoo
from cifs_edu.engine.prepare import prepare
from cifs_edu.experiments import table_configs
from cifs_edu.profiles import ConfigError


@pytest.mark.parametrize("profile", ["smoke", "laptop", "paper"])
def test_recipes_match_table_rows(profile):
    t1 = table_configs("table1_cifar10_resnet18_last", profile)
    assert zoo.config("vanilla_at", profile).key() == t1["vanilla"].key()
    assert zoo.config("cifs_at", profile).key() == t1["cifs"].key()
    assert zoo.config("cas_at", profile).key() == t1["cas"].key()


def test_overrides_merge_and_errors():
    cfg = zoo.config("cifs_sigmoid", "smoke", model_options={"k": 3}, beta=0.1)
    assert cfg.model_options == {"imgf": "sigmoid", "alpha": 10.0, "k": 3, "normalize": "synthetic"} and cfg.beta == 0.1
    assert zoo.config("standard", "smoke").method == "standard"
    with pytest.raises(ConfigError, match="unknown model recipe"):
        zoo.config("resnet1000", "smoke")
    assert all(zoo.describe(n) for n in zoo.RECIPES)


def test_ablations_are_single_field_variants_of_cifs_at():
    """The ablations chapter builds its variants with TrainConfig.replace; zoo.ablation must give the same runs."""
    base = zoo.config("cifs_at", "smoke")
    opt = lambda **kw: base.replace(model_options={**base.model_options, **kw})  # noqa: E731
    expected = {"beta = 0.1": base.replace(beta=0.1), "P1 only": opt(positions=["P1"]),
                "linear-linear": opt(probes="linear"), "top-1": opt(k=1)}
    assert set(expected) == set(zoo.ABLATIONS)
    for name, cfg in expected.items():
        assert zoo.ablation(name, "smoke").key() == cfg.key(), name
    assert zoo.ablation("P1 only", "smoke").key() == table_configs("tableE2_positions", "smoke")["P1"].key()
    with pytest.raises(ConfigError, match="unknown ablation"):
        zoo.ablation("no-such-thing", "smoke")


def test_book_plan_covers_recipes_ablations_and_sweeps():
    plan = zoo.book_plan("smoke")
    names = [item.name for item in plan]
    assert len(set(names)) == len(names) == len(zoo.RECIPES) + len(zoo.ABLATIONS)
    assert len({item.config.key() for item in plan}) == len(plan)  # no run trained twice
    swept = {item.name for item in plan if item.sweep}
    assert swept == set(zoo.SWEPT) | {f"ablation: {n}" for n in zoo.ABLATIONS}
    assert all(item.sweep_n == 100 for item in plan if item.sweep)  # smoke's sweep_n
    assert all(item.sweep_n is None for item in zoo.book_plan("paper") if item.sweep)  # all test images


def test_prepare_trains_each_run_once_and_matches_a_direct_training(cifs_home, tmp_path):
    """prepare with 2 processes gives the weights of an in-process training; a second call trains nothing."""
    import torch

    from cifs_edu.profiles import get_profile
    from cifs_edu.training import load_model, load_or_train
    from cifs_edu.engine.runs import run_dir_for

    tiny = get_profile("smoke").replace(name="smoke", n_train=40, n_val=10, n_test=20, epochs=1, eval_n=20,
                                        sweep_n=10, width=2, batch_size=20, eval_every=1, val_steps=1)
    first = prepare(tiny, jobs=2, log=None)
    assert [r["name"] for r in first] == [i.name for i in zoo.book_plan(tiny)]
    assert all(r["trained_epochs"] == 1 for r in first)
    again = prepare(tiny, jobs=1, log=None)
    assert all(r["trained_epochs"] == 0 for r in again)
    item = next(i for i in zoo.book_plan(tiny) if i.name == "cifs_at")
    direct = load_or_train(item.config, run_dir=tmp_path / "direct", progress=False)
    pooled = load_model(run_dir_for(item.config))
    assert str(run_dir_for(item.config)).startswith(str(cifs_home))
    for (k, a), b in zip(direct.model.state_dict().items(), pooled.state_dict().values()):
        assert torch.equal(a, b), k
    with pytest.raises(ConfigError, match="jobs must be"):
        prepare(tiny, jobs=0, log=None)


def test_prepare_reraises_a_workers_data_error(cifs_home, tmp_path):
    """A missing data folder fails the whole prepare with the data error, not a pool traceback."""
    from cifs_edu.datasets import DataNotFoundError
    from cifs_edu.profiles import get_profile

    missing = get_profile("smoke").replace(dataset=f"folder:{tmp_path / 'no_such_folder'}")
    with pytest.raises((DataNotFoundError, ConfigError), match="no_such_folder"):
        prepare(missing, jobs=2, log=None)


def test_the_session_seed_reaches_every_config_built_from_a_profile(monkeypatch):
    """CIFS_SEED / setup(seed=...) retrains the whole book: recipes, ablations, table rows and reports."""
    import cifs_edu
    from cifs_edu.report import ReportConfig

    base = zoo.config("cifs_at", "smoke")
    assert base.seed == 0
    monkeypatch.setenv("CIFS_SEED", "3")
    cifs_edu.setup(quiet=True)
    assert cifs_edu.current().seed == 3
    assert zoo.config("cifs_at", "smoke").seed == 3 and zoo.config("cifs_at", "smoke").key() != base.key()
    assert zoo.ablation("top-1", "smoke").seed == 3
    assert table_configs("table1_cifar10_resnet18_last", "smoke")["cifs"].seed == 3
    assert ReportConfig.from_profile("smoke").seed == 3
    assert zoo.config("cifs_at", "smoke", seed=1).seed == 1  # an explicit seed wins
    assert {item.config.seed for item in zoo.book_plan("smoke")} == {3}
    assert {item.config.seed for item in zoo.book_plan("smoke", seed=4)} == {4}
    assert cifs_edu.setup(seed=2, quiet=True).seed == 2 and zoo.config("standard", "smoke").seed == 2


def test_a_bad_cifs_seed_is_a_config_error(monkeypatch):
    import cifs_edu

    for bad in ("x", "-1", "1.5"):
        monkeypatch.setenv("CIFS_SEED", bad)
        with pytest.raises(ConfigError, match="CIFS_SEED must be an integer >= 0"):
            cifs_edu.setup(quiet=True)
