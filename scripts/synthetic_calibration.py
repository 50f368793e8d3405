"""Calibration runs of the embedded synthetic data (scratch script, not a test).

    PYTHONPATH=. python scripts/synthetic_calibration.py NAME 'VARIANT_JSON' [standard,pgd_at,cifs:pgd_at]

Trains each listed recipe on the ``smoke`` profile (into a temporary run folder, 1 CPU thread)
on synthetic data drawn with a changed generator, then prints (and appends to
``$OUT/synthetic_calibration.jsonl``, default ``/tmp``) FGSM / PGD-20 accuracy on the 500 test
images and two probes of which feature the model reads: accuracy on test images with the
texture removed (``acc_no_texture``) and the share of images with the texture of class y+1
that are predicted as y+1 (``follows_texture``).

VARIANT_JSON holds :class:`cifs_edu.synthetic.SyntheticConfig` fields (e.g. ``{"edge": 0.4}``)
and four extras: ``"train"`` (TrainConfig overrides, e.g. ``{"augment": "none", "seed": 1}``),
``"kind": "stripes"`` (class textures = 2x2 stripes / checkerboards in one colour channel
instead of random 4x4 sign tiles), ``"shape_noise": p`` (the shape of a training image shows a
random other class with probability p; the texture always shows the label) and ``"hide": p``
(the shape of a training image is invisible with probability p). The results of the
2026-11-27 round are in ``benchmarks/results/synthetic_calibration_2026-11-27.jsonl`` and
summarised in the docstring of :mod:`cifs_edu.synthetic`.
"""
import dataclasses
import json
import os
import sys
import tempfile
import time

import torch

import cifs_edu
from cifs_edu import synthetic
from cifs_edu.training import TrainConfig, train

name, variant = sys.argv[1], json.loads(sys.argv[2])
methods = sys.argv[3].split(",") if len(sys.argv) > 3 else ["standard"]
shape_noise = variant.pop("shape_noise", 0.0)
hide = variant.pop("hide", 0.0)
extra = variant.pop("train", {})
if variant.pop("kind", "tile") == "stripes":
    H = torch.tensor([[1.0, 1.0], [-1.0, -1.0]])
    V, C = H.t().clone(), H * H.t()
    pats = torch.zeros(10, 3, 2, 2)
    for k in range(9):
        pats[k, k % 3] = (H, V, C)[k // 3]
    pats[9] = C
    synthetic.texture_patterns = lambda config=None: pats
    variant["tile"] = 2
for k in ("radius", "contrast"):
    if k in variant:
        variant[k] = tuple(variant[k])
cfg = synthetic.SyntheticConfig(**variant)
synthetic.SyntheticConfig = lambda: cfg  # make_split's default
original_split = synthetic.make_split


def make_split(n, seed=0, split="train", config=None, *, texture="match"):
    if split != "train" or texture != "match" or not (shape_noise or hide):
        return original_split(n, seed, split, config, texture=texture)
    g = torch.Generator().manual_seed(int(seed) * 1_000_003)
    y = (torch.arange(n) % 10)[torch.randperm(n, generator=g)]
    if hide:
        h = torch.rand(n, generator=g) < hide
        x = torch.empty(n, 3, 32, 32, dtype=torch.uint8)
        x[~h] = synthetic.render(y[~h], g, cfg)
        x[h] = synthetic.render(y[h], g, dataclasses.replace(cfg, contrast=(0.0, 0.0)))
        return x, y
    flip = torch.rand(n, generator=g) < shape_noise
    shapes = torch.where(flip, (y + torch.randint(1, 10, (n,), generator=g)) % 10, y)
    return synthetic.render(shapes, g, cfg, texture_labels=y), y


synthetic.make_split = make_split
cifs_edu.setup(profile="smoke")
torch.set_num_threads(1)
out = {"name": name, "variant": sys.argv[2]}
for m in methods:
    defense, method = m.split(":") if ":" in m else ("none", m)
    tc = TrainConfig.from_profile("smoke", defense=defense, method=method, eval_attacks=["natural", "fgsm", "pgd20"], **extra)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as d:
        result = train(tc, run_dir=d, progress=False)
    xs, ys = original_split(500, 0, "test", cfg, texture="shifted")
    xn, _ = original_split(500, 0, "test", cfg, texture="none")
    model = result.model.eval()
    with torch.no_grad():
        ps, pn = model(xs.float() / 255).argmax(1), model(xn.float() / 255).argmax(1)
    last = result.metrics["last"]
    out[m] = {"clean": last["natural"], "fgsm": last["fgsm"], "pgd20": last["pgd20"],
              "follows_texture": round(float((ps == (ys + 1) % 10).float().mean()), 3),
              "acc_no_texture": round(float((pn == ys).float().mean()), 3), "wall": round(time.time() - t0, 1)}
print(json.dumps(out), flush=True)
with open(os.path.join(os.environ.get("OUT", "/tmp"), "synthetic_calibration.jsonl"), "a") as f:
    f.write(json.dumps(out) + "\n")
