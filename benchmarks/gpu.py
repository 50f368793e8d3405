"""GPU throughput of PGD-10 adversarial training and PGD-20 evaluation (run by ``benchmarks/gpu.sh``).

No download: synthetic CIFAR-shaped tensors (3x32x32 in [0, 1], 10 classes) made on the
device. For vanilla and CIFS ResNet-18 (width 64) at batch 128 and 512, it times PGD-10 AT
training steps exactly as the training engine runs them (``cifs_edu.training.methods``:
PGD-10 in eval mode, step 2/255, random start, then the train-mode update with Eq. 3 / CE),
with AMP (bfloat16 where supported, else float16 with a gradient scaler) and channels_last;
optionally with the attack phase on the fast copy (BatchNorm folded) and ``torch.compile``.
Then PGD-20 evaluation (``cifs_edu.attacks.PGD``, bf16 autocast) images/s.

``--graphs`` adds, next to each eager AT configuration, the same step with the attack replayed
from a CUDA graph (``TrainConfig(cuda_graphs=True)``, :class:`cifs_edu.engine.graphs.GraphedPGD`),
and checks it first: on a fixed batch, graphed vs eager adversarial examples (max abs difference,
identical pixels, identical final predictions), then a replay after an SGD step against the eager
attack on the updated model (and against the attack on the old weights, which a stale graph
would give); finally two short runs of ``train()`` on synthetic data, eager and with
``cuda_graphs=True`` (loss/accuracy per epoch and the largest weight difference). On the CPU
the graph configurations are skipped with a printed line.

Each configuration is time-boxed (``--box`` seconds, warm-up included): warm-up steps, a
probe block to estimate the step time, then blocks of steps timed with CUDA events and
synchronised only at block ends; images/s is the median over blocks. Projections: seconds
per 50,000-image epoch (training steps only, no validation) and for 120 epochs. The whole
script stops starting new configurations when ``--cap`` seconds are used; results are
printed as they come and written to ``$OUT/gpu_bench.json`` (when ``OUT`` is set) after
every configuration.

    bash benchmarks/gpu.sh                 # on the GPU machine
    bash benchmarks/gpu.sh --graphs --fast-attack none --no-eval   # eager vs CUDA-graph attack
    python -m benchmarks.gpu --cpu --tiny  # a functional check on the CPU (tests do this)
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from .steps import make_steps
from .timing import machine_info

EPOCH_IMAGES = 50_000
EPOCHS = 120


def _log(msg: str) -> None:
    print(msg, flush=True)


class Clock:
    """Elapsed seconds of device work between two points, synchronising only there."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def __enter__(self):
        if self.device.type == "cuda":
            self.start, self.end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            self.start.record()
        else:
            self.t0 = time.perf_counter()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            self.end.record()
            self.end.synchronize()
            self.seconds = self.start.elapsed_time(self.end) / 1e3
        else:
            self.seconds = time.perf_counter() - self.t0
        return False


def time_boxed(step, batch: int, device: torch.device, box: float, warmup: int = 2, max_blocks: int = 5,
               min_steps: int = 1) -> dict:
    """Images/s of ``step()`` (one batch each) within about ``box`` seconds."""
    t_start = time.perf_counter()
    with Clock(device) as c:
        for _ in range(warmup):
            step()
    warm_s = c.seconds
    with Clock(device) as c:
        step()
    per_step = max(c.seconds, 1e-6)
    left = box - (time.perf_counter() - t_start)
    blocks = max(1, min(max_blocks, int(left / max(per_step * 3, 1e-6))))
    n = max(min_steps, int(left / blocks / per_step))
    rates, steps_done = [], 0
    for _ in range(blocks):
        with Clock(device) as c:
            for _ in range(n):
                step()
        rates.append(n * batch / c.seconds)
        steps_done += n
        if time.perf_counter() - t_start > box * 1.5:
            break
    ips = statistics.median(rates)
    return {"images_per_s": ips, "images_per_s_blocks": rates, "steps_per_block": n, "blocks": len(rates),
            "timed_steps": steps_done, "probe_step_s": per_step, "warmup_s": warm_s,
            "wall_s": time.perf_counter() - t_start}


def _amp_dtype(device: torch.device, choice: str) -> torch.dtype | None:
    if choice == "off":
        return None
    if choice == "bf16":
        return torch.bfloat16
    if choice == "fp16":
        return torch.float16
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0])
    p.add_argument("--cpu", action="store_true", help="run on the CPU (functional check)")
    p.add_argument("--tiny", action="store_true", help="width 4, batches 8/16, 2-second boxes (functional check)")
    p.add_argument("--width", type=int, default=64)
    p.add_argument("--batches", default="128,512")
    p.add_argument("--defenses", default="vanilla,cifs")
    p.add_argument("--at-steps", type=int, default=10)
    p.add_argument("--eval-steps", type=int, default=20)
    p.add_argument("--eval-batch", type=int, default=512)
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"))
    p.add_argument("--no-channels-last", action="store_true")
    p.add_argument("--fast-attack", default="512", help="batches also timed with the attack phase on the "
                   "BN-folded fast copy ('' or 'none' for none)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd training forward (slow to start)")
    p.add_argument("--graphs", action="store_true", help="also time the AT step with the attack replayed from a CUDA "
                   "graph (TrainConfig(cuda_graphs=True)) and check it against the eager attack (CUDA only)")
    p.add_argument("--no-eval", action="store_true", help="skip the PGD-20 evaluation configurations")
    p.add_argument("--box", type=float, default=35.0, help="seconds per configuration")
    p.add_argument("--cap", type=float, default=380.0, help="no new configuration after this many seconds")
    p.add_argument("--out", type=Path, default=None, help="folder for gpu_bench.json (default: $OUT)")
    args = p.parse_args(argv)
    if args.tiny:  # smaller defaults; options given explicitly win
        given = set(a.split("=")[0] for a in (sys.argv[1:] if argv is None else argv) if a.startswith("--"))
        tiny = {"width": 4, "batches": "8,16", "box": 2.0, "eval_batch": 16, "fast_attack": "16",
                "at_steps": 2, "eval_steps": 3}
        for key, value in tiny.items():
            if "--" + key.replace("_", "-") not in given:
                setattr(args, key, value)
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    t_begin = time.perf_counter()
    if args.cpu:
        device = torch.device("cpu")
    elif torch.cuda.is_available():
        device = torch.device("cuda")
    else:
        raise SystemExit("no CUDA device: run with --cpu for a functional check")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    amp = _amp_dtype(device, args.amp)
    cl = not args.no_channels_last
    batches = [int(b) for b in args.batches.split(",") if b]
    fast_batches = {int(b) for b in args.fast_attack.split(",") if b and b.lower() != "none"}
    defenses = [d for d in args.defenses.split(",") if d]
    out_dir = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    result = {"machine": machine_info(device), "argv": list(sys.argv[1:] if argv is None else argv),
              "amp": str(amp), "channels_last": cl, "width": args.width, "at_steps": args.at_steps,
              "epoch_images": EPOCH_IMAGES, "epochs": EPOCHS, "cudnn_benchmark": device.type == "cuda",
              "training": [], "evaluation": [], "skipped": []}
    graphs = args.graphs and device.type == "cuda"
    _log(f"[gpu] {result['machine'].get('gpu', 'cpu')} | torch {torch.__version__} | amp {amp} | channels_last {cl}"
         f" | width {args.width} | box {args.box:.0f} s | cap {args.cap:.0f} s")

    def save():
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "gpu_bench.json").write_text(json.dumps(result, indent=1))

    if args.graphs and not graphs:
        _log(f"[gpu] --graphs: skipped on {device.type} (CUDA graphs need a CUDA device)")
        result["skipped"].append("graphs (no CUDA device)")
    if graphs:
        result["graph_checks"] = []
        for d in defenses:
            try:
                chk = graph_check(d, args.width, batches[0], args.at_steps, device, amp, cl)
            except Exception as e:  # noqa: BLE001 - report and go on
                chk = {"defense": d, "batch": batches[0], "error": f"{type(e).__name__}: {e}"}
            result["graph_checks"].append(chk)
            _log(_check_line(chk))
        save()

    plan = []  # (kind, defense, batch, fast attack, compile, graphs)
    for b in batches:
        for d in defenses:
            plan.append(("train", d, b, False, False, False))
            if graphs:
                plan.append(("train", d, b, False, False, True))
    for b in batches:
        if b in fast_batches:
            for d in defenses:
                plan.append(("train", d, b, True, False, False))
    if not args.no_eval:
        for d in defenses:
            plan.append(("eval", d, args.eval_batch, True, False, False))
    if args.compile:
        for d in defenses:
            plan.append(("train", d, max(batches), False, True, False))

    for kind, d, b, fast, comp, graph in plan:
        label = (f"{kind} {d} b={b}" + (" fast-attack" if fast and kind == "train" else "") + (" compile" if comp else "")
                 + (" graphs" if graph else ""))
        used = time.perf_counter() - t_begin
        if used > args.cap:
            result["skipped"].append(label)
            _log(f"[gpu] {label}: skipped (time cap: {used:.0f} s used)")
            continue
        try:
            if kind == "train":
                steps = make_steps(d, args.width, b, at_steps=args.at_steps, device=device, amp=amp, channels_last=cl,
                                   fast_attack=fast, compile=comp, graphs=graph)
                r = time_boxed(steps["at"], b, device, args.box, warmup=1 if args.tiny else 2)
                epoch_s = EPOCH_IMAGES / r["images_per_s"]
                r.update({"defense": d, "batch": b, "fast_attack": fast, "compile": comp, "graphs": graph,
                          "epoch_s": epoch_s, "epochs_120_s": EPOCHS * epoch_s})
                if graph:
                    gr = steps["graphed"]
                    r.update({"graph_capture_s": gr.capture_s, "graph_replays": gr.replays,
                              "graph_eager_calls": gr.eager_calls})
                result["training"].append(r)
                _log(f"[gpu] PGD-{args.at_steps} AT {label}: {r['images_per_s']:.0f} img/s -> {epoch_s:.1f} s/epoch, "
                     f"{EPOCHS * epoch_s / 60:.1f} min/120 epochs  (blocks {[round(v) for v in r['images_per_s_blocks']]},"
                     f" warm-up {r['warmup_s']:.1f} s"
                     + (f", capture {r['graph_capture_s']:.1f} s, {r['graph_replays']} replays" if graph else "") + ")")
            else:
                r = _eval_config(d, args.width, b, args.eval_steps, device, amp, args.box)
                result["evaluation"].append(r)
                _log(f"[gpu] PGD-{args.eval_steps} eval {label}: {r['images_per_s']:.0f} img/s "
                     f"(10k test images: {10_000 / r['images_per_s']:.1f} s)")
        except Exception as e:  # noqa: BLE001 - report and go on with the next configuration
            result.setdefault("errors", []).append({"config": label, "error": f"{type(e).__name__}: {e}"})
            _log(f"[gpu] {label}: ERROR {type(e).__name__}: {e}")
            if device.type == "cuda":
                torch.cuda.empty_cache()
        save()
    if graphs:
        try:
            result["graph_engine_check"] = engine_check(device)
        except Exception as e:  # noqa: BLE001 - report
            result["graph_engine_check"] = {"error": f"{type(e).__name__}: {e}"}
        _log(_engine_line(result["graph_engine_check"]))
        save()
    result["total_s"] = time.perf_counter() - t_begin
    _log(summary(result))
    _log(f"[gpu] done in {result['total_s']:.0f} s" + (f"; wrote {out_dir / 'gpu_bench.json'}" if out_dir else ""))
    save()
    if result.get("errors"):
        _log(f"[gpu] {len(result['errors'])} configuration(s) failed")
    return result


def summary(result: dict) -> str:
    """The results as a small text table (training: images/s, s/epoch, 120 epochs; evaluation: images/s)."""
    lines = [f"\nPGD-{result['at_steps']} AT, ResNet-18 w{result['width']}, amp {result['amp']}, "
             f"channels_last {result['channels_last']} ({result['machine'].get('gpu', result['machine']['device'])}):",
             f"{'defense':8s} {'batch':>5s} {'attack':>11s} {'img/s':>8s} {'s/epoch':>8s} {'120 ep (min)':>12s}  goal <= 20 s/epoch"]
    for r in result["training"]:
        attack = "fast copy" if r["fast_attack"] else "cuda graph" if r.get("graphs") else "engine"
        lines.append(f"{r['defense']:8s} {r['batch']:5d} {attack:>11s} "
                     f"{r['images_per_s']:8.0f} {r['epoch_s']:8.1f} {r['epochs_120_s'] / 60:12.1f}  "
                     f"{'met' if r['epoch_s'] <= 20 else 'not met'}" + (" (compiled)" if r.get("compile") else ""))
    for r in result["evaluation"]:
        lines.append(f"PGD-{r['steps']} eval {r['defense']:8s} batch {r['batch']}: {r['images_per_s']:.0f} img/s")
    for c in result.get("graph_checks", []):
        lines.append(_check_line(c))
    if "graph_engine_check" in result:
        lines.append(_engine_line(result["graph_engine_check"]))
    if result["skipped"]:
        lines.append(f"skipped: {', '.join(result['skipped'])}")
    return "\n".join(lines)


# ---------------------------------------------------------------------- CUDA-graph checks
def _compare(eager: torch.Tensor, graphed: torch.Tensor, model: torch.nn.Module, autocast) -> dict:
    """Max abs difference, identical pixels and identical final predictions (eval mode) of two example sets."""
    was = model.training
    model.eval()
    with torch.no_grad(), autocast():
        pe, pg = model(eager).argmax(1), model(graphed).argmax(1)
    model.train(was)
    return {"max_abs_diff": float((eager.float() - graphed.float()).abs().max()),
            "identical_pixels": float((eager == graphed).float().mean()),
            "bitwise_equal": bool(torch.equal(eager, graphed)),
            "identical_predictions": float((pe == pg).float().mean())}


def graph_check(defense: str, width: int, batch: int, at_steps: int, device: torch.device, amp, channels_last: bool,
                seed: int = 0) -> dict:
    """Graphed vs eager training attack on fixed batches, before and after an SGD step.

    ``first``: the capturing call vs ``pgd_examples`` on the same batch and noise.
    ``after_step``: after one SGD step (lr 0.1, on the graphed examples), a replay on a new
    batch vs the eager attack on the updated model; ``stale`` compares that replay with the
    eager attack on the *old* weights (what a graph that did not see the update would give:
    it should differ). On the CPU ``GraphedPGD`` runs eagerly, so everything is equal.
    """
    from cifs_edu.engine.graphs import GraphedPGD
    from cifs_edu.training.methods import TrainForward, batch_loss, pgd_examples

    from .steps import DEFENSES, _config

    name, options = DEFENSES[defense]
    cfg = _config(name, width, batch, at_steps, options)
    mf = torch.channels_last if channels_last else torch.contiguous_format
    torch.manual_seed(seed)
    model = cfg.build_model(3, 10).to(device).to(memory_format=mf).train()
    autocast = (lambda: torch.autocast(device.type, dtype=amp)) if amp is not None else contextlib.nullcontext
    g = torch.Generator(device=device).manual_seed(seed)

    def new_batch():
        x = torch.rand(batch, 3, 32, 32, generator=g, device=device).contiguous(memory_format=mf)
        y = torch.randint(0, 10, (batch,), generator=g, device=device)
        noise = (torch.rand(batch, 3, 32, 32, generator=g, device=device) * 2 - 1).contiguous(memory_format=mf)
        return x, y, (lambda kind: noise)

    graphed = GraphedPGD(model, cfg, autocast)
    x, y, draw = new_batch()
    eager = pgd_examples(model, x, y, cfg, draw, autocast)
    graph = graphed(x, y, draw)
    out = {"defense": defense, "batch": batch, "steps": at_steps, "captured": graphed.captured,
           "capture_s": graphed.capture_s, "first": _compare(eager, graph, model, autocast)}
    x2, y2, draw2 = new_batch()
    before = pgd_examples(model, x2, y2, cfg, draw2, autocast)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=cfg.weight_decay)
    scaler = torch.amp.GradScaler(device.type, enabled=amp == torch.float16)
    model.train()
    optimizer.zero_grad(set_to_none=True)
    per_example, _ = batch_loss(TrainForward(model), x, graph, y, cfg, autocast)
    scaler.scale(per_example.mean()).backward()
    scaler.step(optimizer)
    scaler.update()
    eager2 = pgd_examples(model, x2, y2, cfg, draw2, autocast)
    graph2 = graphed(x2, y2, draw2)
    out["after_step"] = _compare(eager2, graph2, model, autocast)
    out["stale"] = _compare(before, graph2, model, autocast)
    out["replays"], out["eager_calls"] = graphed.replays, graphed.eager_calls
    return out


def _check_line(c: dict) -> str:
    head = f"[gpu] graph check {c['defense']} b={c['batch']}"
    if "error" in c:
        return f"{head}: ERROR {c['error']}"
    f, a, st = c["first"], c["after_step"], c["stale"]
    return (f"{head} (captured {c['captured']}): graphed vs eager max|diff| {f['max_abs_diff']:.3g}, "
            f"pixels equal {100 * f['identical_pixels']:.2f}%, predictions equal {100 * f['identical_predictions']:.2f}%"
            f" | replay after an SGD step vs eager on the updated model: max|diff| {a['max_abs_diff']:.3g}, "
            f"pixels equal {100 * a['identical_pixels']:.2f}%, predictions equal {100 * a['identical_predictions']:.2f}%"
            f" | vs the old weights (a stale graph): max|diff| {st['max_abs_diff']:.3g}, "
            f"pixels equal {100 * st['identical_pixels']:.2f}%")


def engine_check(device: torch.device, defense: str = "cifs", epochs: int = 2) -> dict:
    """``train()`` twice on synthetic data (600 images, batch 128: 4 graphed batches and an eager
    88-image batch per epoch), eager and with ``cuda_graphs=True``: per-epoch loss/accuracy and the
    largest difference of the final weights. CUDA only."""
    from cifs_edu.training import TrainConfig, train

    if device.type != "cuda":
        return {"skipped": f"needs CUDA (device {device})"}
    old = os.environ.get("CIFS_HOME")
    out: dict = {"defense": defense, "epochs": epochs}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["CIFS_HOME"] = tmp
        try:
            runs = {}
            for graphs in (False, True):
                cfg = TrainConfig.from_profile("smoke", defense=defense, n_train=600, n_val=0, n_test=64,
                                               epochs=epochs, milestones=(), eval_attacks=("natural",), eval_n=64,
                                               eval_best=False, cuda_graphs=graphs)
                t0 = time.perf_counter()
                runs[graphs] = train(cfg, run_dir=Path(tmp) / f"run-{graphs}", resume=False, progress=False,
                                     device="cuda")
                out["graphs" if graphs else "eager"] = {
                    "history": [{k: h[k] for k in ("epoch", "train_loss", "train_acc", "time_s")}
                                for h in runs[graphs].history],
                    "wall_s": time.perf_counter() - t0}
            a, b = runs[False].model.state_dict(), runs[True].model.state_dict()
            out["max_weight_diff"] = max(float((a[k].float() - b[k].float()).abs().max()) for k in a
                                         if a[k].is_floating_point())
            out["same_key"] = runs[False].config.key() == runs[True].config.key()
        finally:
            if old is None:
                os.environ.pop("CIFS_HOME", None)
            else:
                os.environ["CIFS_HOME"] = old
    return out


def _engine_line(c: dict) -> str:
    if "error" in c or "skipped" in c:
        return f"[gpu] train() eager vs cuda_graphs: {c.get('error') or c.get('skipped')}"
    e, g = c["eager"]["history"], c["graphs"]["history"]
    per = "; ".join(f"epoch {x['epoch']}: loss {x['train_loss']:.5f} vs {y['train_loss']:.5f}, "
                    f"acc {x['train_acc']:.2f} vs {y['train_acc']:.2f}" for x, y in zip(e, g))
    return (f"[gpu] train() {c['defense']} eager vs cuda_graphs ({c['epochs']} epochs, synthetic): {per}; "
            f"max |weight diff| {c['max_weight_diff']:.3g}")


def _eval_config(defense: str, width: int, batch: int, steps: int, device: torch.device, amp, box: float) -> dict:
    from cifs_edu.attacks import PGD
    from cifs_edu.models import build_model

    torch.manual_seed(0)
    model = build_model("resnet18", defense={"vanilla": "none"}.get(defense, defense), width=width).to(device).eval()
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.rand(batch, 3, 32, 32, generator=g, device=device)
    y = torch.randint(0, 10, (batch,), generator=g, device=device)
    atk = PGD(model, 8 / 255, steps=steps, amp=amp is not None and device.type == "cuda")
    r = time_boxed(lambda: atk(x, y), batch, device, box, warmup=1, max_blocks=3)
    r.update({"defense": defense, "batch": batch, "steps": steps, "amp": atk.amp})
    return r


if __name__ == "__main__":
    main()
