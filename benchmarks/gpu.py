"""GPU throughput of PGD-10 adversarial training and PGD-20 evaluation (run by ``benchmarks/gpu.sh``).

No download: synthetic CIFAR-shaped tensors (3x32x32 in [0, 1], 10 classes) made on the
device. For vanilla and CIFS ResNet-18 (width 64) at batch 128 and 512, it times PGD-10 AT
training steps exactly as the training engine runs them (``cifs_edu.training.methods``:
PGD-10 in eval mode, step 2/255, random start, then the train-mode update with Eq. 3 / CE),
with AMP (bfloat16 where supported, else float16 with a gradient scaler) and channels_last;
optionally with the attack phase on the fast copy (BatchNorm folded) and ``torch.compile``.
Then PGD-20 evaluation (``cifs_edu.attacks.PGD``, bf16 autocast) images/s.

Each configuration is time-boxed (``--box`` seconds, warm-up included): warm-up steps, a
probe block to estimate the step time, then blocks of steps timed with CUDA events and
synchronised only at block ends; images/s is the median over blocks. Projections: seconds
per 50,000-image epoch (training steps only, no validation) and for 120 epochs. The whole
script stops starting new configurations when ``--cap`` seconds are used; results are
printed as they come and written to ``$OUT/gpu_bench.json`` (when ``OUT`` is set) after
every configuration.

    bash benchmarks/gpu.sh                 # on the GPU machine
    python -m benchmarks.gpu --cpu --tiny  # a functional check on the CPU (tests do this)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
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
                   "BN-folded fast copy ('' for none)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd training forward (slow to start)")
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
    fast_batches = {int(b) for b in args.fast_attack.split(",") if b}
    defenses = [d for d in args.defenses.split(",") if d]
    out_dir = args.out or (Path(os.environ["OUT"]) if os.environ.get("OUT") else None)
    result = {"machine": machine_info(device), "argv": list(sys.argv[1:] if argv is None else argv),
              "amp": str(amp), "channels_last": cl, "width": args.width, "at_steps": args.at_steps,
              "epoch_images": EPOCH_IMAGES, "epochs": EPOCHS, "cudnn_benchmark": device.type == "cuda",
              "training": [], "evaluation": [], "skipped": []}
    _log(f"[gpu] {result['machine'].get('gpu', 'cpu')} | torch {torch.__version__} | amp {amp} | channels_last {cl}"
         f" | width {args.width} | box {args.box:.0f} s | cap {args.cap:.0f} s")

    def save():
        if out_dir is not None:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / "gpu_bench.json").write_text(json.dumps(result, indent=1))

    plan = []
    for b in batches:
        for d in defenses:
            plan.append(("train", d, b, False, False))
    for b in batches:
        if b in fast_batches:
            for d in defenses:
                plan.append(("train", d, b, True, False))
    for d in defenses:
        plan.append(("eval", d, args.eval_batch, True, False))
    if args.compile:
        for d in defenses:
            plan.append(("train", d, max(batches), False, True))

    for kind, d, b, fast, comp in plan:
        label = f"{kind} {d} b={b}" + (" fast-attack" if fast and kind == "train" else "") + (" compile" if comp else "")
        used = time.perf_counter() - t_begin
        if used > args.cap:
            result["skipped"].append(label)
            _log(f"[gpu] {label}: skipped (time cap: {used:.0f} s used)")
            continue
        try:
            if kind == "train":
                steps = make_steps(d, args.width, b, at_steps=args.at_steps, device=device, amp=amp, channels_last=cl,
                                   fast_attack=fast, compile=comp)
                r = time_boxed(steps["at"], b, device, args.box, warmup=1 if args.tiny else 2)
                epoch_s = EPOCH_IMAGES / r["images_per_s"]
                r.update({"defense": d, "batch": b, "fast_attack": fast, "compile": comp,
                          "epoch_s": epoch_s, "epochs_120_s": EPOCHS * epoch_s})
                result["training"].append(r)
                _log(f"[gpu] PGD-{args.at_steps} AT {label}: {r['images_per_s']:.0f} img/s -> {epoch_s:.1f} s/epoch, "
                     f"{EPOCHS * epoch_s / 60:.1f} min/120 epochs  (blocks {[round(v) for v in r['images_per_s_blocks']]},"
                     f" warm-up {r['warmup_s']:.1f} s)")
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
        lines.append(f"{r['defense']:8s} {r['batch']:5d} {'fast copy' if r['fast_attack'] else 'engine':>11s} "
                     f"{r['images_per_s']:8.0f} {r['epoch_s']:8.1f} {r['epochs_120_s'] / 60:12.1f}  "
                     f"{'met' if r['epoch_s'] <= 20 else 'not met'}" + (" (compiled)" if r.get("compile") else ""))
    for r in result["evaluation"]:
        lines.append(f"PGD-{r['steps']} eval {r['defense']:8s} batch {r['batch']}: {r['images_per_s']:.0f} img/s")
    if result["skipped"]:
        lines.append(f"skipped (time cap): {', '.join(result['skipped'])}")
    return "\n".join(lines)


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
