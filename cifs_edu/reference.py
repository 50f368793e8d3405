"""The committed reference runs on real CIFAR-10: their results, provenance and tables.

The book's live runs use the embedded synthetic data (``smoke``). Beside them it shows one
**reference run on real images, precomputed**: the ``reference-cpu`` profile (ResNet-18 of
width 16, the whole training set, two natural warm-start epochs then PGD-3 adversarial
training, 11 epochs in all), vanilla and CIFS with the same budget, schedule and seed, then
evaluated on the real test images. Its numbers ship as a small JSON file::

    from cifs_edu import reference
    ref = reference.load("cpu")                 # the committed results (a dict)
    ref["models"]["cifs"]["eval"]["sweep"]      # Table B.3 on 2,000 test images
    reference.table1(ref)                       # clean / FGSM / PGD-20 / AutoAttack per model

and the same recipe re-runs with one command (from torchvision's CIFAR-10 or an image folder)::

    python -m cifs_edu reference --dataset cifar10 --out runs/reference
    python -m cifs_edu reference --dataset folder:/data/cifar10 --out runs/reference --tiny   # minutes

The committed run used "CIFAR-10 (JPEG re-encoding)": the 60,000 CIFAR-10 images of a public
JPEG re-encoding (``scripts/unpack_cifar10_jpeg.py`` turns its one-file form into an image
folder), not the official binary. Its numbers are labelled so wherever they are shown.

The recipe and the staged evaluation that produced these files (what each stage measures, on how
many images) are :mod:`cifs_edu.tools.reference_run`'s; this module only reads them.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor

from .errors import ConfigError

__all__ = ["RECIPE", "DATA_LABEL", "load", "available", "validate", "describe", "table1", "channel_stats", "pr_nr",
           "curves", "per_class", "sweep_table", "table5", "selectivity", "report", "test_order", "correct"]

#: The profile of the reference recipe (:data:`cifs_edu.profiles.PROFILES`).
RECIPE = "reference-cpu"
#: The label every number of the committed run carries.
DATA_LABEL = "CIFAR-10 (JPEG re-encoding)"
SCHEMA = 1
_DIR = Path(__file__).with_name("data") / "reference"
_MODELS = {"vanilla": "none", "cifs": "cifs"}


# ============================================================================ reading results
def validate(record: Mapping[str, Any]) -> None:
    """Check a results dict has the schema :func:`~cifs_edu.tools.reference_run.run` writes; raise :class:`ConfigError` naming what is missing."""
    problems = []
    for key in ("schema", "name", "recipe", "seed", "data", "classes", "code_commit", "hardware", "sizes", "models"):
        if key not in record:
            problems.append(f"missing {key!r}")
    models = record.get("models", {})
    for m in _MODELS:
        if m not in models:
            problems.append(f"missing model {m!r}")
            continue
        for key in ("config", "history", "weights_sha256", "eval", "eval_time_s"):
            if key not in models[m]:
                problems.append(f"model {m!r}: missing {key!r}")
        ev = models[m].get("eval", {})
        if "attacks" in ev:
            for k in ("natural", "fgsm", "pgd20"):
                if "accuracy" not in ev["attacks"].get(k, {}):
                    problems.append(f"model {m!r}: attacks.{k}.accuracy missing")
    if record.get("schema") != SCHEMA:
        problems.append(f"schema {record.get('schema')!r} is not {SCHEMA}")
    if problems:
        raise ConfigError("reference results: " + "; ".join(problems))


def available() -> list[str]:
    """Names of the committed reference results (e.g. ``["cpu"]``)."""
    return sorted(p.stem for p in _DIR.glob("*.json"))


def load(name: str | Path = "cpu") -> dict[str, Any]:
    """The committed results of reference run ``name`` (see :func:`available`), validated; or the
    results file that :func:`~cifs_edu.tools.reference_run.run` wrote, given its path (``Path`` or a name ending in ``.json``).

    Raises:
        ConfigError: unknown name (the message lists the available ones) or a file that does not
            have the schema of :func:`~cifs_edu.tools.reference_run.run`.
    """
    path = Path(name) if isinstance(name, Path) or str(name).endswith(".json") else _DIR / f"{name}.json"
    if not path.exists():
        raise ConfigError(f"no reference results {str(name)!r} ({path} does not exist); committed ones: {available()}")
    record = json.loads(path.read_text())
    validate(record)
    return record


def test_order(n: int = 10000, seed: int = 0) -> Tensor:
    """The seeded order of the test images that every stage uses (its first ``k`` are a stage's ``k`` images)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))


def correct(record: Mapping[str, Any], model: str, attack: str = "pgd20") -> Tensor:
    """Per-image correctness (bool, in :func:`test_order`) of ``model`` under ``attack`` (``natural``/``fgsm``/``pgd20``)."""
    return torch.tensor([c == "1" for c in record["models"][model]["eval"]["attacks"][attack]["correct"]])


def describe(record: Mapping[str, Any]) -> str:
    """One line of provenance for captions: data, recipe, seed, code commit, hardware, wall times."""
    cfg = record["models"]["cifs"]["config"]
    minutes = {m: (r.get("train_time_s") or float("nan")) / 60 for m, r in record["models"].items()}
    commit = (record.get("code_commit") or "unknown")[:7]
    return (f"reference run on real data, precomputed ({record['data']['label']}): ResNet-18 width {cfg['width']}, "
            f"{cfg['epochs']} epochs ({cfg['warm_start_epochs']} natural warm-start + {cfg['epochs'] - cfg['warm_start_epochs']} "
            f"PGD-{cfg['train_steps']} AT), seed {record['seed']}, code {commit}, {record['hardware'].get('cpus')}-core CPU, "
            f"training {minutes['vanilla']:.0f} min (vanilla) / {minutes['cifs']:.0f} min (CIFS); not this build's run")


def channel_stats(record: Mapping[str, Any], model: str, cls: int):
    """The stored Fig. 1 statistics of ``model`` (``"vanilla"`` or ``"cifs"``) for class ``cls`` as a
    :class:`cifs_edu.analysis.ChannelStats` (for :func:`cifs_edu.plots.plot_channel_stats`)."""
    from .analysis import ChannelStats

    c = record["models"][model]["eval"]["channels"]["classes"][str(cls)]
    vec = lambda d: {k: torch.tensor(v) for k, v in d.items()}  # noqa: E731
    return ChannelStats(cls=cls, order=torch.tensor(c["order"]), weight=torch.tensor(c["weight"]),
                        magnitude=vec(c["magnitude"]), frequency=vec(c["frequency"]), raw_mean=vec(c.get("raw_mean", {})))


def pr_nr(record: Mapping[str, Any]) -> "Any":
    """Per model and class: mean activation of the PR (weight > 0) and NR (weight < 0) channels of
    the class, natural vs PGD-20, and their ratio (from the stored class means)."""
    import pandas as pd

    rows = {}
    for m in record["models"]:
        for k, c in record["models"][m]["eval"]["channels"]["classes"].items():
            w = torch.tensor(c["weight"])
            nat, adv = (torch.tensor(c["raw_mean"][kind]) for kind in ("natural", "adversarial"))
            for label, sel in (("PR", w > 0), ("NR", w < 0)):
                a, b = float(nat[sel].mean()), float(adv[sel].mean())
                rows[(m, record["classes"][int(k)], label)] = {"natural": a, "PGD-20": b, "PGD-20 / natural": b / a}
    return pd.DataFrame(rows).T.rename_axis(["model", "class", "channels"])


def curves(record: Mapping[str, Any]) -> "Any":
    """Training curves (Fig. 4): one row per model and epoch (train accuracy on the examples it
    trained on, validation clean and PGD accuracy, learning rate, whether the epoch was natural)."""
    import pandas as pd

    rows = [{"model": m, **h} for m, r in record["models"].items() for h in r["history"]]
    return pd.DataFrame(rows).set_index(["model", "epoch"])


def per_class(record: Mapping[str, Any], attack: str = "pgd20") -> "Any":
    """Accuracy (%) per class (rows) and model (columns) under ``attack`` (``natural``/``fgsm``/``pgd20``)."""
    import pandas as pd

    return pd.DataFrame({m: r["eval"]["attacks"][attack]["per_class"] for m, r in record["models"].items()},
                        index=record["classes"])


def sweep_table(record: Mapping[str, Any]) -> "Any":
    """Table B.3 of the CIFS model: FGSM and PGD-20 accuracy per attacker's beta, then the paper's
    per-column worst and our per-image worst."""
    import pandas as pd

    sw = record["models"]["cifs"]["eval"]["sweep"]
    t = pd.DataFrame({"FGSM": sw["fgsm"], "PGD-20": sw["pgd20"]})
    t.loc["lowest column (paper's protocol)"] = [sw["fgsm_lowest_column"]["accuracy"], sw["pgd20_lowest_column"]["accuracy"]]
    t.loc["per-image worst case (ours, stricter)"] = [sw["fgsm_per_image_worst"], sw["pgd20_per_image_worst"]]
    return t.rename_axis("beta_atk")


def table5(record: Mapping[str, Any]) -> "Any":
    """Table 5 of the CIFS model: PGD-20 accuracy (%) by attack point (rows) and output read (columns)."""
    import pandas as pd

    names = {"0": "final (beta_atk = 0)", "inf-P2": "P2 probe (inf-P2)", "inf-P1": "P1 probe (inf-P1)", "2": "joint (beta_atk = 2)"}
    outs = record["models"]["cifs"]["eval"]["sweep"]["outputs"]
    return pd.DataFrame({names[b]: {k: v for k, v in outs[b].items() if k != "purified"} for b in names if b in outs}).T


def selectivity(record: Mapping[str, Any]) -> "Any":
    """Mask selectivity of the CIFS model (:func:`cifs_edu.analysis.mask_selectivity`) per layer, natural and PGD-20 images."""
    import pandas as pd

    att = record["models"]["cifs"]["eval"]["attacks"]
    return pd.DataFrame({(kind, p): v for kind in ("natural", "pgd20") for p, v in att[kind]["selectivity"].items()}).T


def report(record: Mapping[str, Any], model: str):
    """The stored robustness report of ``model`` as a :class:`cifs_edu.report.RobustnessReport`."""
    from .report import RobustnessReport

    d = {k: v for k, v in record["models"][model]["eval"]["report"].items()
         if k not in ("summary", "worst_case_accuracy", "flag_codes")}
    return RobustnessReport.from_dict(d)


def table1(record: Mapping[str, Any]) -> "Any":
    """Table 1 of a reference run as a DataFrame: rows vanilla / CIFS; columns clean, FGSM, PGD-20
    (CIFS: lowest column over beta_atk, the paper's protocol, and the per-image worst, ours),
    full-gradient PGD-20 and AutoAttack (``NaN`` where a stage did not run)."""
    import pandas as pd

    rows = {}
    for m, r in record["models"].items():
        ev = r["eval"]
        att, sw = ev.get("attacks", {}), ev.get("sweep", {})
        row = {"clean": att.get("natural", {}).get("accuracy"), "FGSM": att.get("fgsm", {}).get("accuracy"),
               "PGD-20": att.get("pgd20", {}).get("accuracy")}
        if "pgd20_lowest_column" in sw:
            row["PGD-20, lowest beta_atk column"] = sw["pgd20_lowest_column"]["accuracy"]
            row["PGD-20, per-image worst over beta_atk"] = sw["pgd20_per_image_worst"]
        elif "plain" in sw:
            row["PGD-20, lowest beta_atk column"] = sw["plain"]["pgd20"]
            row["PGD-20, per-image worst over beta_atk"] = sw["plain"]["pgd20"]
        fg = ev.get("full_grad", {})
        row["PGD-20, full gradient"] = fg.get("per_image_worst")
        row["AutoAttack"] = ev.get("autoattack", {}).get("accuracy")
        rows[m] = row
    return pd.DataFrame(rows).T.astype(float)
