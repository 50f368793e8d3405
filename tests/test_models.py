"""Backbones, placement of CIFS/CAS, the factory, checkpoints and the model API."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from cifs_edu.cifs import LinearProbe, MLPProbe
from cifs_edu.models import (
    build_model,
    count_parameters,
    load_authors_state_dict,
    load_backbone_state_dict,
    mask_grad,
)
from cifs_edu.outputs import ModelOutput
from cifs_edu.profiles import ConfigError


def _x(n=4, c=3, s=32, seed=0):
    return torch.rand(n, c, s, s, generator=torch.Generator().manual_seed(seed))


def _randomize_bn(model, seed=1):
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
            with torch.no_grad():
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=g) * 0.1)
    return model


def _sharpen_probes(model, factor=30.0):
    """Scale probe weights so masks are far from uniform (a harder numerical test)."""
    with torch.no_grad():
        for p in model.probe_parameters():
            p.mul_(factor)
    return model


# ----------------------------------------------------------------------------- sizes


def test_parameter_counts():
    assert count_parameters(build_model("resnet18")) == 11_173_962
    cifs = build_model("resnet18", "cifs")
    assert count_parameters(cifs, selectors=False) == 11_173_962
    # probes: MLP 512-128-10 at P2 and linear 512-10 at P1
    assert count_parameters(cifs) - 11_173_962 == (512 * 128 + 128 + 128 * 10 + 10) + (512 * 10 + 10)
    assert count_parameters(build_model("resnet18", "cas")) - 11_173_962 == 2 * (512 * 10 + 10)
    assert count_parameters(build_model("resnet10")) == 4_902_090  # 1 input channel
    wrn = build_model("wrn28_10", "cifs")
    assert count_parameters(wrn, selectors=False) == 36_479_194
    assert count_parameters(wrn) - 36_479_194 == (640 * 240 + 240 + 240 * 10 + 10) + (640 * 10 + 10)


@pytest.mark.parametrize(
    "arch, kw, x_shape, shapes",
    [
        ("resnet18", dict(width=8), (2, 3, 32, 32), {"P2": (2, 64, 4, 4), "P1": (2, 64, 4, 4)}),
        ("resnet10", dict(width=8), (2, 1, 28, 28), {"P2": (2, 32, 7, 7), "P1": (2, 64, 4, 4)}),
        ("wrn28_10", dict(width=1), (2, 3, 32, 32), {"P2": (2, 64, 8, 8), "P1": (2, 64, 8, 8)}),
    ],
)
@pytest.mark.parametrize("defense", ["cifs", "cas"])
def test_output_shapes(arch, kw, x_shape, shapes, defense):
    torch.manual_seed(0)
    model = build_model(arch, defense, num_classes=7, **kw)
    x = torch.rand(x_shape)
    out = model.forward_with_aux(x, torch.tensor([1, 2]))
    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (2, 7) and out.positions == ("P2", "P1") == model.positions
    for p, s in shapes.items():
        assert out.features[p].shape == s and out.masked[p].shape == s
        assert out.masks[p].shape == s[:2] and out.probe_logits[p].shape == (2, 7)
    assert out.penultimate.shape == (2, shapes["P1"][1])
    k = 2 if defense == "cifs" else 1
    assert out.classes["P1"].shape == (2, k)
    assert model(x).shape == (2, 7)
    assert model.defense == defense and model.num_classes == 7


def test_vanilla_model_has_no_selectors():
    model = build_model("resnet18", width=4)
    out = model.forward_with_aux(_x(2))
    assert model.positions == () and out.positions == () and out.masks == {}
    assert not any(k.startswith("selectors") for k in model.state_dict())


def test_positions_any_order_and_single():
    model = build_model("resnet18", "cifs", width=4, positions=("P1", "P2"))
    assert model.positions == ("P2", "P1")
    only = build_model("resnet18", "cifs", width=4, positions=["P1"])
    assert only.positions == ("P1",)
    assert isinstance(only.selectors["P1"].probe, LinearProbe)
    assert only.forward_with_aux(_x(2)).positions == ("P1",)
    p2 = build_model("resnet18", "cifs", width=4, positions="P2")
    assert p2.positions == ("P2",) and isinstance(p2.selectors["P2"].probe, MLPProbe)


def test_probe_options():
    m = build_model("resnet18", "cifs", width=4, probes="linear")
    assert all(isinstance(s.probe, LinearProbe) for s in m.selectors.values())
    m = build_model("resnet18", "cifs", width=4, probes={"P2": "linear", "P1": "mlp"}, hidden=5)
    assert isinstance(m.selectors["P2"].probe, LinearProbe)
    assert m.selectors["P1"].probe.fc1.out_features == 5
    assert build_model("resnet18", "cifs").selectors["P2"].probe.fc1.out_features == 128
    assert build_model("wrn28_10", "cifs", width=1).selectors["P2"].probe.fc1.out_features == 24


# ----------------------------------------------------------------------------- validation


def test_invalid_options_raise_one_error():
    with pytest.raises(ConfigError) as err:
        build_model("resnet18", "cifs", k=10, T=0, imgf="sigmoid", alpha=-1)
    msg = str(err.value)
    assert "k must be smaller" in msg and "T must be > 0" in msg and "alpha must be > 0" in msg
    with pytest.raises(ConfigError) as err:
        build_model("resnet19", "cifz")
    assert "arch must be one of" in str(err.value) and "defense must be one of" in str(err.value)


@pytest.mark.parametrize(
    "kw, text",
    [
        (dict(defense="none", positions=("P1",)), "has no CIFS/CAS layers"),
        (dict(defense="cifs", positions=("P3",)), "subset of"),
        (dict(defense="cifs", positions=()), "needs at least one position"),
        (dict(defense="cifs", positions=("P1",), probes={"P2": "mlp"}), "not among positions"),
        (dict(defense="cifs", probes="conv"), "probe must be one of"),
        (dict(defense="cifs", hidden=0), "hidden must be"),
        (dict(defense="cas", imgf="sigmoid"), "apply only to defense='cifs'"),
        (dict(defense="none", label_rule="distinct"), "apply only to defense='cifs'"),
        (dict(defense="cifs", label_rule="mine"), "label_rule must be"),
        (dict(defense="cifs", relevance="numeric"), "relevance must be"),
        (dict(defense="cifs", grad_mode="half"), "grad_mode must be"),
        (dict(defense="cifs", scale=0), "scale must be"),
        (dict(normalize="imagenet"), "normalize must be"),
        (dict(normalize="fmnist"), "1 channel(s) but the model takes 3"),
        (dict(num_classes=1), "num_classes"),
        (dict(drop_rate=0.3), "only to wrn28_10"),
    ],
)
def test_each_invalid_option(kw, text):
    with pytest.raises(ConfigError, match=text.replace("(", r"\(").replace(")", r"\)")):
        build_model("resnet18", width=4, **kw)


def test_wrn_width_is_widen_factor():
    with pytest.raises(ConfigError, match="widen factor"):
        build_model("wrn28_10", width=64)


# ----------------------------------------------------------------------------- API


def _all_models():
    torch.manual_seed(0)
    return [
        build_model("resnet18", "none", width=4),
        build_model("resnet18", "cifs", width=4),
        build_model("resnet18", "cifs", width=4, relevance="autograd", grad_mode="full"),
        build_model("resnet18", "cas", width=4),
        build_model("resnet10", "cifs", width=4, in_channels=3),
        build_model("wrn28_10", "cifs", width=1, label_rule="distinct"),
    ]


@pytest.mark.parametrize("train", [False, True])
def test_no_grad_and_inference_mode_equal_grad_mode(train):
    x = _x(3)
    y = torch.tensor([0, 1, 2])
    for model in _all_models():
        model.train(train)
        ref = model.forward_with_aux(x, y)
        with torch.no_grad():
            a = model.forward_with_aux(x, y)
        with torch.inference_mode():
            b = model.forward_with_aux(x, y)
        for out in (a, b):
            assert torch.allclose(out.logits, ref.logits, atol=1e-6)
            for p in ref.positions:
                assert torch.allclose(out.masks[p], ref.masks[p], atol=1e-6)
                assert torch.allclose(out.probe_logits[p], ref.probe_logits[p], atol=1e-6)


def test_forward_returns_logits_tensor():
    for model in _all_models():
        model.eval()
        c = model.conv1.in_channels
        out = model(_x(5, c=c))
        assert isinstance(out, torch.Tensor) and out.shape == (5, 10)


def test_torchattacks_pgd_runs_on_cifs_model():
    torchattacks = pytest.importorskip("torchattacks")
    torch.manual_seed(0)
    model = build_model("resnet18", "cifs", width=4).eval()
    x, y = _x(4), torch.tensor([0, 1, 2, 3])
    adv = torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=2, random_start=True)(x, y)
    assert adv.shape == x.shape
    assert (adv - x).abs().max() <= 8 / 255 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
    assert (adv - x).abs().max() > 1 / 255


def test_mask_grad_context_manager():
    torch.manual_seed(0)
    model = build_model("resnet18", "cifs", width=4).eval()
    _sharpen_probes(model, 5.0)
    x = _x(2)

    def input_grad():
        xx = x.clone().requires_grad_(True)
        out = model.forward_with_aux(xx)
        (F.cross_entropy(out.logits, torch.tensor([0, 1]))).backward()
        return xx.grad

    g_det = input_grad()
    wrapper = nn.Sequential(nn.Identity(), model)
    with mask_grad(wrapper, "full"):
        assert model.mask_grad == "full" and model.selectors["P2"].grad_mode == "full"
        g_full = input_grad()
    assert model.mask_grad == "detached" and model.selectors["P1"].grad_mode == "detached"
    assert not torch.allclose(g_det, g_full, atol=1e-9)  # the MLP mask at P2 depends on x
    assert model.set_mask_grad("full") == "detached" and model.set_mask_grad("detached") == "full"
    with pytest.raises(ConfigError):
        model.set_mask_grad("sideways")


def test_seeded_build_is_deterministic():
    outs = []
    for _ in range(2):
        torch.manual_seed(123)
        model = build_model("resnet18", "cifs", width=4).eval()
        outs.append(model(_x(2)))
    assert torch.equal(outs[0], outs[1])


def test_normalize_inside_model():
    torch.manual_seed(0)
    plain = build_model("resnet18", "cifs", width=4).eval()
    norm = build_model("resnet18", "cifs", width=4, normalize="cifar10").eval()
    norm.load_state_dict(plain.state_dict())  # no normalisation buffers in the state_dict
    assert set(norm.state_dict()) == set(plain.state_dict())
    x = _x(2)
    mean = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    std = torch.tensor([0.2470, 0.2435, 0.2616]).view(1, 3, 1, 1)
    assert torch.allclose(norm(x), plain((x - mean) / std), atol=1e-6)
    fm = build_model("resnet10", normalize="fmnist", width=4)
    assert fm(torch.rand(2, 1, 28, 28)).shape == (2, 10)


# ----------------------------------------------------------------------------- checkpoints


class _PlainBlock(nn.Module):
    """The common CIFAR BasicBlock layout, written out independently for the test."""

    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class _PlainResNet18(nn.Module):
    def __init__(self, w=64):
        super().__init__()
        self.conv1 = nn.Conv2d(3, w, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        chans, cin = [w, 2 * w, 4 * w, 8 * w], w
        for i, c in enumerate(chans):
            stride = 1 if i == 0 else 2
            setattr(self, f"layer{i + 1}", nn.Sequential(_PlainBlock(cin, c, stride), _PlainBlock(c, c, 1)))
            cin = c
        self.linear = nn.Linear(8 * w, 10)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer4(self.layer3(self.layer2(self.layer1(out))))
        return self.linear(F.avg_pool2d(out, 4).flatten(1))


def test_common_cifar_resnet18_state_dict_loads():
    torch.manual_seed(0)
    ref = _randomize_bn(_PlainResNet18(w=8)).eval()
    sd = ref.state_dict()
    vanilla = build_model("resnet18", width=8).eval()
    assert list(vanilla.state_dict()) == list(sd)  # same names, same order
    vanilla.load_state_dict(sd)
    x = _x(3)
    assert torch.allclose(vanilla(x), ref(x), atol=1e-6)
    cifs = build_model("resnet18", "cifs", width=8)
    left = load_backbone_state_dict(cifs, {"module." + k: v for k, v in sd.items()})
    assert left and all(k.startswith("selectors.") for k in left)
    assert torch.equal(cifs.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)
    with pytest.raises(ValueError, match="missing"):
        load_backbone_state_dict(cifs, {k: v for k, v in sd.items() if k != "linear.bias"})
    # full-size names and shapes (no forward pass)
    big = _PlainResNet18(w=64).state_dict()
    assert [(k, v.shape) for k, v in build_model("resnet18").state_dict().items()] == [
        (k, v.shape) for k, v in big.items()
    ]


_AUTHORS_NAMES = {
    ("resnet18", "cifs"): {
        "selectors.P2.probe.fc1": "layer4.0.Probe.Probe.0.fc",
        "selectors.P2.probe.fc2": "layer4.0.Probe.Probe.1",
        "selectors.P1.probe.fc": "layer4.1.Probe.Probe.1",
    },
    ("resnet18", "cas"): {"selectors.P2.fc": "layer4.0.CAS.fc", "selectors.P1.fc": "layer4.1.CAS.fc"},
    ("resnet10", "cifs"): {
        "selectors.P2.probe.fc1": "Probe_0.Probe.0.fc",
        "selectors.P2.probe.fc2": "Probe_0.Probe.1",
        "selectors.P1.probe.fc": "Probe_1.Probe.1",
    },
    ("resnet10", "cas"): {"selectors.P2.fc": "Probe_3.fc", "selectors.P1.fc": "Probe_4.fc"},
    ("wrn28_10", "cifs"): {
        "selectors.P2.probe.fc1": "block3.layer.3.Probe.Probe.0.fc",
        "selectors.P2.probe.fc2": "block3.layer.3.Probe.Probe.1",
        "selectors.P1.probe.fc": "Probe.Probe.1",
    },
}


@pytest.mark.parametrize("arch, defense", list(_AUTHORS_NAMES))
def test_authors_state_dict_names_load(arch, defense):
    """The authors' checkpoints (HanshuYAN/CIFS) name probes differently; their backbones match ours."""
    width = 1 if arch == "wrn28_10" else 4
    torch.manual_seed(0)
    src = build_model(arch, defense, width=width)
    theirs = {}
    for key, value in src.state_dict().items():
        for ours_prefix, their_prefix in _AUTHORS_NAMES[(arch, defense)].items():
            if key.startswith(ours_prefix + "."):
                key = their_prefix + key[len(ours_prefix):]
        assert not key.startswith("selectors"), key
        theirs["module." + key] = value
    torch.manual_seed(1)
    dst = build_model(arch, defense, width=width)
    load_authors_state_dict(dst, {"state_dict": theirs, "stop_epoch": 3})
    for (k1, v1), (k2, v2) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    with pytest.raises(RuntimeError, match="Missing key"):
        load_authors_state_dict(dst, {k: v for k, v in theirs.items() if "Probe" not in k and "CAS" not in k})
    if arch == "resnet18":
        with pytest.raises(KeyError, match="not P1/P2"):
            load_authors_state_dict(dst, {**theirs, "layer3.0.Probe.Probe.1.weight": torch.zeros(10, 32)})


# ----------------------------------------------------------------------------- independent reference


def _ref_probe(probe, z):
    pooled = z.mean(dim=(2, 3))
    if isinstance(probe, LinearProbe):
        return F.linear(pooled, probe.fc.weight, probe.fc.bias)
    hidden = F.softplus(F.linear(pooled, probe.fc1.weight, probe.fc1.bias), beta=5)
    return F.linear(hidden, probe.fc2.weight, probe.fc2.bias)


def _ref_classes(logits, y, rule, k=2):
    """Label rules written per example with Python lists."""
    chosen = []
    for n in range(logits.shape[0]):
        order = logits[n].argsort(descending=True).tolist()
        if y is None:
            chosen.append(order[:k])
        elif rule == "paper":  # the paper's sentence, as the authors' code does it
            chosen.append([int(y[n])] + order[1:k])
        else:
            chosen.append([int(y[n])] + [c for c in order if c != int(y[n])][: k - 1])
    return chosen


def _ref_cifs(layer, z, y, rule):
    """Reference facts: probe on the unmasked z; mask from autograd on a detached copy,
    gradient summed over positions, softmax over channels, z * mask."""
    raw = _ref_probe(layer.probe, z)
    zd = z.detach().clone().requires_grad_(True)
    logits = _ref_probe(layer.probe, zd)
    chosen = _ref_classes(logits.detach(), y if layer.training else None, rule)
    score = sum(logits[n, c] for n, cs in enumerate(chosen) for c in cs)
    (grad,) = torch.autograd.grad(score, zd)
    mask = torch.softmax(grad.sum(dim=(2, 3)), dim=1)
    return z * mask[:, :, None, None], raw, mask


def _ref_resnet(model, x, y, rule):
    def block(b, h):
        out = F.relu(b.bn1(b.conv1(h)))
        out = b.bn2(b.conv2(out))
        return F.relu(out + (b.shortcut(h) if len(b.shortcut) else h))

    probes, masks = {}, {}
    out = F.relu(model.bn1(model.conv1(x)))
    for layer in (model.layer1, model.layer2, model.layer3):
        for b in layer:
            out = block(b, out)
    out = block(model.layer4[0], out)
    out, probes["P2"], masks["P2"] = _ref_cifs(model.selectors["P2"], out, y, rule)
    out = block(model.layer4[1], out)
    out, probes["P1"], masks["P1"] = _ref_cifs(model.selectors["P1"], out, y, rule)
    return model.linear(F.avg_pool2d(out, 4).flatten(1)), probes, masks


def _ref_wrn(model, x, y, rule):
    def block(b, h, sel=None):
        a = F.relu(b.bn1(h))
        extra = None
        inner = a
        if sel is not None:
            inner, *extra = _ref_cifs(sel, a, y, rule)
        out = b.conv2(F.relu(b.bn2(b.conv1(inner))))
        short = h if b.convShortcut is None else b.convShortcut(a)  # unmasked input
        return out + short, extra

    probes, masks = {}, {}
    out = model.conv1(x)
    for group in (model.block1, model.block2):
        for b in group.layer:
            out, _ = block(b, out)
    blocks = list(model.block3.layer)
    for b in blocks[:-1]:
        out, _ = block(b, out)
    out, (probes["P2"], masks["P2"]) = block(blocks[-1], out, model.selectors["P2"])
    out = F.relu(model.bn1(out))
    out, probes["P1"], masks["P1"] = _ref_cifs(model.selectors["P1"], out, y, rule)
    return model.fc(F.avg_pool2d(out, 8).flatten(1)), probes, masks


@pytest.mark.parametrize("arch", ["resnet18", "wrn28_10"])
@pytest.mark.parametrize("rule", ["paper", "distinct"])
@pytest.mark.parametrize("train", [False, True])
def test_library_matches_independent_reference(arch, rule, train):
    torch.manual_seed(0)
    model = build_model(arch, "cifs", width=8 if arch == "resnet18" else 1, label_rule=rule)
    _sharpen_probes(_randomize_bn(model))
    model.train(train)
    x = _x(8)
    # labels: for half the batch the P1 probe's runner-up (exercises the two rules' difference)
    with torch.no_grad():
        top = copy.deepcopy(model).forward_with_aux(x).classes["P1"]
    y = torch.arange(8) % 10
    y[:4] = top[:4, 1]
    ref_logits, ref_probes, ref_masks = (_ref_resnet if arch == "resnet18" else _ref_wrn)(
        copy.deepcopy(model), x, y, rule
    )
    out = model.forward_with_aux(x, y)
    assert torch.allclose(out.logits, ref_logits, atol=1e-5, rtol=1e-4)
    for p in ("P2", "P1"):
        assert torch.allclose(out.probe_logits[p], ref_probes[p], atol=1e-5, rtol=1e-4)
        assert torch.allclose(out.masks[p], ref_masks[p], atol=1e-5)
    assert out.masks["P1"].max() > 0.05  # masks are far from uniform (1/64)
    if train:
        assert torch.equal(out.classes["P1"][:, 0], y)
        twice = (out.classes["P1"][:, 0] == out.classes["P1"][:, 1]).sum().item()
        runner_up = (out.probe_logits["P1"].topk(2, dim=1).indices[:, 1] == y).sum().item()
        assert runner_up >= 1
        assert twice == (runner_up if rule == "paper" else 0)


@pytest.mark.parametrize("train", [False, True])
def test_default_cifs_resnet18_is_the_authors_model(train):
    """``build_model("resnet18", "cifs")`` with no other option, given weights in the authors' layout,
    equals the independent reference of their model (their label rule) to 1e-5, in train and eval mode."""
    torch.manual_seed(0)
    src = _sharpen_probes(_randomize_bn(build_model("resnet18", "cifs")))
    theirs = {}
    for key, value in src.state_dict().items():
        for ours_prefix, their_prefix in _AUTHORS_NAMES[("resnet18", "cifs")].items():
            if key.startswith(ours_prefix + "."):
                key = their_prefix + key[len(ours_prefix):]
        theirs["module." + key] = value
    torch.manual_seed(1)
    model = build_model("resnet18", "cifs")
    load_authors_state_dict(model, {"state_dict": theirs})
    model.train(train)
    src.train(train)
    x = _x(6)
    with torch.no_grad():
        top = copy.deepcopy(model).forward_with_aux(x).classes["P1"]
    y = torch.arange(6) % 10
    y[:3] = top[:3, 1]  # the runner-up: the authors' rule counts it twice
    ref_logits, ref_probes, ref_masks = _ref_resnet(src, x, y, "paper")
    out = model.forward_with_aux(x, y)
    assert torch.allclose(out.logits, ref_logits, atol=1e-5, rtol=1e-4)
    for p in ("P2", "P1"):
        assert torch.allclose(out.probe_logits[p], ref_probes[p], atol=1e-5, rtol=1e-4)
        assert torch.allclose(out.masks[p], ref_masks[p], atol=1e-5)
    if train:
        assert (out.classes["P1"][:, 0] == out.classes["P1"][:, 1]).sum() >= 1
