"""PGD-20 evaluation time: cifs_edu against torchattacks on the same model and data.

The model is a ResNet-18 (vanilla or CIFS) whose BatchNorm running statistics are
calibrated on random inputs (so that folding them is not trivial); the data are random
CIFAR-shaped images in [0, 1] with random labels. Both libraries attack ``model(x)`` with
cross-entropy, eps = 8/255, step eps/10, 20 steps, no random start (the paper's PGD-20).

Variants of cifs_edu's PGD (each idea of :mod:`cifs_edu.engine.fast` alone and together):

- ``exact``: ``fold_bn=False, channels_last=False`` (the caller's model itself);
- ``fold``: BatchNorm folded into the convolutions (private copy, frozen parameters);
- ``cl``: channels_last private copy (frozen parameters);
- ``default``: both (what ``PGD(model)`` does by default).

After timing, every variant's adversarial examples are compared with torchattacks' and
with ``exact``'s: fraction of pixels equal to 1e-6, fraction of identical predictions of
the original model, and robust accuracy.
"""
from __future__ import annotations

import torch
from torch import nn

from .timing import measure_interleaved

__all__ = ["calibrated_resnet18", "run", "agreement"]

VARIANTS = {
    "exact": dict(fold_bn=False, channels_last=False),
    "fold": dict(fold_bn=True, channels_last=False),
    "cl": dict(fold_bn=False, channels_last=True),
    "default": dict(),
}


@torch.no_grad()
def calibrated_resnet18(defense: str = "none", width: int = 64, seed: int = 0, batches: int = 4,
                        batch: int = 64) -> nn.Module:
    """A ResNet-18 (random weights) whose BN running statistics are the averages over
    ``batches`` random batches in train mode; returned in eval mode."""
    from cifs_edu.models import build_model

    torch.manual_seed(seed)
    model = build_model("resnet18", defense=defense, width=width)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = None  # cumulative average
    g = torch.Generator().manual_seed(seed + 1)
    model.train()
    for _ in range(batches):
        model(torch.rand(batch, 3, 32, 32, generator=g))
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.momentum = 0.1
    return model.eval()


def agreement(model: nn.Module, x: torch.Tensor, y: torch.Tensor, adv: dict[str, torch.Tensor],
              reference: str) -> dict[str, dict[str, float]]:
    """For every entry of ``adv``: pixels equal (to 1e-6) to ``adv[reference]``, predictions of
    ``model`` equal to those on ``adv[reference]``, and robust accuracy (%)."""
    with torch.inference_mode():
        preds = {k: model(v).argmax(1) for k, v in adv.items()}
    ref, ref_pred = adv[reference], preds[reference]
    out = {}
    for k, v in adv.items():
        out[k] = {
            f"pixels_equal_to_{reference}": float(((v - ref).abs() <= 1e-6).float().mean()),
            f"predictions_equal_to_{reference}": float((preds[k] == ref_pred).float().mean()),
            "robust_accuracy": 100.0 * float((preds[k] == y).float().mean()),
            "max_linf_from_x": float((v - x).abs().max()),
        }
    return out


def run(width: int = 64, batch: int = 128, steps: int = 20, defenses=("vanilla", "cifs"), repeats: int = 3,
        variants=("exact", "fold", "cl", "default"), log=print) -> list[dict]:
    """Time torchattacks' PGD and each cifs_edu variant, interleaved; ratios are to torchattacks."""
    from cifs_edu.attacks import PGD

    try:
        import torchattacks
    except ImportError:  # pragma: no cover - environment
        torchattacks = None
    rows = []
    eps = 8 / 255
    for name in defenses:
        defense = {"vanilla": "none"}.get(name, name)
        model = calibrated_resnet18(defense, width)
        g = torch.Generator().manual_seed(7)
        x = torch.rand(batch, 3, 32, 32, generator=g)
        y = torch.randint(0, 10, (batch,), generator=g)
        attacks, warm = {}, {}
        if torchattacks is not None:
            attacks["torchattacks"] = torchattacks.PGD(model, eps=eps, alpha=eps / 10, steps=steps, random_start=False)
            warm["torchattacks"] = torchattacks.PGD(model, eps=eps, alpha=eps / 10, steps=1, random_start=False)
        for v in variants:
            attacks[f"cifs_edu[{v}]"] = PGD(model, eps, steps=steps, **VARIANTS[v])
            warm[f"cifs_edu[{v}]"] = PGD(model, eps, steps=1, **VARIANTS[v])
        for a in warm.values():  # warm-up: one step of each (allocator, oneDNN primitives)
            a(x, y)
        adv: dict[str, torch.Tensor] = {}

        def runner(key):
            def fn():
                adv[key] = attacks[key](x, y)
            return fn

        log(f"[pgd] PGD-{steps} {name} ResNet-18 w={width}, {batch} images: {', '.join(attacks)} x {repeats}")
        st = measure_interleaved({k: runner(k) for k in attacks}, repeats=repeats, warmup=0,
                                 per={k: batch for k in attacks})
        reference = "torchattacks" if "torchattacks" in adv else f"cifs_edu[{variants[0]}]"
        agree = agreement(model, x, y, adv, reference)
        exact = agreement(model, x, y, adv, "cifs_edu[exact]") if "cifs_edu[exact]" in adv else {}
        base = st.get("torchattacks")
        for k, s in st.items():
            row = {"benchmark": "pgd", "case": f"pgd{steps} {name} {k}", "defense": name, "impl": k, "width": width,
                   "batch": batch, "steps": steps, **s.summary(),
                   "ratio": s.median / base.median if base else None,
                   "cpu_ratio": s.cpu_median / base.cpu_median if base else None,
                   "ratio_to": "torchattacks" if base else None,
                   "agreement": {**agree[k], **exact.get(k, {})}}
            rows.append(row)
            log(f"    {k:22s} median {s.median:.3f} s (min {s.min:.3f}, max {s.max:.3f}, cpu {s.cpu_median:.3f})"
                + (f"  x{row['ratio']:.3f} vs torchattacks" if base else "")
                + f"  pixels={agree[k][f'pixels_equal_to_{reference}']:.5f} preds={agree[k][f'predictions_equal_to_{reference}']:.4f}")
    return rows
