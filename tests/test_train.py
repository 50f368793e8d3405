"""Training: exact resume, the methods' adversarial examples, configs, caching, smoke-level robustness."""
from __future__ import annotations

import json
import random

import numpy as np
import pytest
import torch

from cifs_edu.profiles import ConfigError
from cifs_edu.training import TrainConfig, evaluate_run, load_model, load_or_train, read_history, train
from cifs_edu.training import loop as loop_module
from cifs_edu.engine import runs as runs_module
from cifs_edu.training.data import EpochPlan, augment_batch, derive_seed
from cifs_edu.training.methods import TrainForward, batch_loss, fat_examples, pgd_examples, trades_examples


def tiny(**kw) -> TrainConfig:
    """A run of a few seconds: 64 synthetic images, width-4 ResNet-18, 1-step PGD."""
    values = dict(n_train=64, n_val=32, n_test=32, eval_n=32, width=4, epochs=1, batch_size=32, milestones=(),
                  train_steps=1, val_steps=2, eval_every=1, eval_attacks=("natural", "pgd20"), eval_batch_size=32)
    values.update(kw)
    return TrainConfig.from_profile("smoke", **values)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


# ---------------------------------------------------------------------- exact resume
def test_two_epochs_equal_one_plus_resume(cifs_home, tmp_path):
    cfg = tiny(defense="cifs", method="pgd_at", epochs=2, milestones=(1,), train_steps=2)
    full = train(cfg, run_dir=tmp_path / "full", progress=False)
    assert full.trained_epochs == 2 and full.finished

    part = train(cfg, run_dir=tmp_path / "split", progress=False, max_epochs=1)
    assert part.metrics is None and len(part.history) == 1
    assert not (tmp_path / "split" / "results.json").exists()
    # disturb every global RNG: the resumed epoch must not depend on the process state
    torch.manual_seed(12345), random.seed(1), np.random.seed(2)
    torch.rand(10)
    rest = train(cfg, run_dir=tmp_path / "split", progress=False)
    assert rest.trained_epochs == 1 and len(rest.history) == 2

    assert _same_weights(full.model, rest.model)  # bit-identical
    init = cfg.build_model(3, 10)
    assert not _same_weights(init, full.model)  # training did change the weights
    for h1, h2 in zip(full.history, rest.history):
        assert {k: v for k, v in h1.items() if k != "time_s"} == {k: v for k, v in h2.items() if k != "time_s"}
    assert [h["lr"] for h in full.history] == [0.1, pytest.approx(0.01)]
    assert full.metrics["last"] == rest.metrics["last"]


def test_different_seed_gives_different_weights(cifs_home, tmp_path):
    a = train(tiny(), run_dir=tmp_path / "a", progress=False)
    b = train(tiny(seed=1), run_dir=tmp_path / "b", progress=False)
    assert not _same_weights(a.model, b.model)


# ---------------------------------------------------------------------- data plan
def test_epoch_plan_depends_only_on_seed_and_epoch():
    p1, p2, p3 = EpochPlan.make(50, 0, 3), EpochPlan.make(50, 0, 3), EpochPlan.make(50, 0, 4)
    assert torch.equal(p1.order, p2.order) and torch.equal(p1.offsets, p2.offsets) and torch.equal(p1.flips, p2.flips)
    assert not torch.equal(p1.order, p3.order)
    assert sorted(p1.order.tolist()) == list(range(50))
    assert derive_seed(0, "a") != derive_seed(1, "a")
    assert [b.numel() for b in p1.batches(16, min_last=2)] == [16, 16, 16, 2]
    assert [b.numel() for b in EpochPlan.make(33, 0, 0).batches(16, min_last=2)] == [16, 16]


def test_augment_batch_crops_and_flips():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.float32).view(2, 1, 4, 4)
    offsets = torch.tensor([[4, 4], [0, 8]])  # centre crop; shifted to the bottom-left corner
    out = augment_batch(x, offsets, torch.tensor([False, True]), "crop_flip", pad=4)
    assert torch.equal(out[0], x[0])
    assert out[1, 0, :, :].abs().sum() == 0  # fully in the zero padding
    out = augment_batch(x, torch.tensor([[4, 4], [4, 5]]), torch.tensor([True, False]), "crop_flip", pad=4)
    assert torch.equal(out[0], x[0].flip(2))
    assert torch.equal(out[1, 0, :, :3], x[1, 0, :, 1:]) and out[1, 0, :, 3].abs().sum() == 0
    assert torch.equal(augment_batch(x, offsets, torch.tensor([True, True]), "none"), x)


# ---------------------------------------------------------------------- methods
def _setup(defense="none", **kw):
    torch.manual_seed(0)
    cfg = tiny(defense=defense, train_steps=5, **kw)
    model = cfg.build_model(3, 10).eval()
    x = torch.rand(16, 3, 32, 32)
    y = torch.randint(0, 10, (16,))
    g = torch.Generator().manual_seed(0)
    noise = {"uniform": torch.rand(16, 3, 32, 32, generator=g) * 2 - 1, "normal": torch.randn(16, 3, 32, 32, generator=g)}
    return cfg, model, x, y, (lambda kind: noise[kind])


@pytest.mark.parametrize("defense", ["none", "cifs"])
def test_training_attacks_stay_in_the_ball_and_raise_the_loss(defense):
    cfg, model, x, y, draw = _setup(defense)
    from cifs_edu.training.methods import attack_loss

    with torch.no_grad():
        clean, _ = attack_loss(model, x, y, cfg)
    for make in (lambda: pgd_examples(model, x, y, cfg, draw), lambda: trades_examples(model, x, y, cfg, draw),
                 lambda: fat_examples(model, x, y, cfg, draw, tau=10)):
        xa = make()
        assert xa.shape == x.shape and not xa.requires_grad
        assert (xa - x).abs().max() <= cfg.eps + 1e-6 and xa.min() >= 0 and xa.max() <= 1
        assert (xa - x).abs().max() > cfg.eps / 2
    with torch.no_grad():
        adv, _ = attack_loss(model, pgd_examples(model, x, y, cfg, draw), y, cfg)
    assert adv.mean() > clean.mean()
    assert model.training is False  # the attacks restore the mode


@pytest.mark.parametrize("defense", ["none", "cifs"])
def test_training_attack_is_the_evaluation_pgd(defense):
    """One PGD step for training and evaluation: pgd_examples equals attacks.PGD bit for bit
    (same loss, start, step and projection), so the two can never drift apart."""
    from dataclasses import replace

    from cifs_edu.attacks import PGD

    cfg, model, x, y, draw = _setup(defense)
    cfg = replace(cfg, random_start=False)
    ours = pgd_examples(model, x, y, cfg, draw)
    loss = dict(loss="adaptive", beta_atk=cfg.beta) if defense == "cifs" else dict(loss="ce")
    theirs = PGD(model, cfg.eps, alpha=cfg.train_step_size, steps=cfg.train_steps, fold_bn=False,
                 channels_last=False, **loss)(x, y)
    assert torch.equal(ours, theirs)
    assert not torch.equal(ours, PGD(model, cfg.eps, alpha=cfg.train_step_size, steps=cfg.train_steps - 1,
                                     fold_bn=False, channels_last=False, **loss)(x, y))


@pytest.mark.parametrize("defense", ["none", "cifs"])
def test_fast_training_attack_matches_the_model_up_to_rounding(defense):
    """fast=True (BN-folded frozen copy): the same examples except for sign ties; the model is untouched."""
    cfg, model, x, y, draw = _setup(defense)
    model.train()
    for bn in (m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)):
        bn.running_mean.uniform_(-0.2, 0.2)  # non-trivial statistics, so that folding does something
        bn.running_var.uniform_(0.5, 2.0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    from dataclasses import replace

    from cifs_edu.training.methods import attack_loss

    one = replace(cfg, train_steps=1)
    # one step: the same signs, except (TRADES) where the KL gradient at x + 0.001 noise is ~0 and its sign a tie
    for make, ties in ((lambda c, f: pgd_examples(model, x, y, c, draw, fast=f), 0.001),
                       (lambda c, f: fat_examples(model, x, y, c, draw, tau=1, fast=f), 0.001),
                       (lambda c, f: trades_examples(model, x, y, c, draw, fast=f), 0.05)):
        slow, fast = make(one, False), make(one, True)
        assert (fast != slow).float().mean() <= ties
        # five steps: a flipped sign changes the later steps, but the attack is as strong
        slow, fast = make(cfg, False), make(cfg, True)
        assert (fast - x).abs().max() <= cfg.eps + 1e-6 and fast.min() >= 0 and fast.max() <= 1
        with torch.no_grad():
            model.eval()
            l_slow, l_fast = attack_loss(model, slow, y, cfg)[0].mean(), attack_loss(model, fast, y, cfg)[0].mean()
            model.train()
        assert abs(l_fast - l_slow) <= 0.01 * l_slow
    assert model.training is True  # the mode is restored
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None and p.requires_grad for p in model.parameters())


def test_fast_attack_field():
    assert tiny().fast_attack == "auto" and tiny(fast_attack="on").key() != tiny(fast_attack="off").key()
    with pytest.raises(ConfigError, match="fast_attack"):
        tiny(fast_attack="yes")
    assert loop_module._fast_attack(tiny(), torch.device("cpu")) is True
    assert loop_module._fast_attack(tiny(), torch.device("cuda")) is False
    assert loop_module._fast_attack(tiny(fast_attack="on"), torch.device("cuda")) is True
    assert loop_module._fast_attack(tiny(fast_attack="off"), torch.device("cpu")) is False


def test_fat_early_stopping():
    cfg, model, x, y, draw = _setup("none")
    # tau >= K: never stops early, identical to PGD from the same start
    assert torch.equal(fat_examples(model, x, y, cfg, draw, tau=cfg.train_steps), pgd_examples(model, x, y, cfg, draw))
    # tau = 0: an example misclassified at the random start does not move at all
    lo, hi = x.neg().clamp(min=-cfg.eps), (1 - x).clamp(max=cfg.eps)
    start = x + (draw("uniform") * cfg.eps).clamp(lo, hi)
    with torch.no_grad():
        wrong0 = model(start).argmax(1) != y
    assert wrong0.any()
    xf = fat_examples(model, x, y, cfg, draw, tau=0)
    assert torch.allclose(xf[wrong0], start[wrong0])
    # every example FAT stopped early is misclassified (where it stopped)
    with torch.no_grad():
        assert (model(xf).argmax(1) != y)[wrong0].all()


def test_dynamic_tau_and_lr_schedule():
    cfg = tiny(method="fat", epochs=120, milestones=(75, 90))
    assert [cfg.tau_at(e) for e in (0, 49, 50, 89, 90, 119)] == [0, 0, 1, 1, 2, 2]
    assert tiny(method="fat", fat_tau=3).tau_at(0) == 3
    assert cfg.lr_at(74) == 0.1 and cfg.lr_at(75) == pytest.approx(0.01) and cfg.lr_at(90) == pytest.approx(0.001)


def test_trades_loss_for_a_vanilla_model_is_ce_plus_six_kl():
    import torch.nn.functional as F

    cfg, model, x, y, draw = _setup("none", method="trades")
    xa = trades_examples(model, x, y, cfg, draw)
    model.train()
    per, logits = batch_loss(TrainForward(model), x, xa, y, cfg)
    # recompute by hand (train mode BN: the same two forward passes)
    ln, la = model(x), model(xa)
    kl = F.kl_div(F.log_softmax(la, 1), F.softmax(ln, 1), reduction="none").sum(1)
    manual = F.cross_entropy(ln, y, reduction="none") + 6.0 * kl
    assert torch.allclose(per, manual, atol=1e-5)
    assert torch.allclose(logits, la, atol=1e-6)


def test_standard_loss_is_eq3_for_cifs():
    from cifs_edu.losses import adaptive_loss

    cfg, model, x, y, _ = _setup("cifs", method="standard")
    model.train()
    per, _ = batch_loss(TrainForward(model), x, None, y, cfg)
    ref = adaptive_loss(model.forward_with_aux(x, y), y, 2.0, reduction="none")
    assert torch.allclose(per, ref, atol=1e-6)


# ---------------------------------------------------------------------- warm start
def test_warm_start_epoch_is_a_standard_epoch_then_the_method(cifs_home, tmp_path):
    """The first warm_start_epochs train exactly as method="standard" would (bit-identical
    weights after them), then the method's attack takes over; the history says which was which."""
    warm = tiny(defense="cifs", method="pgd_at", epochs=2, milestones=(), warm_start_epochs=1)
    std = tiny(defense="cifs", method="standard", epochs=2, milestones=())
    w1 = train(warm, run_dir=tmp_path / "warm", progress=False, max_epochs=1)
    s1 = train(std, run_dir=tmp_path / "std", progress=False, max_epochs=1)
    assert _same_weights(w1.model, s1.model)
    assert w1.history[0]["natural"] is True
    w2 = train(warm, run_dir=tmp_path / "warm", progress=False)
    s2 = train(std, run_dir=tmp_path / "std", progress=False)
    assert [h["natural"] for h in w2.history] == [True, False]
    assert not _same_weights(w2.model, s2.model)  # epoch 2 trained on adversarial examples
    assert warm.key() != tiny(defense="cifs", method="pgd_at", epochs=2, milestones=()).key()


@pytest.mark.parametrize("warm, message", [(2, "fewer than epochs"), (-1, ">= 0"), (1.5, "integer")])
def test_warm_start_validation(warm, message):
    with pytest.raises(ConfigError, match=message):
        tiny(epochs=2, warm_start_epochs=warm)


def test_chance_warning_names_the_options(cifs_home, tmp_path):
    """A CIFS run whose training accuracy is at chance after two epochs warns (the paper's mask
    on a tiny budget); the message names the ways out."""
    cfg = tiny(defense="cifs", method="pgd_at", epochs=2, milestones=(), model_options={"scale": 1}, lr=1e-6)
    with pytest.warns(RuntimeWarning, match="still at chance.*warm_start_epochs"):
        train(cfg, run_dir=tmp_path / "chance", progress=False)


def test_chance_warning_after_a_warm_start_says_it_was_there():
    """After the warm start's phase the warning counts from the method's first epochs and names the
    warm start the run already had, instead of suggesting one."""
    cfg = tiny(defense="cifs", method="pgd_at", epochs=5, milestones=(), warm_start_epochs=2)
    history = [{"train_acc": 10.5}] * 4
    with pytest.warns(RuntimeWarning, match="after 4 epochs is still at chance.*now 2"):
        loop_module._warn_if_chance(cfg, history, {"num_classes": 10})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loop_module._warn_if_chance(cfg, history[:3], {"num_classes": 10})  # not a checkpoint epoch: silent
        loop_module._warn_if_chance(cfg, [{"train_acc": 40.0}] * 4, {"num_classes": 10})  # learning: silent


# ---------------------------------------------------------------------- configs
@pytest.mark.parametrize(
    "change, message",
    [
        ({"method": "madry"}, "method must be one of"),
        ({"defense": "dropout"}, "defense must be one of"),
        ({"arch": "vgg16"}, "arch must be one of"),
        ({"eps": -0.1}, "eps must be"),
        ({"model_options": {"k": 10}}, "k"),
        ({"model_options": {"imgf": "tanh"}, "defense": "cifs"}, "imgf"),
        ({"milestones": (3, 2)}, "milestones"),
        ({"beta": -1}, "beta"),
        ({"eval_attacks": ("pgd0",)}, "pgd0"),
        ({"fat_tau": -1}, "fat_tau"),
        ({"amp": "int8"}, "amp"),
        ({"method": "pgd_at", "train_steps": 0}, "train_steps"),
    ],
)
def test_bad_configs_raise_config_error(change, message):
    with pytest.raises(ConfigError, match=message):
        tiny(**change)


def test_config_error_lists_every_problem_and_unknown_fields():
    with pytest.raises(ConfigError) as err:
        tiny(eps=-1, method="x", model_options={"k": 10}, defense="cifs")
    text = str(err.value)
    assert "eps" in text and "method" in text and "k" in text
    with pytest.raises(ConfigError, match="unknown TrainConfig field"):
        TrainConfig.from_profile("smoke", learning_rate=0.1)
    with pytest.raises(ConfigError, match="unknown profile"):
        TrainConfig.from_profile("huge")


def test_config_key_and_eval_fields():
    a = tiny()
    assert a.key() == tiny().key() and len(a.key()) == 12
    assert a.key() != tiny(lr=0.05).key()
    assert a.key() == tiny(eval_attacks=("fgsm",), eval_n=8).key()  # evaluation choices do not retrain
    assert TrainConfig.from_dict(json.loads(json.dumps(a.to_dict()))) == a
    assert a.run_name.startswith("smoke-resnet18-none-pgd_at-")
    assert tiny(defense="cifs", beta=2).beta == 2.0 and tiny(defense="cifs", beta="inf-2").beta == "inf-P1"
    assert tiny().resolved_augment() == "none" and tiny(dataset="svhn").resolved_augment() == "none"
    assert tiny(dataset="cifar10").resolved_augment() == "crop_flip"


def test_missing_data_fails_before_training(cifs_home, tmp_path):
    from cifs_edu.datasets import DataNotFoundError

    cfg = tiny(dataset=f"folder:{tmp_path / 'nothing-here'}")
    with pytest.raises(DataNotFoundError):
        train(cfg, run_dir=tmp_path / "run", progress=False)
    assert not (tmp_path / "run" / "last.pt").exists()


# ---------------------------------------------------------------------- history, best, cache
def test_history_best_and_results(cifs_home, tmp_path):
    cfg = tiny(epochs=3, eval_every=2)
    r = train(cfg, run_dir=tmp_path / "r", progress=False)
    hist = read_history(tmp_path / "r")
    assert [h["epoch"] for h in hist] == [1, 2, 3] and hist == r.history
    assert hist[0]["val_pgd"] is None and hist[1]["val_pgd"] is not None and hist[2]["val_pgd"] is not None
    for h in hist:
        assert h["train_loss"] > 0 and 0 <= h["train_acc"] <= 100 and h["time_s"] > 0
    validated = [h for h in hist if h["val_pgd"] is not None]
    best = max(validated, key=lambda h: h["val_pgd"])
    assert r.metrics["best_epoch"] == best["epoch"]
    assert load_model(tmp_path / "r", "best").checkpoint_epoch == best["epoch"]
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert set(res["last"]) == {"natural", "pgd20"} and res["key"] == cfg.key()
    assert 0 <= res["last"]["pgd20"] <= res["last"]["natural"] <= 100
    frame = r.curves()
    assert list(frame.index) == [1, 2, 3] and "train_loss" in frame


def test_load_or_train_returns_the_cached_run(cifs_home, tmp_path, monkeypatch):
    cfg = tiny(defense="cifs")
    first = load_or_train(cfg, progress=False)
    assert first.trained_epochs == 1 and first.run_dir.parent == cifs_home / "runs"
    hist_file = first.run_dir / "history.jsonl"
    stamp = hist_file.stat().st_mtime_ns

    def no_training(*a, **k):
        raise AssertionError("load_or_train trained again")

    monkeypatch.setattr(loop_module, "train", no_training)
    again = load_or_train(cfg, progress=False)
    assert again.trained_epochs == 0 and hist_file.stat().st_mtime_ns == stamp
    assert _same_weights(first.model, again.model) and again.metrics["last"] == first.metrics["last"]
    # another evaluation suite re-evaluates the saved model, still without training
    more = load_or_train(cfg.replace(eval_attacks=("natural", "fgsm")), progress=False)
    assert more.trained_epochs == 0 and set(more.metrics["last"]) == {"natural", "fgsm"}
    assert more.metrics["last"]["natural"] == first.metrics["last"]["natural"]
    assert hist_file.stat().st_mtime_ns == stamp


def test_evaluate_run_reads_the_final_evaluation_it_would_repeat(cifs_home, tmp_path, monkeypatch):
    cfg = tiny(defense="cifs", epochs=2, eval_attacks=("natural", "fgsm", "pgd20"))
    run = train(cfg, run_dir=tmp_path / "r", progress=False)
    for which in ("last", "best"):
        fresh = evaluate_run(tmp_path / "r", ["fgsm", "pgd20"], which=which, cache=False, progress=False)
        assert fresh["accuracy"] == {a: run.metrics[which][a] for a in ("fgsm", "pgd20")}  # the claim it relies on

    def no_eval(*a, **k):
        raise AssertionError("evaluated again")

    monkeypatch.setattr(runs_module, "evaluate_model", no_eval)
    same = evaluate_run(tmp_path / "r", ["pgd20"], progress=False)
    assert same["accuracy"] == {"pgd20": run.metrics["last"]["pgd20"]} and same["n"] == {"pgd20": 32}
    assert json.loads((tmp_path / "r" / "eval" / same["path"].split("/")[-1]).read_text())["accuracy"] == same["accuracy"]
    for other in (dict(n=16), dict(beta=0.5), dict(attacks=["cw"])):  # not the final evaluation: computed
        kw = {"attacks": ["pgd20"], **other}
        with pytest.raises(AssertionError, match="evaluated again"):
            evaluate_run(tmp_path / "r", kw.pop("attacks"), progress=False, **kw)


def test_equal_models_share_one_cache_key():
    """Options equal to build_model's defaults do not change the config's key (one run folder per model)."""
    base = TrainConfig.from_profile("smoke", defense="cifs")
    for opts in ({"imgf": "softmax"}, {"k": 2}, {"positions": ["P2", "P1"]}, {"label_rule": "paper", "T": 1.0}):
        assert TrainConfig.from_profile("smoke", defense="cifs", model_options=opts).key() == base.key(), opts
    assert TrainConfig.from_profile("smoke", defense="cifs", model_options={"k": 3}).key() != base.key()
    assert TrainConfig.from_profile("smoke", defense="cifs", model_options={"positions": ["P1"]}).key() != base.key()
