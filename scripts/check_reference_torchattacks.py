"""Independent check of the reference run: PGD-20 with torchattacks on a reference checkpoint.

    python scripts/check_reference_torchattacks.py CHECKPOINT DATASET [--n 1000] [--model vanilla]

CHECKPOINT: a run folder's ``last.pt`` (or the folder) of the reference run; DATASET: ``cifar10``
or ``folder:<path>``, the data it was evaluated on. Runs ``torchattacks.PGD`` (eps 8/255, step
eps/10, 20 steps, no random start: the paper's PGD-20) on the first N test images of the seeded
order that ``cifs_edu.reference`` uses, and prints its accuracy beside the library's stored
per-image results for the same images (``cifs_edu.reference.load("cpu")``).
"""
from __future__ import annotations

import argparse
import sys

import torch


def main(argv: list[str] | None = None) -> int:
    import torchattacks

    from cifs_edu import reference
    from cifs_edu.tools.reference_run import reference_config
    from cifs_edu.training import load_model
    from cifs_edu.training.data import load_tensors

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint")
    p.add_argument("dataset")
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--model", default="vanilla", choices=["vanilla", "cifs"])
    p.add_argument("--name", default="cpu", help="reference results to compare with: a committed name or a results .json path")
    args = p.parse_args(argv)
    model = load_model(args.checkpoint).eval()
    cfg = reference_config("none" if args.model == "vanilla" else "cifs", args.dataset)
    data = load_tensors(cfg)
    order = reference.test_order(data.y_test.numel(), 0)[: args.n]
    x, y = data.x_test[order], data.y_test[order]
    atk = torchattacks.PGD(model, eps=8 / 255, alpha=0.8 / 255, steps=20, random_start=False)
    hits = 0
    for i in range(0, args.n, 250):
        adv = atk(x[i:i + 250], y[i:i + 250])
        with torch.no_grad():
            hits += int((model(adv).argmax(1) == y[i:i + 250]).sum())
    ours = reference.correct(reference.load(args.name), args.model, "pgd20")[: args.n]
    print(f"torchattacks PGD-20 on the first {args.n} test images: {100 * hits / args.n:.2f}%")
    print(f"cifs_edu PGD-20 (stored, same images):            {100 * ours.double().mean().item():.2f}%")
    return 0


if __name__ == "__main__":
    sys.exit(main())
