"""Does the fast attack path change results? Robust accuracy of trained models, three ways.

Trains (once; cached) a vanilla and a CIFS ResNet-18 at a narrow width with PGD-AT on the
CIFAR-10 sample (``../shared/data/cifar10-sample``: 5,000 training JPEGs; never shipped),
with the training engine's ``pgd_examples`` / ``batch_loss``. Then attacks the 1,000 test
images with PGD-20 (eps 8/255, step eps/10, no random start) by

- torchattacks' PGD,
- cifs_edu's PGD with ``fold_bn=False, channels_last=False`` (exact: the caller's model),
- cifs_edu's PGD as it runs by default (BatchNorm folded, channels_last, frozen copy),

and reports clean accuracy, each robust accuracy, how many test images get a different
prediction (fast vs exact, exact vs torchattacks) and the fraction of equal pixels.

    python -m benchmarks.agreement [--epochs 4] [--train-steps 3] [--width 16] [--cache DIR]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

__all__ = ["load_sample", "train_model", "compare", "main"]

ROOT = Path(__file__).resolve().parents[1]
CANDIDATES = (ROOT.parent / "shared" / "data" / "cifar10-sample", Path("/work/shared/data/cifar10-sample"))


def load_sample(path: Path) -> dict[str, torch.Tensor]:
    """The sample's train/test splits as float tensors in [0, 1] (N, 3, 32, 32) and labels."""
    from torchvision.datasets import ImageFolder
    from torchvision.transforms.functional import pil_to_tensor

    out = {}
    for split in ("train", "test"):
        ds = ImageFolder(str(path / split))
        xs = torch.stack([pil_to_tensor(ds.loader(p)) for p, _ in ds.samples]).float() / 255
        out[f"x_{split}"] = xs
        out[f"y_{split}"] = torch.tensor(ds.targets)
    return out


def train_model(defense: str, data: dict, width: int, epochs: int, seed: int = 0, steps: int = 3, log=print):
    """PGD-AT (PGD-``steps``, step 2.5/255, random start, eps 8/255) with SGD, lr 0.1 -> 0.01 at
    3/4 of the epochs, random crop + flip; the attack phase on the fast copy, channels_last."""
    from cifs_edu.engine.fast import fast_copy
    from cifs_edu.training.config import TrainConfig
    from cifs_edu.training.methods import TrainForward, batch_loss, pgd_examples

    cfg = TrainConfig(defense=defense, width=width, method="pgd_at", train_steps=steps, train_step_size=2.5 / 255,
                      eps=8 / 255, batch_size=128, lr=0.1, epochs=epochs)
    torch.manual_seed(seed)
    model = cfg.build_model(3, 10).to(memory_format=torch.channels_last)
    forward = TrainForward(model)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [max(1, 3 * epochs // 4)], 0.1)
    x_all, y_all = data["x_train"], data["y_train"]
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        t0 = time.perf_counter()
        order = torch.randperm(len(x_all), generator=g)
        total, hits, seen = 0.0, 0, 0
        for i in range(0, len(order) - 1, 128):
            idx = order[i:i + 128]
            x = x_all[idx]
            pad = torch.nn.functional.pad(x, (4, 4, 4, 4))
            dx, dy = torch.randint(0, 9, (2,), generator=g).tolist()
            x = pad[:, :, dy:dy + 32, dx:dx + 32]
            flip = torch.rand(len(idx), generator=g) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x).contiguous(memory_format=torch.channels_last)
            y = y_all[idx]
            model.eval()
            net = fast_copy(model).model
            x_adv = pgd_examples(net, x, y, cfg, lambda kind: torch.empty_like(x).uniform_(-1, 1, generator=g))
            model.train()
            opt.zero_grad(set_to_none=True)
            per, logits = batch_loss(forward, x, x_adv, y, cfg)
            per.mean().backward()
            opt.step()
            total += float(per.detach().sum())
            hits += int((logits.argmax(1) == y).sum())
            seen += len(idx)
        sched.step()
        log(f"[agreement] {defense} epoch {epoch + 1}/{epochs}: loss {total / seen:.3f}, adv train acc "
            f"{100 * hits / seen:.1f}%, {time.perf_counter() - t0:.0f} s")
    return model.to(memory_format=torch.contiguous_format).eval()


def compare(model, x: torch.Tensor, y: torch.Tensor, batch: int = 500, steps: int = 20) -> dict:
    """Clean and PGD-20 robust accuracy three ways, and how far the adversarial examples agree."""
    from cifs_edu.attacks import PGD

    attacks = {
        "exact": PGD(model, 8 / 255, steps=steps, fold_bn=False, channels_last=False),
        "fast": PGD(model, 8 / 255, steps=steps),
    }
    try:
        import torchattacks

        attacks["torchattacks"] = torchattacks.PGD(model, eps=8 / 255, alpha=0.8 / 255, steps=steps,
                                                   random_start=False)
    except ImportError:  # pragma: no cover
        pass
    adv = {k: [] for k in attacks}
    secs = {k: 0.0 for k in attacks}
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch], y[i:i + batch]
        for k, a in attacks.items():
            t0 = time.perf_counter()
            adv[k].append(a(xb, yb))
            secs[k] += time.perf_counter() - t0
    adv = {k: torch.cat(v) for k, v in adv.items()}
    with torch.inference_mode():
        clean = model(x).argmax(1)
        pred = {k: model(v).argmax(1) for k, v in adv.items()}
    out = {"n": len(x), "clean_accuracy": 100 * float((clean == y).float().mean()), "seconds": secs,
           "robust_accuracy": {k: 100 * float((p == y).float().mean()) for k, p in pred.items()}}
    pairs = [("fast", "exact")] + ([("exact", "torchattacks"), ("fast", "torchattacks")] if "torchattacks" in adv else [])
    for a, b in pairs:
        out[f"{a}_vs_{b}"] = {
            "different_predictions": int((pred[a] != pred[b]).sum()),
            "different_correctness": int(((pred[a] == y) != (pred[b] == y)).sum()),
            "pixels_equal": float(((adv[a] - adv[b]).abs() <= 1e-6).float().mean()),
            "max_abs_pixel_diff": float((adv[a] - adv[b]).abs().max()),
        }
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(prog="python -m benchmarks.agreement", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=None)
    p.add_argument("--width", type=int, default=16)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--train-steps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--defenses", default="vanilla,cifs")
    p.add_argument("--cache", type=Path, default=Path("/tmp/cifs_edu_bench_agreement"))
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    path = args.data or next((c for c in CANDIDATES if c.is_dir()), None)
    if path is None:
        raise SystemExit("the CIFAR-10 sample is not present (../shared/data/cifar10-sample); pass --data")
    data = load_sample(path)
    results = {}
    for name in args.defenses.split(","):
        defense = {"vanilla": "none"}.get(name, name)
        ckpt = args.cache / f"{name}-w{args.width}-e{args.epochs}-s{args.train_steps}.pt"
        if ckpt.is_file():
            from cifs_edu.models import build_model

            model = build_model("resnet18", defense=defense, width=args.width)
            model.load_state_dict(torch.load(ckpt, map_location="cpu"))
            model.eval()
        else:
            model = train_model(defense, data, args.width, args.epochs, steps=args.train_steps)
            ckpt.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), ckpt)
        results[name] = compare(model, data["x_test"], data["y_test"])
        print(f"[agreement] {name}: {json.dumps(results[name], indent=1)}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))
    return results


if __name__ == "__main__":
    main()
