"""Device check of the training engine: CUDA paths (bf16/fp16 AMP, channels-last, resume, FAT/TRADES,
torch.compile) and PGD-AT throughput of the paper-size networks, for the GPU-hour estimates of
cifs_edu.experiments. Scratch script (not a test): about 5 minutes on one H100.

    PYTHONPATH=. OUT=/tmp/out python scripts/engine_gpu_check.py     # writes $OUT/gpu_results.json
"""
import json, os, time, tempfile, traceback
import torch
T_START = time.time()
out_dir = os.environ.get("OUT", "/tmp/out")
results = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "bf16": torch.cuda.is_bf16_supported()}
print(results, flush=True)
from cifs_edu.training import TrainConfig, train, load_model
from cifs_edu.training.loop import _amp_dtype  # noqa
home = tempfile.mkdtemp(); os.environ["CIFS_HOME"] = home

def tiny(**kw):
    v = dict(n_train=512, n_val=128, n_test=256, eval_n=256, width=16, epochs=2, batch_size=128, milestones=(1,),
             train_steps=3, val_steps=5, eval_attacks=("natural", "fgsm", "pgd20"), eval_batch_size=256)
    v.update(kw)
    return TrainConfig.from_profile("smoke", **v)

def check(name, fn):
    t = time.time()
    try:
        r = fn(); results[name] = {"ok": True, "s": round(time.time() - t, 1), **(r or {})}
    except Exception as e:
        results[name] = {"ok": False, "error": f"{type(e).__name__}: {e}", "tb": traceback.format_exc()[-1500:]}
    print(name, results[name], flush=True)

def f_amp_cifs():
    cfg = tiny(defense="cifs", method="pgd_at")
    r = train(cfg, run_dir=f"{home}/a", progress=False, device="cuda")
    p = next(r.model.parameters())
    m = load_model(f"{home}/a", device="cpu")
    x = torch.rand(4, 3, 32, 32)
    diff = (m(x) - r.model.float()(x.cuda()).cpu()).abs().max().item()
    return {"amp": str(_amp_dtype(cfg, torch.device("cuda"))), "cl": p.is_contiguous(memory_format=torch.channels_last),
            "last": r.metrics["last"], "hist": [(h["train_loss"], h["val_pgd"]) for h in r.history], "cpu_vs_cuda_logits": diff}
def f_fp16_trades():
    r = train(tiny(defense="none", method="trades", amp="fp16"), run_dir=f"{home}/b", progress=False, device="cuda")
    return {"last": r.metrics["last"], "loss": [h["train_loss"] for h in r.history]}
def f_fat_cas():
    r = train(tiny(defense="cas", method="fat", amp="bf16"), run_dir=f"{home}/c", progress=False, device="cuda")
    return {"last": r.metrics["last"]}
def f_resume():
    cfg = tiny(defense="cifs", amp="off")
    a = train(cfg, run_dir=f"{home}/r1", progress=False, device="cuda")
    train(cfg, run_dir=f"{home}/r2", progress=False, device="cuda", max_epochs=1)
    b = train(cfg, run_dir=f"{home}/r2", progress=False, device="cuda")
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return {"max_abs_diff_fp32": max((sa[k].float() - sb[k].float()).abs().max().item() for k in sa)}
def f_sweep_eval():
    r = train(tiny(defense="cifs", epochs=1, eval_sweep=True, eval_attacks=("natural", "fgsm", "pgd20", "cw", "pgd100"), eval_n=500), run_dir=f"{home}/s", progress=False, device="cuda")
    return {"eval_s_500": r.metrics["eval_time_s"], "last": r.metrics["last"]}

for name, fn in [("amp_cifs", f_amp_cifs), ("fp16_trades", f_fp16_trades), ("fat_cas", f_fat_cas), ("resume", f_resume)]:
    check(name, fn)

# throughput: PGD-10 AT epochs on paper-size models; epoch 2 timed (no validation)
def thr(arch, defense, width, steps=10, n=2560, n_eval=0):
    cfg = TrainConfig.from_profile("paper", dataset="synthetic", arch=arch, defense=defense, width=width, n_train=n,
                                   n_val=0, n_test=256, epochs=2, train_steps=steps, eval_attacks=("natural",),
                                   eval_best=False, eval_n=256)
    r = train(cfg, run_dir=f"{home}/t-{arch}-{defense}-{steps}", progress=False, device="cuda")
    s = r.history[1]["time_s"]
    return {"epoch2_s": round(s, 2), "min_per_50k_epoch": round(s * 50000 / n / 60, 3), "img_per_s": round(n / s, 1)}

for arch, defense, width, steps in [("resnet18", "none", 64, 10), ("resnet18", "cifs", 64, 10), ("resnet18", "cas", 64, 10),
                                    ("resnet10", "none", 64, 20), ("resnet10", "cifs", 64, 20),
                                    ("wrn28_10", "none", 10, 10), ("wrn28_10", "cifs", 10, 10), ("wrn28_10", "cas", 10, 10)]:
    check(f"thr_{arch}_{defense}_k{steps}", lambda: thr(arch, defense, width, steps))
check("sweep_eval", f_sweep_eval)
json.dump(results, open(os.path.join(out_dir, "gpu_results.json"), "w"), indent=1)
T0 = T_START
def f_compile():
    r = train(tiny(defense="cifs", epochs=1, compile=True), run_dir=f"{home}/comp", progress=False, device="cuda")
    return {"last": r.metrics["last"], "epoch_s": r.history[0]["time_s"]}
if time.time() - T0 < 330:
    check("compile", f_compile)
json.dump(results, open(os.path.join(out_dir, "gpu_results.json"), "w"), indent=1)
