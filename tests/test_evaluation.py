"""Tests of the robustness report (cifs_edu.report) and its attacks (APGD, Square, frozen masks).

A toy CNN is adversarially trained in the test (a few seconds): the plain network must raise
none of the gradient-masking flags, and the same network behind a non-differentiable
quantisation (zero gradient everywhere) must raise the flags for zero gradients, the eps
sweep, the black-box attack and the transfer attack.
"""
from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn

from cifs_edu.attacks import PGD, robust_accuracy
from cifs_edu.attacks.apgd import APGD, apgd_checkpoints, dlr_loss
from cifs_edu.attacks.external import Square, TorchattacksAPGD
from cifs_edu.attacks.frozen import FrozenMask, clean_selections, frozen_masks
from cifs_edu.report import CHECKS, FLAG_KINDS, ReportConfig, RobustnessReport, robustness_report
from cifs_edu.losses import adaptive_loss
from cifs_edu.models import build_model, mask_grad
from cifs_edu.profiles import ConfigError

EPS = 8 / 255
K = 4  # classes of the toy problem
S = 16  # image side


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: deterministic numbers, and fast on a shared, busy CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------------------- toy problem
def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c = grey + 0.1 x a fixed +-1 pattern of 4x4 blocks, plus noise (std 0.15).

    Classes differ by 0.2 on many pixels: robust at 8/255, but not at 32/255 and beyond.
    """
    g = torch.Generator().manual_seed(99)
    signs = torch.randint(0, 2, (K, 3, 4, 4), generator=g).float() * 2 - 1
    patterns = nn.functional.interpolate(signs, scale_factor=S // 4, mode="nearest")
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K
    return (0.5 + 0.1 * patterns[y] + 0.15 * torch.randn(n, 3, S, S, generator=g)).clamp(0, 1), y


def toy_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(8, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * (S // 4) ** 2, K),
    )


def pgd_train(seed: int, epochs: int = 8) -> nn.Module:
    """PGD-AT (3 steps of eps/2, random start) for a few seconds."""
    x_all, y_all = make_data(512, 100 + seed)
    model = toy_net(seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        perm = torch.randperm(512, generator=g)
        for i in range(0, 512, 64):
            idx = perm[i : i + 64]
            x_adv = PGD(model, EPS, steps=3, alpha=EPS / 2, random_start=True, seed=epoch)(x_all[idx], y_all[idx])
            model.train()
            loss = nn.functional.cross_entropy(model(x_adv), y_all[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


class Quantize(nn.Module):
    """x -> round(x q) / q: a staircase whose gradient is exactly zero almost everywhere."""

    def __init__(self, levels: int = 32) -> None:
        super().__init__()
        self.levels = levels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.round(x * self.levels) / self.levels


@pytest.fixture(scope="module")
def models():
    target, surrogate = pgd_train(0), pgd_train(1)
    return target, surrogate


@pytest.fixture(scope="module")
def test_data():
    return make_data(200, 7)


TOY_CONFIG = ReportConfig(
    n=200, eps=EPS, eps_multipliers=(1, 2, 4, 8), sweep_steps=10, steps=(10, 20, 40), restarts=3, restart_steps=10,
    apgd_steps=20, square_queries=200, transfer_steps=20,
    checks=("sanity", "eps_sweep", "saturation", "black_box", "transfer"),
)


@pytest.fixture(scope="module")
def plain_report(models, test_data):
    target, surrogate = models
    return robustness_report(target, test_data, TOY_CONFIG, surrogate=surrogate, progress=False, name="toy AT")


@pytest.fixture(scope="module")
def masked_report(models, test_data):
    target, surrogate = models
    masked = nn.Sequential(Quantize(), target).eval()
    return robustness_report(masked, test_data, TOY_CONFIG, surrogate=surrogate, progress=False, name="quantised")


# ---------------------------------------------------------------------------- the report's flags
def test_plain_at_model_raises_no_masking_flag(plain_report):
    r = plain_report
    assert r.clean_accuracy > 90
    assert r.masking_flags == [], r.summary()
    # the toy model is robust at 8/255 but not at 64/255
    assert r.worst_case_accuracy > 40
    assert r.record("PGD-10 eps=64/255").accuracy <= 1.0
    assert r.sanity["zero_gradient_examples"] == 0 and not r.sanity["outputs_probabilities"]


def test_masked_gradients_raise_the_right_flags(masked_report, plain_report):
    codes = {f.code for f in masked_report.flags}
    assert {"zero_gradients", "eps_not_zero", "black_box_stronger", "transfer_stronger"} <= codes, masked_report.summary()
    assert "adaptive_gap" not in codes  # no probes: the adaptive check does not run
    assert masked_report.sanity["zero_gradient_examples"] == masked_report.sanity["examples"] > 0
    # zero gradients: PGD without random start cannot move at all
    assert masked_report.record("PGD-40").accuracy == masked_report.clean_accuracy
    # every flag has a kind and a one-line explanation naming numbers
    for f in masked_report.flags:
        assert f.kind == FLAG_KINDS[f.code] == "masking"
        assert any(ch.isdigit() for ch in f.message) and "\n" not in f.message


def test_worst_case_is_per_example_and_consistent(plain_report, models):
    r = plain_report
    worst = r.worst_case_accuracy
    for rec in r.records:
        if rec.in_worst_case:
            assert worst <= rec.accuracy + 1e-9
    assert worst <= r.clean_accuracy
    best = r.record(r.best_attack)
    assert best.accuracy == min(rec.accuracy for rec in r.records if rec.in_worst_case)
    # the worst case is the AND over attacks, so it can be strictly below the best single attack
    ok = r.clean_correct.clone()
    for rec in r.records:
        if rec.in_worst_case:
            ok &= rec.correct
    assert torch.equal(ok, r.worst_correct)
    # x_worst: in the eps-ball and [0, 1]; misclassified exactly where an attack fooled the example
    assert (r.x_worst - r.x).abs().max() <= EPS + 1e-6 and r.x_worst.min() >= 0 and r.x_worst.max() <= 1
    with torch.no_grad():
        pred = models[0](r.x_worst).argmax(dim=1)
    fooled = r.clean_correct & ~r.worst_correct
    assert bool((pred[fooled] != r.y[fooled]).all())
    assert torch.equal(r.x_worst[r.worst_correct], r.x[r.worst_correct])
    per_example = r.best_attack_per_example
    assert sum(a is None for a in per_example) == int(r.worst_correct.sum())
    assert all((a == "clean") == (not c) for a, c in zip(per_example, r.clean_correct.tolist()) if a in (None, "clean"))
    assert sum(r.only_fooled_by().values()) <= int(fooled.sum())


def test_table_and_json_roundtrip(plain_report, tmp_path):
    r = plain_report
    table = r.table()
    assert list(table.index[[0, -1]]) == ["clean", "worst case"]
    assert len(table) == len(r.records) + 2
    assert table.loc["worst case", "accuracy"] == pytest.approx(r.worst_case_accuracy)
    text = r.to_json(tmp_path / "report.json")
    data = json.loads(text)
    assert data["worst_case_accuracy"] == pytest.approx(r.worst_case_accuracy)
    back = RobustnessReport.from_json(tmp_path / "report.json")
    assert back.worst_case_accuracy == pytest.approx(r.worst_case_accuracy)
    assert back.best_attack == r.best_attack
    assert [f.code for f in back.flags] == [f.code for f in r.flags]
    assert torch.equal(back.worst_correct, r.worst_correct)
    assert back.config == r.config
    assert back.table()["accuracy"].round(6).equals(table["accuracy"].round(6))


def test_transfer_is_skipped_without_a_distinct_surrogate(models, test_data):
    target, _ = models
    cfg = TOY_CONFIG.replace(n=16, checks=("transfer",))
    assert "transfer" in robustness_report(target, test_data, cfg, progress=False).skipped
    assert "transfer" in robustness_report(target, test_data, cfg, surrogate=target, progress=False).skipped


def test_vanilla_model_gets_only_the_papers_pgd_in_the_adaptive_check(models, test_data):
    target, _ = models
    cfg = TOY_CONFIG.replace(n=32, adaptive_steps=5, checks=("adaptive",))
    r = robustness_report(target, test_data, cfg, progress=False)
    assert "adaptive" in r.skipped
    assert [rec.label for rec in r.records] == ["PGD-5 (paper's attack)"]
    assert r.paper_attack is r.records[0]
    x, y = r.x[r.clean_correct], r.y[r.clean_correct]
    direct = robust_accuracy(target, (x, y), PGD(target, EPS, steps=5), progress=False)
    assert int(direct.correct.sum()) == int(r.paper_attack.correct.sum())


# ---------------------------------------------------------------------------- configuration
def test_report_config_validation_and_presets():
    with pytest.raises(ConfigError, match="steps"):
        ReportConfig(steps=(20, 10))
    with pytest.raises(ConfigError, match="unknown checks"):
        ReportConfig(checks=("eps_sweep", "magic"))
    with pytest.raises(ConfigError, match="exceeds 1"):
        ReportConfig(eps=0.2, eps_multipliers=(1, 8))
    with pytest.raises(ConfigError, match="beta"):
        ReportConfig(betas=(-1,))
    with pytest.raises(ConfigError, match="unknown ReportConfig"):
        ReportConfig.from_profile("smoke", stepz=3)
    paper = ReportConfig.from_profile("paper")
    assert paper.steps == (10, 20, 100, 500) and paper.restarts == 5 and paper.square_queries == 5000
    assert paper.betas == (0.0, 0.1, 1.0, 2.0, 10.0, 100.0, "inf", "inf-P1", "inf-P2")
    smoke = ReportConfig.from_profile("smoke")
    assert smoke.n < paper.n and smoke.square_queries < paper.square_queries and smoke.steps[-1] < paper.steps[-1]
    assert smoke.eps_grid[-1] == pytest.approx(8 * smoke.eps)
    assert set(smoke.checks) == set(CHECKS)
    assert ReportConfig.from_profile("smoke", n=10).n == 10


# ---------------------------------------------------------------------------- APGD
def test_apgd_checkpoints_follow_croce_hein():
    assert apgd_checkpoints(100) == [22, 41, 57, 70, 80, 87, 93, 99]
    for n in (1, 5, 10, 37):
        w = apgd_checkpoints(n)
        assert w == sorted(set(w)) and all(1 <= v <= n for v in w)


def test_dlr_loss_is_shift_and_scale_invariant():
    z = torch.randn(6, 5)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    assert torch.allclose(dlr_loss(z, y), dlr_loss(3 * z + 7, y), atol=1e-5)
    assert bool((dlr_loss(z, y) >= -1 - 1e-6).all())  # the margin of a correct example is at most z1 - z3
    correct = z.argmax(1) == y
    assert bool((dlr_loss(z, y)[correct] < 0).all()) and bool((dlr_loss(z, y)[~correct] >= 0).all())


@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_our_apgd_matches_torchattacks(models, test_data, loss):
    target, _ = models
    ours = robust_accuracy(target, test_data, APGD(target, EPS, steps=20, loss=loss), progress=False)
    ref = robust_accuracy(target, test_data, TorchattacksAPGD(target, EPS, steps=20, loss=loss), progress=False)
    assert abs(ours.accuracy - ref.accuracy) <= 3.0, (ours, ref)
    pgd = robust_accuracy(target, test_data, PGD(target, EPS, steps=20), progress=False)
    clean = robust_accuracy(target, test_data, progress=False)
    assert ours.accuracy < clean.accuracy - 10 and ours.accuracy <= pgd.accuracy + 3.0


def test_apgd_stays_in_the_ball_and_is_deterministic(models, test_data):
    target, _ = models
    x, y = test_data[0][:32], test_data[1][:32]
    a = APGD(target, EPS, steps=12, restarts=2, seed=3)
    x1, x2 = a(x, y), a(x, y)
    assert torch.equal(x1, x2)
    assert (x1 - x).abs().max() <= EPS + 1e-6 and x1.min() >= 0 and x1.max() <= 1
    with pytest.raises(ConfigError):
        APGD(target, EPS, loss="margin")
    with pytest.raises(ConfigError):
        APGD(target, EPS, rho=0)


def test_torchattacks_wrappers_restore_the_global_rng(models, test_data):
    target, _ = models
    x, y = test_data[0][:8], test_data[1][:8]
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    x_adv = Square(target, EPS, n_queries=20, seed=1)(x, y)
    TorchattacksAPGD(target, EPS, steps=3)(x, y)
    assert torch.equal(torch.rand(3), expected)
    assert (x_adv - x).abs().max() <= EPS + 1e-6


# ---------------------------------------------------------------------------- CIFS: full gradients and frozen masks
def _cifs(probes=None, seed: int = 0) -> nn.Module:
    """A tiny random CIFS ResNet-18 (width 4) whose predictions depend on the input.

    BatchNorm is calibrated on toy images, and the final layer is rescaled (the softmax mask
    sums to 1 over channels, which leaves an untrained network's logits almost constant).
    """
    torch.manual_seed(seed)
    kw = {} if probes is None else {"probe": probes}
    model = build_model("resnet18", defense="cifs", width=4, num_classes=K, **kw)
    x, _ = make_data(128, 200 + seed)
    model.train()
    for m in model.modules():  # cumulative BatchNorm statistics of the data
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None
    with torch.no_grad():
        model(x)
        model.linear.weight.mul_(300.0)
        model.linear.bias.zero_()
    return model.eval()


def _input_grad(model, x, y, mode):
    x = x.clone().requires_grad_(True)
    with mask_grad(model, mode):
        loss = adaptive_loss(model.forward_with_aux(x), y, 2.0, reduction="none").sum()
        (g,) = torch.autograd.grad(loss, x)
    return g


def test_full_mode_changes_the_gradient_only_through_an_mlp_probe():
    x = torch.rand(6, 3, S, S, generator=torch.Generator().manual_seed(1))
    y = torch.arange(6) % K
    mlp = _cifs()  # P2 has the MLP probe (the paper's set-up)
    assert not torch.allclose(_input_grad(mlp, x, y, "detached"), _input_grad(mlp, x, y, "full"), atol=1e-7)
    linear = _cifs(probes="linear")  # linear probes: the relevance does not depend on the features
    assert torch.equal(_input_grad(linear, x, y, "detached"), _input_grad(linear, x, y, "full"))
    assert mlp.mask_grad == "detached" and linear.mask_grad == "detached"


def test_frozen_masks_hold_the_mask_and_leave_the_model_unchanged():
    model = _cifs()
    x = torch.rand(5, 3, S, S, generator=torch.Generator().manual_seed(2))
    x2 = (x + 0.3 * torch.randn(x.shape, generator=torch.Generator().manual_seed(3))).clamp(0, 1)
    with torch.no_grad():
        before, before2 = model.forward_with_aux(x), model.forward_with_aux(x2)
    masks, classes = clean_selections(model, x)
    assert set(masks) == {"P1", "P2"} and masks["P2"].shape == (5, model.selectors["P2"].channels)
    with frozen_masks(model, masks, classes), torch.no_grad():
        same = model.forward_with_aux(x)
        moved = model.forward_with_aux(x2)
    assert torch.equal(same.logits, before.logits)  # frozen at the clean value: nothing changes on x
    for p in masks:
        assert torch.equal(moved.masks[p], masks[p]) and torch.equal(moved.classes[p], classes[p])
        assert torch.equal(moved.probe_logits["P2"], before2.probe_logits["P2"])  # probes still see x2
    assert not torch.allclose(moved.masks["P2"], before2.masks["P2"])
    assert not torch.allclose(moved.logits, before2.logits)
    for layer in model.selectors.values():
        assert len(layer._forward_hooks) == 0
    with pytest.raises(RuntimeError, match="boom"), frozen_masks(model, masks):
        raise RuntimeError("boom")
    with torch.no_grad():
        after, after2 = model.forward_with_aux(x), model.forward_with_aux(x2)
    assert torch.equal(after.logits, before.logits) and torch.equal(after2.logits, before2.logits)
    assert all(len(layer._forward_hooks) == 0 for layer in model.selectors.values())
    with pytest.raises(RuntimeError, match="examples"), frozen_masks(model, masks), torch.no_grad():
        model(x[:2])  # a batch of another size cannot use these masks
    with pytest.raises(ConfigError):
        FrozenMask(PGD(model, EPS, random_start=True, restarts=2))
    # at the clean input the frozen network is the real one: same loss gradient as the detached mask
    y = torch.arange(5) % K
    atk = PGD(model, EPS, loss="adaptive", beta_atk=2)
    # (the clean masks come from the model, the attack runs on its BN-folded copy: float32 rounding only)
    assert torch.allclose(FrozenMask(atk).input_gradient(x, y), atk.input_gradient(x, y), rtol=1e-4, atol=1e-5)


def test_adaptive_check_on_a_cifs_model():
    model = _cifs()
    x, _ = make_data(24, 5)
    with torch.no_grad():
        y = model(x).argmax(dim=1)  # every example is "clean-correct", so every one is attacked
    assert len(set(y.tolist())) > 1
    cfg = ReportConfig(n=24, eps=EPS, steps=(2, 4), restarts=1, apgd_steps=4, adaptive_steps=3, betas=(0, "inf", "inf-P1"),
                       checks=("adaptive",))
    r = robustness_report(model, (x, y), cfg, progress=False)
    labels = [rec.label for rec in r.records]
    assert labels == [f"{o}-{s} adaptive, {m}" for o, s in (("PGD", 3), ("APGD", 4))
                      for m in ("detached mask (paper)", "full gradient", "frozen clean mask")]
    bt = r.beta_table()
    assert list(bt.columns) == ["0", "inf", "inf-P1", "worst case"]
    for rec in r.records:
        per = rec.detail["accuracy_per_beta"]
        assert rec.accuracy <= min(per.values()) + 1e-9
        assert set(rec.pair_change) == {"P1", "P2"} and all(0 <= v <= 100 for v in rec.pair_change.values())
    assert r.worst_case_accuracy <= min(rec.accuracy for rec in r.records)
    assert r.paper_attack is r.records[0]
    assert r.worst_case_accuracy < 100  # a random network is not robust
    assert model.mask_grad == "detached"
    assert all(len(layer._forward_hooks) == 0 for layer in model.selectors.values())
    with torch.no_grad():
        pred = model(r.x_worst).argmax(dim=1)
    fooled = r.clean_correct & ~r.worst_correct
    assert bool((pred[fooled] != r.y[fooled]).all())


def test_a_drop_flags_only_when_significant_on_the_disagreeing_examples():
    """2 lucky examples of 64 (3.1 points, above tol) are noise; 8 against 0 are not."""
    import torch

    from cifs_edu.report import AttackRecord, ReportConfig, _flag_drop, sign_test_p

    assert sign_test_p(2, 0) == 0.25 and sign_test_p(0, 0) == 1.0 and sign_test_p(5, 0) == 1 / 32
    assert abs(sign_test_p(6, 2) - 37 / 256) < 1e-12
    config = ReportConfig.from_profile("smoke")
    n = 64
    weak = torch.zeros(n, dtype=torch.bool)
    weak[:40] = True
    rec = lambda label, correct: AttackRecord("saturation", label, 8 / 255, "ce", correct, 0.0, label)  # noqa: E731
    two = weak.clone()
    two[:2] = False  # the strong attack breaks 2 more examples: 3.1 points
    assert _flag_drop("saturation", "restarts_not_saturated", rec("one", weak), rec("restarts", two), config.tol, n,
                      config, "rugged") == []
    eight = weak.clone()
    eight[:8] = False
    flags = _flag_drop("saturation", "restarts_not_saturated", rec("one", weak), rec("restarts", eight), config.tol, n,
                       config, "rugged")
    assert [f.code for f in flags] == ["restarts_not_saturated"] and "8 examples against 0" in flags[0].message
