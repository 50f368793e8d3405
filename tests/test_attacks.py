"""Tests of cifs_edu.attacks on a tiny CNN trained in the test (real models live on another branch)."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn
from torch.utils.data import DataLoader, TensorDataset

from cifs_edu.attacks import (
    BETA_SWEEP,
    CW,
    FGSM,
    PGD,
    AutoAttack,
    EvalResult,
    balanced_indices,
    balanced_subset,
    cw_margin_loss,
    per_class_accuracy,
    robust_accuracy,
    sweep,
    topk_accuracy,
)
from cifs_edu.losses import adaptive_loss
from cifs_edu.outputs import ModelOutput
from cifs_edu.profiles import ConfigError

EPS = 12 / 255  # on this toy problem 12/255 separates clean, FGSM and PGD clearly
K = 4  # classes


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: deterministic numbers, and fast on a shared, busy CPU."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


# ---------------------------------------------------------------------------- fixtures
def make_data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Class c = a fixed random 3x8x8 pattern plus noise, clipped to [0, 1] (so some pixels sit at 0 and 1)."""
    g = torch.Generator().manual_seed(1234)
    patterns = torch.rand(K, 3, 8, 8, generator=g)
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % K
    x = (patterns[y] + 0.35 * torch.randn(n, 3, 8, 8, generator=g)).clamp(0, 1)
    return x, y


class SmallCNN(nn.Module):
    """conv-bn-relu x2 with two probe heads: forward_with_aux mimics a CIFS model's outputs."""

    def __init__(self, probes: tuple[str, ...] = ("P2", "P1")) -> None:
        super().__init__()
        self.block1 = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2))
        self.block2 = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.fc = nn.Linear(16, K)
        self.probe_heads = nn.ModuleDict(
            {p: nn.Linear(8 if p == "P2" else 16, K) for p in probes}
        )
        self.positions = probes
        self.defense = "cifs" if probes else "none"
        self.num_classes = K

    def forward_with_aux(self, x: torch.Tensor, y: torch.Tensor | None = None) -> ModelOutput:
        z2 = self.block1(x)
        z1 = self.block2(z2)
        feats = {"P2": z2, "P1": z1}
        pen = z1.mean(dim=(2, 3))
        probes = {p: self.probe_heads[p](feats[p].mean(dim=(2, 3))) for p in self.positions}
        return ModelOutput(logits=self.fc(pen), probe_logits=probes, penultimate=pen)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_with_aux(x).logits


class Vanilla(nn.Module):
    """The same trunk without probes and without forward_with_aux (a plain classifier)."""

    def __init__(self, net: SmallCNN) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def train(model: SmallCNN, x: torch.Tensor, y: torch.Tensor, epochs: int = 8) -> SmallCNN:
    torch.manual_seed(0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0])
        for i in range(0, x.shape[0], 64):
            idx = perm[i : i + 64]
            loss = adaptive_loss(model.forward_with_aux(x[idx]), y[idx], beta=2.0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.zero_grad(set_to_none=True)
    return model.eval()


@pytest.fixture(scope="module")
def data():
    return make_data(400, seed=1)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    x, y = make_data(512, seed=0)
    return train(SmallCNN(), x, y)


@pytest.fixture(scope="module")
def batch(data):
    x, y = data
    return x[:64], y[:64]


def check_invariants(x: torch.Tensor, x_adv: torch.Tensor, eps: float = EPS) -> None:
    assert x_adv.shape == x.shape and x_adv.dtype == x.dtype and x_adv.device == x.device
    assert not x_adv.requires_grad
    assert x_adv.min().item() >= 0.0 and x_adv.max().item() <= 1.0
    assert (x_adv - x).abs().max().item() <= eps + 1e-6


ATTACKS = {
    "fgsm": lambda m: FGSM(m, EPS),
    "fgsm-adaptive": lambda m: FGSM(m, EPS, loss="adaptive", beta_atk=2),
    "pgd": lambda m: PGD(m, EPS, steps=10),
    "pgd-big-step": lambda m: PGD(m, EPS, alpha=4 * EPS, steps=3),
    "pgd-random-start": lambda m: PGD(m, EPS, alpha=2 / 255, steps=5, random_start=True, seed=0),
    "pgd-restarts": lambda m: PGD(m, EPS, alpha=2 / 255, steps=5, random_start=True, restarts=3, seed=0),
    "pgd-adaptive-0": lambda m: PGD(m, EPS, steps=5, loss="adaptive", beta_atk=0),
    "pgd-adaptive-inf": lambda m: PGD(m, EPS, steps=5, loss="adaptive", beta_atk="inf"),
    "pgd-adaptive-inf-P1": lambda m: PGD(m, EPS, steps=5, loss="adaptive", beta_atk="inf-P1"),
    "pgd-adaptive-inf-2": lambda m: PGD(m, EPS, steps=5, loss="adaptive", beta_atk="inf-2"),
    "pgd-adaptive-authors": lambda m: PGD(m, EPS, steps=5, loss="adaptive", beta_atk=2, scale="authors"),
    "cw": lambda m: CW(m, EPS, steps=5),
    "cw-adaptive": lambda m: CW(m, EPS, steps=5, loss="adaptive", beta_atk=10),
    "cw-restarts": lambda m: CW(m, EPS, steps=3, random_start=True, restarts=2, seed=1),
}


# ---------------------------------------------------------------------------- invariants
@pytest.mark.parametrize("name", list(ATTACKS))
def test_every_attack_stays_in_ball_and_box_and_leaves_model_alone(name, model, batch):
    x, y = batch
    x = x.clone()
    x[:, 0, 0, 0] = 0.0
    x[:, 0, 0, 1] = 1.0  # pixels on the box edges
    atk = ATTACKS[name](model)
    # a mixed training state that must come back exactly
    model.train()
    model.block2[1].eval()
    sentinel = {n: torch.full_like(p, 0.5) for n, p in model.named_parameters() if n.startswith("fc")}
    for n, p in model.named_parameters():
        p.grad = sentinel[n].clone() if n in sentinel else None
    x_adv = atk(x, y)
    check_invariants(x, x_adv)
    assert (x_adv != x).any(), "the attack did not move any pixel"
    assert model.training and model.block1[1].training and not model.block2[1].training
    for n, p in model.named_parameters():
        if n in sentinel:
            assert torch.equal(p.grad, sentinel[n])
        else:
            assert p.grad is None
    model.zero_grad(set_to_none=True)
    model.eval()


def test_attack_returns_input_dtype_and_eps_zero_is_identity(model, batch):
    x, y = batch
    x64 = x.double()
    model.double()
    try:
        x_adv = PGD(model, EPS, steps=2)(x64, y)
    finally:
        model.float()
    check_invariants(x64, x_adv)
    assert torch.equal(PGD(model, 0.0, steps=2)(x, y), x)


def test_attack_runs_in_eval_mode(model, batch):
    """BatchNorm must use running statistics during the attack: same result whatever the mode before."""
    x, y = batch
    atk = PGD(model, EPS, steps=3)
    model.eval()
    a = atk(x, y)
    model.train()
    b = atk(x, y)
    model.eval()
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------- strength ordering
@pytest.fixture(scope="module")
def accuracies(model, data):
    x, y = data
    kw = dict(progress=False, batch_size=300)
    return {
        "clean": robust_accuracy(model, (x, y), **kw),
        "fgsm": robust_accuracy(model, (x, y), FGSM(model, EPS), **kw),
        "pgd10": robust_accuracy(model, (x, y), PGD(model, EPS, steps=10), **kw),
        "pgd20": robust_accuracy(model, (x, y), PGD(model, EPS, steps=20), **kw),
        "pgd50": robust_accuracy(model, (x, y), PGD(model, EPS, steps=50), **kw),
    }


def test_pgd_is_stronger_than_fgsm_is_stronger_than_nothing(accuracies):
    acc = {k: v.accuracy for k, v in accuracies.items()}
    assert acc["clean"] >= 90.0, acc  # the model did learn
    assert acc["pgd20"] <= acc["fgsm"] <= acc["clean"], acc
    assert acc["pgd20"] < acc["clean"] - 30, acc  # the attack does something


def test_more_steps_never_help_the_defender(accuracies):
    acc = {k: v.accuracy for k, v in accuracies.items()}
    assert acc["pgd50"] <= acc["pgd10"] + 1.0, acc
    assert acc["pgd20"] <= acc["pgd10"] + 1.0, acc


def test_pgd_matches_torchattacks(model, data):
    torchattacks = pytest.importorskip("torchattacks")
    x, y = data
    ours = PGD(model, EPS, alpha=2 / 255, steps=10)
    theirs = torchattacks.PGD(model, eps=EPS, alpha=2 / 255, steps=10, random_start=False)
    a = robust_accuracy(model, (x, y), ours, progress=False).accuracy
    b = robust_accuracy(model, (x, y), theirs, progress=False).accuracy
    assert abs(a - b) <= 0.5, (a, b)
    same = (ours(x, y) - theirs(x, y)).abs() <= 1e-6
    assert same.float().mean().item() >= 0.99


# ---------------------------------------------------------------------------- losses
def test_cw_margin_formula():
    z = torch.tensor([[3.0, 1.0, -2.0], [0.0, 5.0, 4.0], [1.0, 1.0, 100.0]])
    y = torch.tensor([0, 2, 2])
    # -clamp(z_y - max_{j != y} z_j + kappa, min=0)
    assert torch.allclose(cw_margin_loss(z, y, 0.0), torch.tensor([-2.0, 0.0, -99.0]))
    assert torch.allclose(cw_margin_loss(z, y, 50.0), torch.tensor([-52.0, -49.0, -149.0]))


def test_adaptive_beta_0_is_the_standard_attack_and_inf_p1_attacks_only_the_probe(model, batch):
    x, y = batch
    std = PGD(model, EPS, steps=5)(x, y)
    assert torch.equal(PGD(model, EPS, steps=5, loss="adaptive", beta_atk=0)(x, y), std)

    class P1Only(nn.Module):  # the P1 probe as a stand-alone classifier
        def __init__(self, net):
            super().__init__()
            self.net = net

        def forward(self, x):
            return self.net.forward_with_aux(x).probe_logits["P1"]

    probe = PGD(P1Only(model), EPS, steps=5)(x, y)
    assert torch.equal(PGD(model, EPS, steps=5, loss="adaptive", beta_atk="inf-P1")(x, y), probe)
    cw_probe = CW(P1Only(model), EPS, steps=5)(x, y)
    assert torch.equal(CW(model, EPS, steps=5, loss="adaptive", beta_atk="inf-2")(x, y), cw_probe)


def test_vanilla_model_adaptive_is_ce_and_infinite_beta_raises(model, batch):
    x, y = batch
    van = Vanilla(model)
    assert torch.equal(PGD(van, EPS, steps=3, loss="adaptive", beta_atk=2)(x, y), PGD(van, EPS, steps=3)(x, y))
    for beta in ("inf", "inf-P1", float("inf")):
        with pytest.raises(ConfigError, match="no CIFS/CAS layer"):
            PGD(van, EPS, loss="adaptive", beta_atk=beta)
    with pytest.raises(ConfigError, match="position"):
        PGD(SmallCNN(probes=("P1",)), EPS, loss="adaptive", beta_atk="inf-P2")


@pytest.mark.parametrize(
    "make",
    [
        lambda m: PGD(m, -0.1),
        lambda m: PGD(m, 2.0),
        lambda m: PGD(m, EPS, steps=0),
        lambda m: PGD(m, EPS, alpha=-1.0),
        lambda m: PGD(m, EPS, restarts=2),  # no random start
        lambda m: PGD(m, EPS, loss="margin"),
        lambda m: CW(m, EPS, loss="ce"),
        lambda m: CW(m, EPS, kappa=-1),
        lambda m: PGD(m, EPS, loss="adaptive", beta_atk=-1),
        lambda m: PGD(m, EPS, loss="adaptive", beta_atk="inf", scale="authors"),
        lambda m: PGD(m, EPS, scale="other"),
        lambda m: PGD(m, EPS, amp=True),  # CPU model
        lambda m: PGD(m, EPS, mask_grad="full"),  # no set_mask_grad
        lambda m: AutoAttack(m, EPS, version="plus"),
        lambda m: AutoAttack(m, EPS, version="custom", attacks_to_run=("apgd-ce", "pgd")),
    ],
)
def test_impossible_configs_raise_config_error(make, model):
    with pytest.raises(ConfigError):
        make(model)


def test_mask_grad_mode_is_set_during_the_attack_and_restored(model, batch):
    x, y = batch

    class WithMask(SmallCNN):
        def __init__(self):
            super().__init__()
            self.mode, self.seen = "detached", []

        def set_mask_grad(self, mode):
            prev, self.mode = self.mode, mode
            return prev

        def forward_with_aux(self, x, y=None):
            self.seen.append(self.mode)
            return super().forward_with_aux(x, y)

    m = WithMask()
    m.load_state_dict(model.state_dict())
    PGD(m, EPS, steps=2, loss="adaptive", mask_grad="full")(x, y)
    assert m.seen == ["full", "full"] and m.mode == "detached"


# ---------------------------------------------------------------------------- restarts, seeds
def test_restarts_keep_the_first_success_and_never_lose_one(model, data):
    x, y = data
    x, y = x[:200], y[:200]
    one = PGD(model, EPS, alpha=1 / 255, steps=3, random_start=True, seed=3)
    many = PGD(model, EPS, alpha=1 / 255, steps=3, random_start=True, restarts=4, seed=3)
    a1, a4 = one(x, y), many(x, y)
    with torch.no_grad():
        fooled1, fooled4 = model(a1).argmax(1) != y, model(a4).argmax(1) != y
    # the first restart of `many` is `one` (same seed): whatever it fools stays fooled, with the same example
    assert not (fooled1 & ~fooled4).any()
    assert torch.equal(a4[fooled1], a1[fooled1])
    assert fooled4.sum() >= fooled1.sum()


def test_restarts_prefer_a_success_over_a_higher_loss():
    """Scripted restarts: the first lands at 0.45 (not fooled, loss 0), the second at 0.55
    (fooled, loss -0.1); the success must be kept although its loss is lower."""

    class Threshold(nn.Module):  # class 1 when x > 0.5
        def forward(self, x):
            s = x.flatten(1).sum(1)
            return torch.stack([torch.zeros_like(s), 10 * (s - 0.5)], dim=1)

    class Scripted(PGD):
        def __init__(self, model):
            super().__init__(model, 0.1, random_start=True, restarts=3, steps=1)
            self.landings = iter([0.45, 0.55, 0.40])

        def _run(self, x, y, delta):
            return torch.full_like(x, next(self.landings)) - x

        def per_example_loss(self, x, y):
            return -(x.flatten(1).sum(1) - 0.45).abs(), self.model(x)

    x, y = torch.full((1, 1, 1, 1), 0.5), torch.zeros(1, dtype=torch.long)
    assert Scripted(Threshold())(x, y).item() == pytest.approx(0.55)


def test_input_gradient_is_the_loss_gradient_and_leaves_params_alone(model, batch):
    x, y = batch
    atk = PGD(model, EPS, loss="adaptive", beta_atk=2)
    g = atk.input_gradient(x, y)
    assert all(p.grad is None for p in model.parameters())
    xr = x.clone().requires_grad_(True)
    loss = adaptive_loss(model.forward_with_aux(xr), y, 2, reduction="none").sum()
    assert torch.allclose(g, torch.autograd.grad(loss, xr)[0], atol=1e-6)


def test_seeded_random_start_is_deterministic(model, batch):
    x, y = batch
    make = lambda: PGD(model, EPS, alpha=2 / 255, steps=2, random_start=True, seed=7)  # noqa: E731
    assert torch.equal(make()(x, y), make()(x, y))
    atk = make()
    assert not torch.equal(atk(x, y), atk(x, y))  # the generator advances between calls


# ---------------------------------------------------------------------------- repr
def test_repr_shows_every_hyperparameter(model):
    r = repr(PGD(model, 8 / 255, steps=20, loss="adaptive", beta_atk=2))
    assert r == (
        "PGD(eps=8/255, alpha=0.8/255, steps=20, random_start=False, restarts=1, loss='adaptive', "
        "beta_atk=2, scale='paper', eval_mode=True, amp=False, model=SmallCNN[cifs])"
    )
    atk = PGD(
        model, 8 / 255, alpha=2 / 255, steps=10, random_start=True, restarts=3, seed=1, loss="adaptive", beta_atk="inf-1"
    )
    r = repr(atk)
    for part in ("alpha=2/255", "steps=10", "random_start=True", "restarts=3", "seed=1", "beta_atk='inf-P2'"):
        assert part in r
    assert repr(FGSM(model, 8 / 255)) == "FGSM(eps=8/255, loss='ce', eval_mode=True, amp=False, model=SmallCNN[cifs])"
    r = repr(CW(model, 8 / 255, loss="adaptive", beta_atk="inf"))
    for part in ("eps=8/255", "alpha=0.8/255", "steps=30", "kappa=50", "loss='adaptive'", "beta_atk='inf'"):
        assert part in r
    r = repr(AutoAttack(model, 8 / 255, n_classes=K))
    expected = ("eps=8/255", "version='standard'", "apgd-ce+apgd-t+fab-t+square", "n_classes=4", "steps=100")
    for part in expected + ("n_queries=5000", "seed=0"):
        assert part in r


# ---------------------------------------------------------------------------- sweep
def test_sweep_worst_case_is_the_and_over_betas(model, data):
    x, y = data
    x, y = x[:120], y[:120]
    make = lambda b: PGD(model, EPS, steps=3, loss="adaptive", beta_atk=b)  # noqa: E731
    res = sweep(model, (x, y), make, betas=BETA_SWEEP, progress=False)
    assert list(res.results) == ["0", "0.1", "1", "2", "10", "100", "inf", "inf-P1", "inf-P2"]
    assert not res.skipped
    stacked = torch.stack([r.correct for r in res.results.values()])
    assert torch.equal(res.worst_correct, stacked.all(0))
    assert res.worst_accuracy <= min(res.accuracy.values()) + 1e-9
    assert res.accuracy[res.worst_beta] == min(res.accuracy.values())
    # beta=0 in the sweep is the plain attack on the final logits
    plain = robust_accuracy(model, (x, y), PGD(model, EPS, steps=3), progress=False)
    assert torch.equal(res.results["0"].correct, plain.correct)
    table = res.table()
    assert table.loc["worst case", "accuracy"] == pytest.approx(res.worst_accuracy)
    assert table.loc["2", "accuracy"] == pytest.approx(res.accuracy["2"])


def test_sweep_skips_betas_the_model_cannot_support(batch):
    x, y = batch
    m = SmallCNN(probes=("P1",)).eval()
    make = lambda b: FGSM(m, EPS, loss="adaptive", beta_atk=b)  # noqa: E731
    res = sweep(m, (x, y), make, betas=(0, 2, "inf", "inf-P1", "inf-P2"), progress=False)
    assert list(res.results) == ["0", "2", "inf", "inf-P1"]
    assert list(res.skipped) == ["inf-P2"] and "P2" in res.skipped["inf-P2"]
    assert "skipped" in res.table().loc["inf-P2", "note"]
    van = Vanilla(m)
    res = sweep(van, (x, y), lambda b: FGSM(van, EPS, loss="adaptive", beta_atk=b), betas=(0, "inf"), progress=False)
    assert list(res.results) == ["0"] and list(res.skipped) == ["inf"]


def test_sweep_rejects_an_attack_that_ignores_beta(model, batch):
    with pytest.raises(ConfigError, match="beta"):
        sweep(model, batch, lambda b: PGD(model, EPS, steps=1), betas=(0, 2), progress=False)


# ---------------------------------------------------------------------------- evaluation helpers
def test_robust_accuracy_accepts_dataset_loader_and_tensors(model, data, accuracies):
    x, y = data
    ds = TensorDataset(x, y)
    ref = accuracies["clean"]
    for d in (ds, DataLoader(ds, batch_size=77), (x, y)):
        r = robust_accuracy(model, d, batch_size=128, progress=False)
        assert isinstance(r, EvalResult) and r.n == 400
        assert torch.equal(r.correct, ref.correct)
    assert ref.accuracy == pytest.approx(100.0 * ref.correct.float().mean().item())
    assert "clean" in repr(ref) and f"{ref.accuracy:.2f}%" in repr(ref)


def test_topk_and_per_class(model, data, accuracies):
    x, y = data
    pgd = accuracies["pgd20"]
    tops = [pgd.topk(k) for k in range(1, K + 1)]
    assert tops == sorted(tops) and tops[0] == pgd.accuracy and tops[-1] == 100.0
    with torch.no_grad():
        logits = model(PGD(model, EPS, steps=20)(x, y))
    top2 = (logits.topk(2, dim=1).indices == y[:, None]).any(1).float().mean().item() * 100
    assert pgd.topk(2) == pytest.approx(top2)
    d = topk_accuracy(model, (x, y), None, ks=(1, 2), progress=False)
    assert d[1] == pytest.approx(accuracies["clean"].accuracy) and d[2] >= d[1]
    pc = pgd.per_class(K)
    assert pc.shape == (K,)
    assert pc.mean().item() == pytest.approx(pgd.accuracy)  # balanced classes
    assert torch.isnan(per_class_accuracy(torch.tensor([True]), torch.tensor([1]), 3)[0])


def test_balanced_indices():
    labels = torch.arange(1000) % 10
    idx = balanced_indices(labels, 20, seed=0)
    assert idx.numel() == 200 and torch.equal(torch.bincount(labels[idx]), torch.full((10,), 20))
    assert torch.equal(idx, balanced_indices(labels.tolist(), 20, seed=0))
    assert not torch.equal(idx, balanced_indices(labels, 20, seed=1))
    assert len(idx.unique()) == 200
    with pytest.raises(ConfigError):
        balanced_indices(labels, 101)
    ds = TensorDataset(torch.zeros(1000, 1), labels)
    sub = balanced_subset(ds, per_class=5, seed=0)
    sub_labels = torch.stack([sub[i][1] for i in range(len(sub))])
    assert len(sub) == 50 and torch.equal(torch.bincount(sub_labels), torch.full((10,), 5))


# ---------------------------------------------------------------------------- AutoAttack
def test_autoattack_through_torchattacks(model, data, accuracies):
    pytest.importorskip("torchattacks")
    x, y = data
    x, y = x[:48], y[:48]
    atk = AutoAttack(model, EPS, n_classes=K, seed=0, steps=5, n_queries=20)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    x_adv = atk(x, y)
    assert torch.equal(torch.rand(3), expected)  # the global RNG is untouched
    check_invariants(x, x_adv)
    aa = robust_accuracy(model, (x, y), atk, progress=False)
    clean = accuracies["clean"].correct[:48]
    pgd = accuracies["pgd20"].correct[:48]
    assert not (aa.correct & ~clean).any()  # never fixes a clean error
    assert aa.accuracy <= 100.0 * pgd.float().mean().item() + 5.0
    parts = AutoAttack(model, EPS, n_classes=K).torchattacks._autoattack.attacks
    assert [type(p).__name__ for p in parts] == ["APGD", "APGDT", "FAB", "Square"]
    assert [p.steps for p in parts[:3]] == [100, 100, 100] and parts[3].n_queries == 5000  # the official values
    assert parts[1].n_target_classes == K - 1 and parts[2].n_target_classes == K - 1 and parts[2].multi_targeted
    custom = AutoAttack(model, EPS, version="custom", attacks_to_run=("square",), n_classes=K, n_queries=20)
    check_invariants(x, custom(x, y))
