"""Eq. 1, the channel relevance: closed form against autograd, on one CIFS layer.

Shapes are those of ResNet-18's P1/P2 at a given width (C = 8 * width channels of 4x4,
MLP probe with 2 * width hidden units, K = 10), batch N. Three measurements per probe kind
(``linear`` = P1's, ``mlp`` = P2's):

- ``relevance``: the relevance alone (no gradient), from pooled features / the feature map;
- ``attack``: eval-mode layer forward plus backward to the feature map (what an attack step does);
- ``train``: train-mode layer forward with labels plus backward to the features and the
  probe's parameters (what a training step does).

The two implementations agree to float rounding (the largest absolute difference of the
relevances is reported).
"""
from __future__ import annotations

import torch

from .timing import measure_interleaved

__all__ = ["run"]


def _layer(kind: str, channels: int, hidden: int, impl: str, seed: int = 0):
    from cifs_edu.cifs import CIFSConfig, CIFSLayer

    torch.manual_seed(seed)
    return CIFSLayer(channels, 10, kind, hidden, CIFSConfig(relevance=impl))


def run(width: int = 64, batch: int = 128, repeats: int = 30, warmup: int = 3, log=print) -> list[dict]:
    from cifs_edu.cifs import pool, relevance_autograd, relevance_closed, select_classes

    channels, hidden = 8 * width, 2 * width
    g = torch.Generator().manual_seed(3)
    z = torch.relu(torch.randn(batch, channels, 4, 4, generator=g))
    y = torch.randint(0, 10, (batch,), generator=g)
    rows = []
    for kind in ("linear", "mlp"):
        layers = {impl: _layer(kind, channels, hidden, impl) for impl in ("closed", "autograd")}
        probe = layers["closed"].probe
        with torch.no_grad():
            pooled = pool(z)
            classes = select_classes(probe.head(pooled), 2)
        g_closed = relevance_closed(probe, pooled, classes)
        g_auto = relevance_autograd(probe, z, classes)
        diff = float((g_closed - g_auto).detach().abs().max())

        def rel(impl):
            def fn():
                with torch.no_grad():
                    if impl == "closed":
                        relevance_closed(probe, pool(z), classes)
                    else:
                        relevance_autograd(probe, z, classes)
            return fn

        def attack(impl):
            layer = layers[impl].eval()

            def fn():
                zz = z.detach().requires_grad_(True)
                out = layer(zz)
                torch.autograd.grad(out.masked.sum() + out.probe_logits.sum(), zz)
            return fn

        def train(impl):
            layer = layers[impl].train()

            def fn():
                zz = z.detach().requires_grad_(True)
                out = layer(zz, y)
                (out.masked.square().mean() + out.probe_logits.logsumexp(1).mean()).backward()
                layer.zero_grad(set_to_none=True)
            return fn

        for what, make in (("relevance", rel), ("attack", attack), ("train", train)):
            st = measure_interleaved({impl: make(impl) for impl in ("closed", "autograd")}, repeats, warmup)
            base = st["autograd"]
            for impl, s in st.items():
                rows.append({"benchmark": "relevance", "case": f"{what} {kind} {impl}", "what": what, "probe": kind,
                             "impl": impl, "width": width, "batch": batch, "channels": channels, "hidden": hidden,
                             **s.summary(), "ratio": s.median / base.median, "cpu_ratio": s.cpu_median / base.cpu_median,
                             "ratio_to": "autograd", "max_abs_diff": diff})
            log(f"[relevance] {what:9s} {kind:6s} C={channels}: closed {st['closed'].median * 1e3:.3f} ms, "
                f"autograd {st['autograd'].median * 1e3:.3f} ms (x{st['closed'].median / base.median:.3f}); "
                f"max |diff| {diff:.2e}")
    return rows
