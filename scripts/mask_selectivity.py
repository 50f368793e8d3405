"""How selective are the book's CIFS masks? Every CIFS model of the book, as it ships and with the paper's mask.

For each CIFS model the chapters load (``cifs_edu.zoo.book_plan``) on a profile and seed, this
prints its clean and PGD-20 accuracy (the run's final evaluation) and the selectivity of its P2
and P1 masks on the first ``--n`` test images (:func:`cifs_edu.analysis.mask_selectivity`:
effective channels exp(H) of the normalised mask, and the mass on the top 10% of channels).
A softmax model that ships with the mask multiplied by C (``smoke``, ``laptop``) is trained a
second time with the paper's mask (sums to 1) and the authors' warm start (``--warm`` natural
epochs first), so the two can be compared side by side. Models come from the cache when they
are there (the seed is part of the key); the paper-mask twins are trained into it once.

    python scripts/mask_selectivity.py [--profile smoke] [--seed 0] [--n 500] [--warm 1] [--json out.json]
"""
from __future__ import annotations

import argparse
import json
import sys

import torch


def selectivity(run, x: torch.Tensor) -> dict[str, float]:
    """Effective channels and top-10% mass of the P2 and P1 masks on ``x`` (eval mode)."""
    from cifs_edu.analysis import mask_selectivity

    model = run.model.eval().cpu()
    with torch.no_grad():
        masks = model.forward_with_aux(x).masks
    out = {}
    for p in ("P2", "P1"):
        if p in masks:
            s = mask_selectivity(masks[p])
            out[f"{p} eff. channels"] = round(s["effective_channels"], 1)
            out[f"{p} C"] = s["channels"]
            out[f"{p} top-10% mass"] = round(s["top_mass"], 3)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--profile", default="smoke")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--n", type=int, default=500, help="test images for the masks (default 500)")
    p.add_argument("--warm", type=int, default=1, help="natural warm-start epochs of the paper-mask twin (default 1)")
    p.add_argument("--json", help="also write the rows here")
    args = p.parse_args(argv)

    import cifs_edu
    from cifs_edu.training import load_or_train
    from cifs_edu.training.data import load_tensors
    from cifs_edu.zoo import book_plan

    cifs_edu.setup(args.profile, args.seed, quiet=True)
    rows = []
    for item in book_plan(args.profile, args.seed):
        cfg = item.config
        if cfg.defense != "cifs":
            continue
        variants = {"ships": cfg}
        scale = cfg.model_options.get("scale", 1)
        if cfg.model_options.get("imgf", "softmax") == "softmax" and scale != 1:
            opts = {**cfg.model_options, "scale": 1}
            variants[f"paper mask, warm {args.warm}"] = cfg.replace(model_options=opts, warm_start_epochs=args.warm)
        x = load_tensors(cfg).x_test[: args.n]
        for label, c in variants.items():
            run = load_or_train(c, progress=False)
            last = run.metrics["last"]
            row = {"model": item.name, "variant": label, "scale": c.model_options.get("scale", 1),
                   "clean": last.get("natural"), "pgd20": last.get("pgd20"), **selectivity(run, x)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    try:
        import pandas as pd

        print(pd.DataFrame(rows).to_string(index=False))
    except ImportError:
        pass
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"profile": args.profile, "seed": args.seed, "n": args.n, "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
