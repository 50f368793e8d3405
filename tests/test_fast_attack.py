"""The attacks' fast path (cifs_edu.engine.fast): same function, private copy, nothing leaks."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

from cifs_edu.attacks import PGD, robust_accuracy
from cifs_edu.engine.fast import fast_copy, fold_batchnorm, foldable_pairs, private_copy
from cifs_edu.models import build_model
from cifs_edu.profiles import ConfigError


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def _randomize_bn(model: nn.Module, seed: int = 1) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.2)
                m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.3)
                m.weight.copy_(torch.rand(m.num_features, generator=g) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return model


def _x(n=6, c=3, s=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, s, s, generator=g), torch.randint(0, 10, (n,), generator=g)


@pytest.mark.parametrize(
    "arch, defense, width, folded",
    [("resnet18", "none", 4, 20), ("resnet18", "cifs", 4, 20), ("resnet18", "cas", 4, 20),
     ("resnet10", "cifs", 4, 12), ("wrn28_10", "cifs", 1, 12)],
)
def test_folded_copy_computes_the_same_function(arch, defense, width, folded):
    torch.manual_seed(0)
    model = _randomize_bn(build_model(arch, defense=defense, width=width)).eval()
    in_ch = 1 if arch == "resnet10" else 3
    x, _ = _x(c=in_ch, s=28 if arch == "resnet10" else 32)
    fc = fast_copy(model)
    assert fc.folded == folded  # every BN that directly follows a conv (WRN: conv1 -> bn2 of each block)
    with torch.no_grad():
        ref = model.forward_with_aux(x)
        out = fc.model.forward_with_aux(fc.prepare(x))
    assert torch.allclose(out.logits, ref.logits, rtol=1e-4, atol=1e-5)
    for p in ref.masks:
        assert torch.allclose(out.masks[p], ref.masks[p], rtol=1e-4, atol=1e-6)
        assert torch.equal(out.classes[p], ref.classes[p])
    remaining = [m for m in fc.model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(remaining) == sum(isinstance(m, nn.BatchNorm2d) for m in model.modules()) - folded


def test_only_safe_pairs_are_folded():
    seq = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1))
    seq.eval()
    assert [(c, b) for _, c, b in foldable_pairs(seq)] == [("0", "1")]
    seq.train()
    assert foldable_pairs(seq) == []  # BN in train mode uses batch statistics
    seq.eval()
    seq[1].track_running_stats, seq[1].running_mean, seq[1].running_var = False, None, None
    assert foldable_pairs(seq) == []  # no running statistics: normalises with batch statistics


def test_nothing_leaks_into_the_callers_model():
    torch.manual_seed(0)
    model = _randomize_bn(build_model("resnet18", defense="cifs", width=4))
    model.train()
    model.layer1.eval()  # a mixed state, which must be restored exactly
    for p in model.parameters():
        p.grad = torch.ones_like(p)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    flags = [m.training for m in model.modules()]
    layout = [(p.data_ptr(), p.stride(), p.requires_grad) for p in model.parameters()]
    modules = list(model.modules())
    x, y = _x()
    x_adv = PGD(model, 8 / 255, steps=2)(x, y)
    assert x_adv.is_contiguous() and x_adv.shape == x.shape
    after = model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert [m.training for m in model.modules()] == flags
    assert [(p.data_ptr(), p.stride(), p.requires_grad) for p in model.parameters()] == layout
    assert list(model.modules()) == modules
    assert all(torch.equal(p.grad, torch.ones_like(p)) for p in model.parameters())
    assert model.mask_grad == "detached"


def test_private_copy_shares_storage_but_not_structure():
    torch.manual_seed(0)
    model = _randomize_bn(build_model("resnet18", width=4)).eval()
    copy = private_copy(model)
    assert copy is not model and copy.layer1[0] is not model.layer1[0]
    assert copy.conv1.weight is not model.conv1.weight
    assert copy.conv1.weight.data_ptr() == model.conv1.weight.data_ptr()
    assert not any(p.requires_grad for p in copy.parameters())
    assert all(p.requires_grad for p in model.parameters())
    n = fold_batchnorm(copy)
    assert n == 20 and isinstance(model.bn1, nn.BatchNorm2d) and model.conv1.bias is None
    copy.to(memory_format=torch.channels_last)
    assert model.conv1.weight.is_contiguous()


def test_fast_pgd_agrees_with_the_exact_one():
    torch.manual_seed(0)
    model = _randomize_bn(build_model("resnet18", defense="cifs", width=4)).eval()
    x, y = _x(n=16)
    fast = PGD(model, 8 / 255, steps=5)
    exact = PGD(model, 8 / 255, steps=5, fold_bn=False, channels_last=False)
    a, b = fast(x, y), exact(x, y)
    assert ((a - b).abs() <= 1e-6).float().mean() >= 0.99
    assert ((a - x).abs().max() <= 8 / 255 + 1e-6) and a.min() >= 0 and a.max() <= 1
    ra = robust_accuracy(model, (x, y), fast, progress=False).correct
    rb = robust_accuracy(model, (x, y), exact, progress=False).correct
    assert (ra != rb).sum() <= 1


def test_exact_mode_differentiates_the_callers_model():
    model = build_model("resnet18", width=4).eval()
    seen = []
    model.register_forward_hook(lambda m, i, o: seen.append(m))
    x, y = _x(n=2)
    PGD(model, 8 / 255, steps=1, fold_bn=False, channels_last=False)(x, y)
    assert seen == [model]
    seen.clear()
    PGD(model, 8 / 255, steps=1)(x, y)
    assert len(seen) == 1 and seen[0] is not model  # hooks are shared; the module is the private copy


@pytest.mark.parametrize("kw", [dict(fold_bn=True, eval_mode=False), dict(channels_last=True, eval_mode=False),
                                dict(fold_bn="yes")])
def test_impossible_speed_options_raise(kw):
    with pytest.raises(ConfigError):
        PGD(build_model("resnet18", width=4), 8 / 255, **kw)


def test_train_mode_attack_uses_the_model_itself():
    model = build_model("resnet18", width=4)
    atk = PGD(model, 8 / 255, steps=1, eval_mode=False)
    assert not atk.fold_bn and not atk.channels_last
    before = model.bn1.running_mean.clone()
    atk(*_x(n=4))
    assert not torch.equal(model.bn1.running_mean, before)  # train-mode BN updated the caller's statistics, as before
