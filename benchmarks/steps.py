"""Train step, attack step and PGD-10 adversarial-training step of the training engine.

What is timed is the engine's own code (``cifs_edu.training.methods``): ``pgd_examples``
(the training attack, eval mode), ``TrainForward`` + ``batch_loss`` (train-mode forward and
Eq. 3 / CE) and, as in ``cifs_edu.training.loop.train``'s batch loop, ``zero_grad``,
``backward`` (through a ``GradScaler``, active only for float16) and the SGD step. The
engine has no separate step function: :func:`make_steps` repeats the loop body's lines.

- ``train``: one forward/backward/update on clean inputs (``batch_loss`` on ``x``);
- ``attack``: one input-gradient step of the training attack (``pgd_examples`` with 1 step);
- ``at``: the full PGD-AT step (PGD-``at_steps`` attack, step 2/255, random start, then the update).

Options that the engine does not have (yet) are flags here: ``channels_last`` on the CPU
(the engine's ``"auto"`` uses it on CUDA only) and ``fast_attack`` (the attack phase on
:func:`cifs_edu.engine.fast.fast_copy`: BatchNorm folded, channels_last, frozen parameters).
``graphs`` runs the attack as ``TrainConfig(cuda_graphs=True)`` does
(:class:`cifs_edu.engine.graphs.GraphedPGD`: captured on the first call, replayed after; eager
on the CPU); the returned dict then also holds the ``"graphed"`` object.
"""
from __future__ import annotations

import contextlib
from typing import Callable

import torch

from .timing import measure_interleaved

__all__ = ["DEFENSES", "make_steps", "run"]

#: name -> (defense, extra build_model options)
DEFENSES = {
    "vanilla": ("none", {}),
    "cas": ("cas", {}),
    "cifs": ("cifs", {}),
    "cifs_autograd": ("cifs", {"relevance": "autograd"}),
}


def _config(defense: str, width: int, batch: int, steps: int, options: dict):
    from cifs_edu.training.config import TrainConfig

    return TrainConfig(defense=defense, width=width, batch_size=batch, method="pgd_at", train_steps=steps,
                       train_step_size=2 / 255, eps=8 / 255, random_start=True, lr=0.01, model_options=options)


def make_steps(name: str, width: int = 64, batch: int = 128, *, at_steps: int = 10, device: str | torch.device = "cpu",
               amp: torch.dtype | None = None, channels_last: bool = False, fast_attack: bool = False,
               compile: bool = False, graphs: bool = False, seed: int = 0) -> dict[str, Callable[[], None]]:
    """``{"train": fn, "attack": fn, "at": fn}`` for ResNet-18 with defense ``name`` (a key of
    :data:`DEFENSES`) on a fixed random CIFAR-shaped batch; each ``fn()`` runs one step.

    ``amp``: autocast dtype on CUDA (``torch.bfloat16`` / ``torch.float16``; float16 uses a
    gradient scaler), ``None`` for float32.
    """
    from cifs_edu.engine.fast import fast_copy
    from cifs_edu.engine.graphs import GraphedPGD
    from cifs_edu.training.methods import TrainForward, batch_loss, pgd_examples

    if graphs and fast_attack:
        raise ValueError("graphs and fast_attack exclude each other (the fast copy is a new model at every step)")
    defense, options = DEFENSES[name]
    device = torch.device(device)
    cfg_at = _config(defense, width, batch, at_steps, options)
    cfg_one = _config(defense, width, batch, 1, options)
    torch.manual_seed(seed)
    model = cfg_at.build_model(3, 10).to(device)
    mf = torch.channels_last if channels_last else torch.contiguous_format
    model = model.to(memory_format=mf)
    g = torch.Generator(device=device).manual_seed(seed)
    x = torch.rand(batch, 3, 32, 32, generator=g, device=device).contiguous(memory_format=mf)
    y = torch.randint(0, 10, (batch,), generator=g, device=device)
    optimizer = torch.optim.SGD(model.parameters(), lr=cfg_at.lr, momentum=cfg_at.momentum,
                                weight_decay=cfg_at.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp is not None else contextlib.nullcontext
    forward: torch.nn.Module = TrainForward(model)
    if compile:
        forward = torch.compile(forward)
    stats = {"loss": torch.zeros((), device=device, dtype=torch.float64),
             "hits": torch.zeros((), device=device, dtype=torch.float64)}

    def draw(kind: str) -> torch.Tensor:
        t = torch.empty_like(x)
        return t.uniform_(-1.0, 1.0) if kind == "uniform" else t.normal_()

    def attack_model() -> torch.nn.Module:
        if not fast_attack:
            return model
        model.eval()
        net = fast_copy(model, fold_bn=True, channels_last=channels_last).model
        model.train()
        return net

    def update(x_in: torch.Tensor) -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        per_example, logits = batch_loss(forward, x, x_in, y, cfg_at, autocast)
        loss = per_example.sum() / batch
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        stats["loss"] += per_example.detach().sum()  # accumulated on the device, as the engine does
        stats["hits"] += (logits.detach().argmax(1) == y).sum()

    def train() -> None:
        update(x)

    def attack() -> None:
        pgd_examples(attack_model(), x, y, cfg_one, draw, autocast)

    graphed = GraphedPGD(model, cfg_at, autocast) if graphs else None

    def at() -> None:
        if graphed is not None:
            x_adv = graphed(x, y, draw)
        else:
            x_adv = pgd_examples(attack_model(), x, y, cfg_at, draw, autocast)
        update(x_adv)

    steps = {"train": train, "attack": attack, "at": at}
    if graphed is not None:
        steps["graphed"] = graphed
    return steps


def run(widths=(64, 8), batch: int = 128, defenses=("vanilla", "cas", "cifs", "cifs_autograd"),
        kinds=("train", "attack", "at"), repeats: int = 5, warmup: int = 1, at_repeats: int = 3,
        at_widths=None, at_steps: int = 10, variants=("engine",), log=print) -> list[dict]:
    """Time every (variant, width, kind) for all defenses, interleaved; ratios are to vanilla.

    ``variants``: ``"engine"`` (as the engine runs on this device: float32, contiguous),
    ``"engine+cl"`` (channels_last), ``"engine+cl+fastatk"`` (channels_last and the attack
    phase on the fast copy). ``at_widths`` (default: all ``widths``) limits the slow AT step.
    """
    rows = []
    at_widths = widths if at_widths is None else at_widths
    flags = {"engine": {}, "engine+cl": {"channels_last": True},
             "engine+cl+fastatk": {"channels_last": True, "fast_attack": True},
             "engine+fastatk": {"fast_attack": True}}
    for variant in variants:
        for width in widths:
            steps = {d: make_steps(d, width, batch, at_steps=at_steps, **flags[variant]) for d in defenses}
            for kind in kinds:
                if kind == "at" and width not in at_widths:
                    continue
                if kind != "at" and variant.endswith("fastatk") and kind == "train":
                    continue  # identical to engine+cl
                n = at_repeats if kind == "at" else repeats
                # the AT step only repeats what train/attack already warmed up (same models)
                warm = 0 if kind == "at" and {"train", "attack"} & set(kinds) else warmup
                label = f"{kind}[{variant}] w={width} b={batch}" + (f" pgd{at_steps}" if kind == "at" else "")
                log(f"[steps] {label}: {', '.join(defenses)} x {n} (+{warm} warm-up)")
                fns = {d: steps[d][kind] for d in defenses}
                st = measure_interleaved(fns, repeats=n, warmup=warm, per={d: batch for d in defenses})
                base = st.get("vanilla")
                for d in defenses:
                    s = st[d]
                    rows.append({
                        "benchmark": "steps", "case": f"{kind} {d}", "kind": kind, "defense": d, "variant": variant,
                        "width": width, "batch": batch, "at_steps": at_steps if kind == "at" else None,
                        **s.summary(),
                        "ratio": (s.median / base.median) if base is not None else None,
                        "cpu_ratio": (s.cpu_median / base.cpu_median) if base is not None else None,
                        "ratio_to": "vanilla" if base is not None else None,
                    })
                    log(f"    {d:14s} median {s.median:.4f} s (min {s.min:.4f}, max {s.max:.4f}, cpu {s.cpu_median:.4f})"
                        + (f"  x{rows[-1]['ratio']:.3f} vs vanilla (cpu x{rows[-1]['cpu_ratio']:.3f})" if base else ""))
    return rows
