"""CAS baseline (Bai et al., 2021): signed weight-row mask of its own head."""
from __future__ import annotations

import torch

from cifs_edu.cas import CASLayer
from cifs_edu.models import build_model

N, C, K = 5, 8, 10


def _layer_and_z():
    torch.manual_seed(0)
    layer = CASLayer(C, K)
    z = torch.rand(N, C, 3, 3)
    return layer, z


def test_train_mode_uses_true_label_row():
    layer, z = _layer_and_z()
    y = torch.tensor([0, 3, 3, 9, 1])
    out = layer.train()(z, y)
    W = layer.fc.weight.detach()
    assert torch.equal(out.classes[:, 0], y)
    assert torch.allclose(out.mask, W[y])
    assert torch.allclose(out.masked, z * W[y][:, :, None, None])
    assert torch.allclose(out.probe_logits, z.mean((2, 3)) @ W.T + layer.fc.bias.detach(), atol=1e-6)
    assert (out.mask < 0).any()  # signed, unnormalised


def test_eval_mode_and_no_labels_use_prediction():
    layer, z = _layer_and_z()
    y = torch.tensor([0, 3, 3, 9, 1])
    for out in (layer.eval()(z, y), layer.train()(z)):
        pred = out.probe_logits.argmax(1)
        assert torch.equal(out.classes[:, 0], pred)
        assert torch.allclose(out.mask, layer.fc.weight.detach()[pred])


def test_nothing_detached():
    layer, z = _layer_and_z()
    z.requires_grad_(True)
    out = layer.train()(z, torch.arange(N))
    out.masked.sum().backward()
    # the head learns through the mask (its rows) and the input gets a gradient
    assert layer.fc.weight.grad[:N].abs().sum() > 0
    assert torch.allclose(z.grad, out.mask.detach()[:, :, None, None].expand_as(z))


def test_cas_model_outputs():
    model = build_model("resnet18", "cas", width=4)
    x = torch.rand(3, 3, 32, 32)
    y = torch.tensor([1, 2, 3])
    out = model.forward_with_aux(x, y)
    assert out.positions == ("P2", "P1")
    assert {p: t.shape for p, t in out.probe_logits.items()} == {"P2": (3, 10), "P1": (3, 10)}
    assert torch.equal(out.classes["P1"][:, 0], y)
    model.eval()
    assert model(x).shape == (3, 10)
    with torch.inference_mode():
        assert torch.allclose(model(x), model.forward_with_aux(x).logits)
