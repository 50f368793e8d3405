"""CIFS layer: probes, relevance (closed form vs autograd), label rules, IMGFs, gradient modes."""
from __future__ import annotations

import math

import pytest
import torch

from cifs_edu.cifs import (
    CIFSConfig,
    CIFSLayer,
    LinearProbe,
    MLPProbe,
    importance_mask,
    pool,
    relevance_autograd,
    relevance_closed,
    select_classes,
)
from cifs_edu.profiles import ConfigError

N, C, H, K = 6, 12, 3, 10


def _z(seed=0, n=N, c=C):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, c, H, H, generator=g) * 2.0


def _probe(kind, seed=0, c=C):
    torch.manual_seed(seed)
    return LinearProbe(c, K) if kind == "linear" else MLPProbe(c, K, hidden=7, softplus_beta=5.0)


# ----------------------------------------------------------------------------- relevance


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("k", [1, 2, 3])
def test_closed_form_equals_autograd(kind, k):
    probe = _probe(kind)
    z = _z()
    classes = select_classes(probe(z), k)
    g_auto = relevance_autograd(probe, z, classes, detach=True)
    g_closed = relevance_closed(probe, pool(z), classes)
    assert g_auto.shape == (N, C)
    assert torch.allclose(g_closed, g_auto, atol=1e-5, rtol=0)
    assert g_auto.abs().max() > 1e-2  # not trivially zero


def test_linear_relevance_is_sum_of_rows():
    probe = _probe("linear")
    classes = torch.tensor([[3, 7], [7, 7], [0, 9], [1, 2], [5, 4], [8, 6]])
    g = relevance_closed(probe, pool(_z()), classes)
    W = probe.fc.weight.detach()
    for n in range(N):
        assert torch.allclose(g[n], W[classes[n, 0]] + W[classes[n, 1]], atol=1e-7)


def test_relevance_is_gradient_summed_over_positions():
    """Eq. 1: the shift derivative equals the position-sum of the gradient w.r.t. z (authors' form)."""
    probe = _probe("mlp")
    z = _z(3).requires_grad_(True)
    classes = select_classes(probe(z), 2)
    score = probe(z).gather(1, classes).sum()
    (gz,) = torch.autograd.grad(score, z)
    g = relevance_closed(probe, pool(z.detach()), classes)
    assert torch.allclose(gz.sum(dim=(2, 3)), g, atol=1e-6)
    # ... and NOT the position-mean (which is H*W times smaller)
    assert not torch.allclose(gz.mean(dim=(2, 3)), g, atol=1e-6)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("train", [False, True])
@pytest.mark.parametrize("rule", ["paper", "distinct"])
@pytest.mark.parametrize("k", [2, 3])
def test_layer_closed_vs_autograd(kind, train, rule, k):
    z = _z(1)
    y = torch.tensor([0, 1, 2, 3, 4, 5])
    layers = {}
    for impl in ("closed", "autograd"):
        torch.manual_seed(5)
        layer = CIFSLayer(C, K, kind, hidden=7, config=CIFSConfig(k=k, label_rule=rule, relevance=impl))
        layer.train(train)
        layers[impl] = layer(z, y)
    a, b = layers["closed"], layers["autograd"]
    assert torch.equal(a.classes, b.classes)
    for name in ("masked", "probe_logits", "mask"):
        assert torch.allclose(getattr(a, name), getattr(b, name), atol=1e-5, rtol=0), name
    if train:
        assert torch.equal(a.classes[:, 0], y)


@pytest.mark.parametrize("kind", ["linear", "mlp"])
@pytest.mark.parametrize("mode", ["detached", "full"])
def test_parameter_and_feature_gradients_closed_vs_autograd(kind, mode):
    """Second-order terms agree: gradients of a loss on z*m w.r.t. probe parameters and z."""
    grads = {}
    for impl in ("closed", "autograd"):
        torch.manual_seed(7)
        layer = CIFSLayer(C, K, kind, hidden=7, config=CIFSConfig(relevance=impl, grad_mode=mode))
        z = _z(2).requires_grad_(True)
        out = layer(z, torch.arange(N) % K)
        loss = (out.masked.sum(dim=(2, 3)) * torch.linspace(-1, 1, C)).sum() + out.probe_logits.square().sum()
        loss.backward()
        grads[impl] = [z.grad] + [p.grad for p in layer.parameters()]
    for ga, gb in zip(grads["closed"], grads["autograd"]):
        assert torch.allclose(ga, gb, atol=1e-5, rtol=1e-4)


def test_detached_mask_has_no_feature_gradient_but_full_has():
    torch.manual_seed(0)
    layer = CIFSLayer(C, K, "mlp", hidden=7)
    z = _z().requires_grad_(True)
    out = layer(z)
    # detached: mask is constant w.r.t. z, but differentiable w.r.t. the probe parameters
    assert torch.autograd.grad((out.mask * torch.arange(C)).sum(), z, allow_unused=True)[0] is None
    gp = torch.autograd.grad((out.mask * torch.arange(C)).sum(), layer.probe.fc1.weight)[0]
    assert gp.abs().max() > 0
    layer.grad_mode = "full"
    out = layer(z)
    gz = torch.autograd.grad((out.mask * torch.arange(C)).sum(), z)[0]
    assert gz.abs().max() > 1e-6


def test_linear_probe_mask_ignores_features_even_in_full_mode():
    torch.manual_seed(0)
    layer = CIFSLayer(C, K, "linear", config=CIFSConfig(grad_mode="full")).eval()
    z = _z().requires_grad_(True)
    out = layer(z)
    g = torch.autograd.grad((out.mask * torch.arange(C)).sum(), z, allow_unused=True)[0]
    assert g is None or g.abs().max() == 0


# ----------------------------------------------------------------------------- label rules


def test_label_rules_on_hand_made_logits():
    logits = torch.tensor(
        [
            [0.0, 5.0, 4.0, 3.0, 1.0],  # order 1, 2, 3, 4, 0
            [0.0, 5.0, 4.0, 3.0, 1.0],
            [0.0, 5.0, 4.0, 3.0, 1.0],
            [9.0, 1.0, 2.0, 8.0, 7.0],  # order 0, 3, 4, 2, 1
        ]
    )
    y = torch.tensor([1, 2, 0, 3])  # y = top-1 / runner-up / low / runner-up
    assert select_classes(logits, 2).tolist() == [[1, 2], [1, 2], [1, 2], [0, 3]]
    assert select_classes(logits, 2, y, "distinct").tolist() == [[1, 2], [2, 1], [0, 1], [3, 0]]
    assert select_classes(logits, 2, y, "paper").tolist() == [[1, 2], [2, 2], [0, 2], [3, 3]]
    assert select_classes(logits, 3, y, "distinct").tolist() == [[1, 2, 3], [2, 1, 3], [0, 1, 2], [3, 0, 4]]
    assert select_classes(logits, 3, y, "paper").tolist() == [[1, 2, 3], [2, 2, 3], [0, 2, 3], [3, 3, 4]]
    assert select_classes(logits, 1, y, "paper").tolist() == [[1], [2], [0], [3]]
    assert select_classes(logits, 1, y, "distinct").tolist() == [[1], [2], [0], [3]]
    # the default is the paper's rule; "authors" is another name for it
    assert torch.equal(select_classes(logits, 2, y), select_classes(logits, 2, y, "paper"))
    assert torch.equal(select_classes(logits, 2, y, "authors"), select_classes(logits, 2, y, "paper"))
    with pytest.raises(ConfigError, match="label_rule must be one of"):
        select_classes(logits, 2, y, "mine")


def test_paper_rule_counts_y_twice_in_relevance():
    probe = _probe("linear")
    W = probe.fc.weight.detach()
    logits = torch.tensor([[0.0, 5.0, 4.0] + [-1.0] * (K - 3)])
    y = torch.tensor([2])  # runner-up
    ca = select_classes(logits, 2, y, "paper")
    cp = select_classes(logits, 2, y, "distinct")
    ga = relevance_closed(probe, torch.zeros(1, C), ca)
    gp = relevance_closed(probe, torch.zeros(1, C), cp)
    assert torch.allclose(ga[0], 2 * W[2], atol=1e-7)
    assert torch.allclose(gp[0], W[2] + W[1], atol=1e-7)


def test_eval_mode_ignores_labels():
    torch.manual_seed(0)
    layer = CIFSLayer(C, K, "mlp", hidden=7).eval()
    z = _z()
    a = layer(z, torch.zeros(N, dtype=torch.long))
    b = layer(z)
    assert torch.equal(a.classes, b.classes)
    assert torch.equal(a.classes, b.probe_logits.topk(2, dim=1).indices)


# ----------------------------------------------------------------------------- IMGFs


def test_sigmoid_alpha10_switches_off_negative_channels():
    g = torch.tensor([[-2.0, -0.5, -0.47, 0.0, 0.5, 2.0]])
    m = importance_mask(g, "sigmoid", alpha=10.0)
    assert (m[g < 0] < 0.01).all()
    assert (m[g >= 0.5] > 0.99).all()
    assert m[0, 3].item() == pytest.approx(0.5)


def test_softmax_sums_to_one_or_scale():
    g = torch.randn(4, 20)
    assert torch.allclose(importance_mask(g, "softmax").sum(1), torch.ones(4), atol=1e-6)
    assert torch.allclose(importance_mask(g, "softmax", T=0.3, scale=2.0).sum(1), torch.full((4,), 2.0), atol=1e-5)
    hot = importance_mask(g, "softmax", T=0.01)
    assert torch.equal(hot.argmax(1), g.argmax(1)) and (hot.max(1).values > 0.5).all()


def test_softplus_and_relu_masks():
    g = torch.tensor([[-3.0, 0.0, 0.2, 3.0]])
    m = importance_mask(g, "softplus", alpha=5.0)
    expected = torch.log1p(torch.exp(5.0 * g)) / 5.0
    assert torch.allclose(m, expected, atol=1e-6)
    assert m[0, 0] < 0.01 and m[0, 1].item() == pytest.approx(math.log(2) / 5)
    assert importance_mask(g, "relu").tolist() == [[0.0, 0.0, pytest.approx(0.2), 3.0]]


def test_layer_applies_mask_and_scale_k():
    torch.manual_seed(0)
    z = _z()
    layer = CIFSLayer(C, K, "linear", config=CIFSConfig(k=3, scale="k")).eval()
    out = layer(z)
    assert torch.allclose(out.mask.sum(1), torch.full((N,), 3.0), atol=1e-5)
    assert torch.allclose(out.masked, z * out.mask[:, :, None, None])
    g = layer.probe.fc.weight.detach()[out.classes].sum(1)
    assert torch.allclose(out.mask, 3 * torch.softmax(g, 1), atol=1e-6)


def test_layer_sigmoid_uses_default_alpha_10():
    torch.manual_seed(0)
    layer = CIFSLayer(C, K, "linear", config=CIFSConfig(imgf="sigmoid")).eval()
    out = layer(_z())
    g = layer.probe.fc.weight.detach()[out.classes].sum(1)
    assert torch.allclose(out.mask, torch.sigmoid(10 * g), atol=1e-6)


# ----------------------------------------------------------------------------- no_grad / config


@pytest.mark.parametrize("impl", ["closed", "autograd"])
@pytest.mark.parametrize("mode", ["detached", "full"])
def test_layer_under_no_grad_and_inference_mode(impl, mode):
    torch.manual_seed(0)
    layer = CIFSLayer(C, K, "mlp", hidden=7, config=CIFSConfig(relevance=impl, grad_mode=mode)).eval()
    z = _z()
    ref = layer(z)
    with torch.no_grad():
        a = layer(z)
    with torch.inference_mode():
        zi = z.clone()
        b = layer(zi)
    for out in (a, b):
        assert torch.allclose(out.masked, ref.masked, atol=1e-7)
        assert torch.allclose(out.mask, ref.mask, atol=1e-7)
        assert not out.mask.requires_grad


def test_config_collects_all_problems():
    cfg = CIFSConfig(k=10, label_rule="x", imgf="tanh", T=0, scale=-1, relevance="fd", grad_mode="half", softplus_beta=0)
    problems = cfg.problems(num_classes=10)
    assert len(problems) == 8
    with pytest.raises(ConfigError, match="k must be smaller"):
        cfg.validate(10)
    with pytest.raises(ConfigError, match="alpha must be > 0"):
        CIFSConfig(imgf="sigmoid", alpha=0).validate(10)
    with pytest.raises(ConfigError, match="alpha applies only"):
        CIFSConfig(imgf="softmax", alpha=3).validate(10)
    assert CIFSConfig(imgf="softplus").effective_alpha == 5.0
    assert CIFSConfig(k=3, scale="k").effective_scale == 3.0
    assert CIFSConfig.authors() == CIFSConfig() == CIFSConfig(label_rule="authors")
    assert CIFSConfig(label_rule="authors").label_rule == "paper"
    assert CIFSConfig(label_rule="distinct").label_rule == "distinct"
