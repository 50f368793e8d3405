"""The adaptive loss (Eq. 3) in cifs_edu/losses.py, on hand-made outputs."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from cifs_edu.losses import BETA_SWEEP, adaptive_loss, loss_weights, parse_beta
from cifs_edu.models import build_model
from cifs_edu.outputs import ModelOutput

Y = torch.tensor([0, 2, 1])


def _out():
    g = torch.Generator().manual_seed(0)
    return ModelOutput(
        logits=torch.randn(3, 4, generator=g),
        probe_logits={"P2": torch.randn(3, 4, generator=g), "P1": torch.randn(3, 4, generator=g)},
    )


def _ces(out):
    return (
        F.cross_entropy(out.logits, Y),
        F.cross_entropy(out.probe_logits["P2"], Y),
        F.cross_entropy(out.probe_logits["P1"], Y),
    )


@pytest.mark.parametrize("beta", [0, 0.1, 1, 2, 10, 100])
def test_eq3_finite_beta(beta):
    out = _out()
    ce, ce2, ce1 = _ces(out)
    expected = ce / (1 + beta) + beta / ((1 + beta) * 2) * (ce2 + ce1)
    assert adaptive_loss(out, Y, beta).item() == pytest.approx(expected.item(), rel=1e-6)


def test_beta_zero_is_plain_ce_and_beta_two_is_the_average():
    out = _out()
    ce, ce2, ce1 = _ces(out)
    assert adaptive_loss(out, Y, 0).item() == pytest.approx(ce.item(), rel=1e-6)
    assert adaptive_loss(out, Y, 2).item() == pytest.approx(((ce + ce2 + ce1) / 3).item(), rel=1e-6)


def test_beta_infinity_variants():
    out = _out()
    ce, ce2, ce1 = _ces(out)
    for b in ("inf", float("inf"), "infinity", "∞"):
        assert adaptive_loss(out, Y, b).item() == pytest.approx(((ce2 + ce1) / 2).item(), rel=1e-6)
    # the paper's "inf-1"/"inf-2" count CIFS layers in forward order: layer 1 = P2, layer 2 = P1
    for b in ("inf-P1", "inf-2", "inf-p1"):
        assert adaptive_loss(out, Y, b).item() == pytest.approx(ce1.item(), rel=1e-6)
    for b in ("inf-P2", "inf-1"):
        assert adaptive_loss(out, Y, b).item() == pytest.approx(ce2.item(), rel=1e-6)
    # finite beta converges to beta = inf at rate 1/(1+beta)
    gaps = [abs(adaptive_loss(out, Y, b).item() - adaptive_loss(out, Y, "inf").item()) for b in (10, 100, 1e4)]
    assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3


def test_authors_scale():
    out = _out()
    ce, ce2, ce1 = _ces(out)
    for beta in (0.5, 2, 7):
        expected = (ce + beta / 2 * (ce2 + ce1)) * 3 / (beta + 1)
        assert adaptive_loss(out, Y, beta, scale="authors").item() == pytest.approx(expected.item(), rel=1e-6)
        assert adaptive_loss(out, Y, beta, scale="authors").item() == pytest.approx(
            3 * adaptive_loss(out, Y, beta).item(), rel=1e-6
        )
    with pytest.raises(ValueError, match="undefined for beta=inf"):
        adaptive_loss(out, Y, "inf", scale="authors")


def test_reduction_and_criterion():
    out = _out()
    per = adaptive_loss(out, Y, 2, reduction="none")
    assert per.shape == (3,)
    assert per.mean().item() == pytest.approx(adaptive_loss(out, Y, 2).item(), rel=1e-6)
    margin = lambda z, y: -z.gather(1, y[:, None]).squeeze(1)  # noqa: E731
    expected = -(out.logits + out.probe_logits["P2"] + out.probe_logits["P1"]).gather(1, Y[:, None]).mean() / 3
    assert adaptive_loss(out, Y, 2, criterion=margin).item() == pytest.approx(expected.item(), rel=1e-6)
    with pytest.raises(ValueError):
        adaptive_loss(out, Y, 2, reduction="sum")


def test_vanilla_model_loss_is_ce():
    out = ModelOutput(logits=torch.randn(3, 4))
    for b in (0, 2, 100):
        assert adaptive_loss(out, Y, b).item() == pytest.approx(F.cross_entropy(out.logits, Y).item(), rel=1e-6)
    with pytest.raises(ValueError, match="no CIFS/CAS layer"):
        adaptive_loss(out, Y, "inf")


def test_parse_beta_and_weights():
    assert parse_beta("2") == 2.0 and parse_beta(math.inf) == "inf" and parse_beta("INF") == "inf"
    for bad in (-1, float("nan"), "big", "-inf"):
        with pytest.raises(ValueError):
            parse_beta(bad)
    with pytest.raises(ValueError, match="names position"):
        loss_weights("inf-P3", ("P2", "P1"))
    w_final, w = loss_weights(2, ("P2", "P1"))
    assert w_final == pytest.approx(1 / 3) and w == {"P2": pytest.approx(1 / 3), "P1": pytest.approx(1 / 3)}
    assert len(BETA_SWEEP) == 9
    for b in BETA_SWEEP:  # every sweep value is accepted for a two-layer model
        loss_weights(b, ("P2", "P1"))


def test_loss_on_real_model_outputs_backpropagates():
    torch.manual_seed(0)
    for defense in ("cifs", "cas"):
        model = build_model("resnet18", defense, width=4)
        x = torch.rand(3, 3, 32, 32, requires_grad=True)
        out = model.forward_with_aux(x, Y)
        loss = adaptive_loss(out, Y, "inf-P1")
        loss.backward()
        assert x.grad.abs().sum() > 0
        assert loss.item() == pytest.approx(F.cross_entropy(out.probe_logits["P1"], Y).item(), rel=1e-6)
