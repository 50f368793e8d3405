"""The paper's tables as runnable experiments: which models to train, how to evaluate them.

>>> from cifs_edu.experiments import TABLES, table_configs
>>> list(TABLES)                                   # doctest: +SKIP
>>> table_configs("table1_cifar10_resnet18_last", "paper")["cifs"].lr   # doctest: +SKIP
0.1

Running a table (train once, evaluate, compare with the paper) is a program:
``python -m cifs_edu reproduce tableE2 --profile smoke``, or
:func:`cifs_edu.tools.reproduce.reproduce` from Python.

Each :class:`Table` lists its rows (one trained model each, as :class:`TrainConfig`
overrides), the attacks of its columns, whether the last or the best epoch is reported,
and the paper's numbers it compares with (:func:`cifs_edu.paper.paper_table`).

How a table scales with the profile:

- ``paper``: the exact recipe of the appendices -- CIFAR-10 ResNet-18: 120 epochs, lr 0.1
  (x0.1 at 75, 90), wd 2e-4; WRN-28-10: 110 epochs, wd 5e-4; SVHN ResNet-18: lr 0.01,
  wd 5e-4; Fashion-MNIST ResNet-10: eps 0.3, PGD-20 with step 0.02, lr drops at 45, 75, 90;
  all with PGD-10 (step eps/4) unless stated, batch 128, momentum 0.9, beta = 2.
  Evaluation: full test set, FGSM, PGD-20, C&W (PGD-30 on the margin), PGD-100 (step
  eps/10), CIFS/CAS under the adaptive attack, per-image worst case over the attacker's betas
  (stricter than the paper's protocol, which reports the lowest per-beta column).
- ``colab`` / ``laptop``: the same datasets (subsets on the laptop), methods and
  per-dataset learning rates and weight decays, with the profile's epochs (the
  learning-rate drops at the same fractions of training), PGD steps (same steps-to-eps
  ratio), widths (WRN widen factor ``round(10 * width / 64)``) and evaluation sizes.
- ``smoke``: every table runs on the embedded synthetic data with the smoke recipe
  (eps 8/255 even for the Fashion-MNIST table); only the architectures, defenses and
  methods of the table are kept. Its numbers exercise the pipeline; they are not
  CIFAR-10, SVHN or Fashion-MNIST results.
- ``smoke`` and ``laptop`` multiply CIFS's softmax mask by the channel count of its last
  layer (:data:`cifs_edu.profiles.MASK_SCALE_NOTE`): with the paper's mask, which sums to 1,
  a CIFS model does not leave chance accuracy within these short schedules.

Compute estimates (:func:`estimate_gpu_hours`, shown by ``python -m cifs_edu list``) are
for the ``paper`` profile on one H100. They are FLOP counts, not measurements: forward
FLOPs per image of each network (:data:`FWD_GFLOP`, counted with
``torch.utils.flop_counter``), times the forward/backward passes of training (a PGD step
costs about 2 forward passes, a training step 3), validation and the table's evaluation
(x9 for the attacker's beta sweep), divided by an assumed effective bfloat16 throughput
(:data:`H100_TFLOPS`: 55 TFLOP/s for the small ResNets at 32x32, 120 for WRN-28-10, i.e.
6% and 12% of the H100's dense peak, typical of CIFAR-size convolutions). Treat them as
+-50%; ``scripts/engine_gpu_check.py`` measures the real throughput.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping

from .losses import BETA_SWEEP
from .errors import ConfigError
from .profiles import get_profile
from .training.config import TrainConfig

__all__ = [
    "Row", "Table", "TABLES", "table_configs", "train_command", "table_attacks",
    "estimate_gpu_hours", "epoch_minutes", "FWD_GFLOP", "H100_TFLOPS", "list_tables",
]

_PAPER_EPOCHS = 120


@dataclass(frozen=True)
class Row:
    """One model of a table: its name in the paper's table and its config overrides."""

    name: str
    overrides: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Table:
    """A reproducible table.

    Attributes:
        key: registry key (the paper table's key where there is one).
        title: one line.
        paper_key: key of :func:`cifs_edu.paper.paper_table`.
        dataset, arch: of the paper's experiment (scaled by the profile).
        rows: the models.
        kind: ``"attacks"`` (a row per model, a column per attack), ``"autoattack"``,
            ``"beta_sweep"`` (Table B.3), ``"topk"`` (Table 4), ``"topk_feedback"`` (Table 5)
            or ``"scalar"`` (one PGD-20 number per model, Sec. 3.3).
        attacks: our attack names, in column order; columns: their paper column names.
        which: ``"last"`` or ``"best"`` epoch.
        note: caveats printed with the table.
    """

    key: str
    title: str
    paper_key: str
    dataset: str
    arch: str
    rows: tuple[Row, ...]
    kind: str = "attacks"
    attacks: tuple[str, ...] = ("natural", "fgsm", "pgd20", "cw", "pgd100")
    columns: tuple[str, ...] = ("natural", "fgsm", "pgd20", "cw", "pgd100")
    which: str = "last"
    note: str = ""


_AT = {"method": "pgd_at"}
_V, _CAS, _CIFS = Row("vanilla", {"defense": "none", **_AT}), Row("cas", {"defense": "cas", **_AT}), Row("cifs", {"defense": "cifs", **_AT})
_THREE = (_V, _CAS, _CIFS)
_FOUR_COLS = ("natural", "fgsm", "pgd20", "pgd100")


def _t(key: str, title: str, rows, **kw) -> Table:
    kw.setdefault("paper_key", key)
    kw.setdefault("dataset", "cifar10")
    kw.setdefault("arch", "resnet18")
    return Table(key=key, title=title, rows=tuple(rows), **kw)


_TABLE_LIST = [
    _t("table1_cifar10_resnet18_last", "Table 1 (left): CIFAR-10 ResNet-18, PGD-AT, last epoch", _THREE),
    _t("table1_cifar10_wrn28_10_last", "Table 1 (right): CIFAR-10 WRN-28-10, PGD-AT, last epoch", _THREE, arch="wrn28_10"),
    _t("table2_svhn_resnet18_last", "Table 2: SVHN ResNet-18, PGD-AT, last epoch", _THREE, dataset="svhn"),
    _t("table3_cifar10_fat_resnet18", "Table 3 (left): CIFAR-10 ResNet-18, FAT", (
        Row("vanilla", {"defense": "none", "method": "fat"}), Row("cifs", {"defense": "cifs", "method": "fat"}))),
    _t("table3_cifar10_fat_wrn28_10", "Table 3 (right): CIFAR-10 WRN-28-10, FAT", (
        Row("vanilla", {"defense": "none", "method": "fat"}), Row("cifs", {"defense": "cifs", "method": "fat"})),
        arch="wrn28_10"),
    _t("table4_topk_at_resnet18", "Table 4: top-k accuracy of a PGD-AT ResNet-18 under FGSM and PGD-20", (_V,),
       kind="topk", attacks=("fgsm", "pgd20"), columns=("top1", "top2", "top3")),
    _t("table5_topk_feedback_pgd20", "Table 5: CIFS with top-k feedback under PGD-20 (attack point / read-out)", (
        Row("vanilla", {"defense": "none", **_AT}),
        Row("top1", {"defense": "cifs", "model_options": {"k": 1}, **_AT}),
        Row("top2", {"defense": "cifs", **_AT}),
        Row("top3", {"defense": "cifs", "model_options": {"k": 3}, **_AT})),
       kind="topk_feedback", attacks=("pgd20",), columns=("natural_final", "cifs_cifs", "cifs_final", "adap_final"),
       note="CIFS/CIFS and CIFS/Final attack the P2 probe alone (beta_atk = inf-P2: the paper's inf-1, whose PGD-20 "
            "entry in Table B.3 equals Table 5's top-2 CIFS/Final) and read the probe's / the final prediction; "
            "Adap/Final is the adaptive attack (per-image worst case over beta_atk when the profile sweeps)."),
    _t("tableB1_autoattack_last", "Table B.1: AutoAttack, last epoch (ResNet-18 and WRN-28-10)", tuple(
        Row(f"{arch}:{r.name}", {**r.overrides, "arch": arch}) for arch in ("resnet18", "wrn28_10") for r in _THREE),
       kind="autoattack", attacks=("autoattack",), columns=("vanilla", "cas", "cifs"),
       note="AutoAttack on a class-balanced subset of aa_n test images (2,000 in the paper); torchattacks' "
            "standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square) on the final logits."),
    _t("tableB2_cifar10_resnet18_best", "Table B.2: CIFAR-10 ResNet-18, best epoch", _THREE, which="best",
       note="best epoch chosen on the held-out validation split (PGD), not on the test set"),
    _t("tableB2_cifar10_wrn28_10_best", "Table B.2: CIFAR-10 WRN-28-10, best epoch", _THREE, which="best",
       arch="wrn28_10", note="best epoch chosen on the held-out validation split (PGD), not on the test set"),
    _t("tableB3_beta_atk_resnet18", "Table B.3: robust accuracy per attacker beta_atk (CAS and CIFS ResNet-18)",
       (_CAS, _CIFS), kind="beta_sweep", attacks=("fgsm", "pgd20", "cw", "pgd100"),
       columns=("fgsm", "pgd20", "cw", "pgd100")),
    _t("tableB4_at_variants_resnet18", "Table B.4: AT, TRADES and FAT for vanilla and CIFS ResNet-18", (
        Row("vanilla_at", {"defense": "none", "method": "pgd_at"}),
        Row("vanilla_trades", {"defense": "none", "method": "trades"}),
        Row("vanilla_fat", {"defense": "none", "method": "fat"}),
        Row("cifs_at", {"defense": "cifs", "method": "pgd_at"}),
        Row("cifs_trades", {"defense": "cifs", "method": "trades"}),
        Row("cifs_fat", {"defense": "cifs", "method": "fat"})),
       attacks=("natural", "fgsm", "pgd20", "pgd100"), columns=_FOUR_COLS,
       note="TRADES (trades_beta = 6) for CIFS uses Eq. 3's weights on the KL terms of the final and probe outputs "
            "(our choice; the paper does not specify). FAT uses FAT's dynamic tau (0, 1, 2)."),
    _t("tableC1_svhn_autoattack", "Table C.1: SVHN ResNet-18, AutoAttack, last epoch", _THREE, dataset="svhn",
       kind="autoattack", attacks=("autoattack",), columns=("vanilla", "cas", "cifs")),
    _t("tableC2_svhn_resnet18_best", "Table C.2: SVHN ResNet-18, best epoch", _THREE, dataset="svhn", which="best"),
    _t("tableD1_fmnist_resnet10_last", "Table D.1 (top): Fashion-MNIST ResNet-10, eps 0.3, last epoch", _THREE,
       dataset="fmnist", arch="resnet10", attacks=("natural", "fgsm", "pgd20@eps/30", "pgd100@eps/15"),
       columns=("natural", "fgsm", "pgd40", "pgd100"),
       note="the paper's column says PGD-40 but its text says PGD-20 with step 0.01: we run PGD-20, step 0.01 "
            "(= eps/30), and PGD-100 with step 0.02 (= eps/15)"),
    _t("tableD1_fmnist_resnet10_best", "Table D.1 (bottom): Fashion-MNIST ResNet-10, best epoch", _THREE,
       dataset="fmnist", arch="resnet10", which="best", attacks=("natural", "fgsm", "pgd20@eps/30", "pgd100@eps/15"),
       columns=("natural", "fgsm", "pgd40", "pgd100")),
    _t("tableE1_beta_train", "Table E.1: CIFS ResNet-18 trained with different beta", (_V,) + tuple(
        Row(str(b), {"defense": "cifs", "beta": float(b), **_AT}) for b in ("0.1", "1", "2", "10", "100")),
       attacks=("natural", "fgsm", "pgd20", "pgd100"), columns=_FOUR_COLS),
    _t("tableE2_positions", "Table E.2: CIFS positions (P1 = last block, P2 = second-to-last)", (
        _V,
        Row("P1", {"defense": "cifs", "model_options": {"positions": ["P1"]}, **_AT}),
        Row("P2", {"defense": "cifs", "model_options": {"positions": ["P2"]}, **_AT}),
        Row("P1-P2", {"defense": "cifs", **_AT})),
       attacks=("natural", "fgsm", "pgd20", "pgd100"), columns=_FOUR_COLS),
    _t("tableE3_probe_arch", "Table E.3: probe architectures at (P2, P1)", (
        _V,
        Row("linear-linear", {"defense": "cifs", "model_options": {"probes": "linear"}, **_AT}),
        Row("mlp-linear", {"defense": "cifs", **_AT})),
       attacks=("natural", "fgsm", "pgd20", "pgd100"), columns=_FOUR_COLS),
    _t("section3_3_imgf_pgd20", "Sec. 3.3 / Fig. 3: PGD-20 accuracy by importance-mask function (IMGF)", (
        _V,
        Row("cifs_sigmoid_alpha10", {"defense": "cifs", "model_options": {"imgf": "sigmoid", "alpha": 10.0}, **_AT}),
        Row("cifs_softplus_alpha5", {"defense": "cifs", "model_options": {"imgf": "softplus", "alpha": 5.0}, **_AT}),
        Row("cifs_softmax_T1", {"defense": "cifs", **_AT})),
       kind="scalar", attacks=("pgd20",), columns=("pgd20",)),
]

#: Registry of reproducible tables.
TABLES: dict[str, Table] = {t.key: t for t in _TABLE_LIST}

#: Forward GFLOPs per image (multiply-adds x 2) of the paper's networks, counted with
#: ``torch.utils.flop_counter`` (ResNet-18 / WRN-28-10 on 3x32x32, ResNet-10 on 1x28x28; CIFS and
#: CAS add under 0.1%).
FWD_GFLOP = {"resnet18": 1.111, "wrn28_10": 10.49, "resnet10": 0.414}
#: Assumed effective bfloat16 throughput on one H100 (TFLOP/s) for these networks (an estimate).
H100_TFLOPS = {"resnet18": 55.0, "resnet10": 55.0, "wrn28_10": 120.0}
#: Extra cost of the CIFS / CAS layers (mask computation, probe heads; memory-bound small ops).
_DEFENSE_OVERHEAD = {"none": 1.0, "cas": 1.05, "cifs": 1.1}
_TRAIN_SIZE = {"cifar10": 50000, "svhn": 73257, "fmnist": 60000, "synthetic": 10000}
_TEST_SIZE = {"cifar10": 10000, "svhn": 26032, "fmnist": 10000, "synthetic": 2000}
_AUTOATTACK_PASSES = 2 * (100 + 9 * 100 + 9 * 100) + 5000  # APGD-CE, APGD-T, FAB-T (2 passes/step), Square


def _aliases() -> dict[str, str]:
    out = {}
    for key in TABLES:
        short = key.split("_")[0]
        out.setdefault(short, key)
    return out


def _table(key: str) -> Table:
    if key in TABLES:
        return TABLES[key]
    alias = _aliases().get(key)
    if alias is not None:
        return TABLES[alias]
    raise ConfigError(f"unknown table {key!r}; choose one of {sorted(TABLES)}")


# ---------------------------------------------------------------------- configs
def _scaled(milestones: tuple[int, ...], epochs: int) -> tuple[int, ...]:
    """Paper milestones (of 120 epochs) at the same fractions of ``epochs``, strictly increasing."""
    out: list[int] = []
    for m in milestones:
        v = max(1, min(epochs, round(m * epochs / _PAPER_EPOCHS)))
        if out and v <= out[-1]:
            v = out[-1] + 1
        if v < epochs + 1:
            out.append(v)
    return tuple(out)


def _base(table: Table, profile_name: str, arch: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The table's dataset recipe for an architecture at a profile (before the row's overrides)."""
    prof = get_profile(profile_name)
    base: dict[str, Any] = {"arch": arch}
    wrn = arch == "wrn28_10"
    if prof.is_synthetic:  # one synthetic data set stands in for every table's
        base["width"] = max(1, round(10 * prof.width / 64)) if wrn else prof.width
        return base
    paper = prof.name == "paper"
    base["width"] = 10 if (wrn and paper) else (max(1, round(10 * prof.width / 64)) if wrn else prof.width)
    if table.dataset != "cifar10" and not str(overrides.get("dataset", "")).startswith("folder:"):
        base["dataset"] = table.dataset
    epochs = overrides.get("epochs", prof.epochs)
    if wrn:
        base["weight_decay"] = 5e-4
        if paper:
            base["epochs"] = 110
    if table.dataset == "svhn":
        base.update(lr=0.01, weight_decay=5e-4)
    if table.dataset == "fmnist":
        eps = 0.3
        base.update(eps=eps, lr=0.1, weight_decay=2e-4)
        if paper:
            base.update(train_steps=20, train_step_size=0.02, milestones=(45, 75, 90))
        else:
            base.update(train_step_size=eps * prof.train_step_size / prof.eps,
                        milestones=_scaled((45, 75, 90), epochs))
    return base


def _resolve_attack(name: str, eps: float) -> str:
    if "@eps/" in name:
        head, div = name.split("@eps/")
        return f"{head}@{eps / float(div):.6g}"
    return name


def table_attacks(key: str, config: TrainConfig) -> list[str]:
    """The table's attack names for a row's config (eps-relative step sizes resolved)."""
    return [_resolve_attack(a, config.eps) for a in _table(key).attacks]


def table_configs(key: str, profile: str = "smoke", **overrides: Any) -> dict[str, TrainConfig]:
    """The :class:`TrainConfig` of every row of a table at a profile.

    ``overrides`` apply to every row after the table's recipe (e.g. ``epochs=2`` or
    ``dataset="folder:/path/cifar10"`` to use CIFAR-10 images from a folder).
    """
    table = _table(key)
    prof = get_profile(profile)
    out = {}
    for row in table.rows:
        values = _base(table, prof.name, row.overrides.get("arch", table.arch), overrides)
        values.update(row.overrides)
        values.update(overrides)
        out[row.name] = TrainConfig.from_profile(prof, **values)
    return out


def train_command(config: TrainConfig) -> str:
    """The ``python -m cifs_edu train`` command that trains exactly ``config`` (same key).

    Flags are the fields in which ``config`` differs from its profile's defaults; each
    ``model_options`` entry becomes ``--option KEY=JSON`` (``tests/test_cli.py`` parses every
    table's commands back into their configurations)."""
    import json
    import shlex

    flags = [f"--profile {config.profile}"]
    for name, (value, _) in config.differences(TrainConfig.from_profile(config.profile)).items():
        if name == "model_options":
            flags += [f"--option {shlex.quote(f'{k}={json.dumps(v)}')}" for k, v in value.items()]
        else:
            flags.append(f"--{name.replace('_', '-')} {shlex.quote(value if isinstance(value, str) else json.dumps(value))}")
    return "python -m cifs_edu train " + " ".join(flags)


# ---------------------------------------------------------------------- estimates
def _train_passes(cfg: TrainConfig) -> float:
    """Forward-pass equivalents per training image and epoch."""
    k = cfg.train_steps
    return {"standard": 3.0, "pgd_at": 2.0 * k + 3, "fat": 2.0 * k + 3, "trades": 2.0 * k + 1 + 6}[cfg.method]


def _attack_passes(name: str) -> float:
    from .evaluate import parse_attack

    spec = parse_attack(name)
    if spec.kind == "natural":
        return 1.0
    if spec.kind == "autoattack":
        return float(_AUTOATTACK_PASSES)
    return 2.0 * spec.steps + 1


def epoch_minutes(cfg: TrainConfig) -> float:
    """Estimated H100 minutes of one training epoch of ``cfg`` on its full dataset (see the module docstring)."""
    n = _TRAIN_SIZE.get(cfg.dataset, 50000) if cfg.n_train is None else cfg.n_train
    flops = n * _train_passes(cfg) * FWD_GFLOP[cfg.arch] * 1e9 * _DEFENSE_OVERHEAD[cfg.defense]
    return flops / (H100_TFLOPS[cfg.arch] * 1e12) / 60


def estimate_gpu_hours(key: str) -> float:
    """Estimated H100 hours of a table at the ``paper`` profile: training, validation and evaluation of every row."""
    table = _table(key)
    seconds = 0.0
    for cfg in table_configs(key, "paper").values():
        per_pass = FWD_GFLOP[cfg.arch] * 1e9 * _DEFENSE_OVERHEAD[cfg.defense] / (H100_TFLOPS[cfg.arch] * 1e12)
        seconds += cfg.epochs * epoch_minutes(cfg) * 60
        n_checks = math.ceil(cfg.epochs / cfg.eval_every)
        seconds += n_checks * cfg.n_val * (2.0 * cfg.val_steps + 2) * per_pass
        n_test = _TEST_SIZE.get(cfg.dataset, 10000) if cfg.eval_n is None else cfg.eval_n
        betas = len(BETA_SWEEP) if cfg.adaptive else 1
        for name in table_attacks(key, cfg):
            n = min(cfg.aa_n, n_test) if name == "autoattack" else n_test
            repeat = betas if (name not in ("natural", "autoattack") and (table.kind == "beta_sweep" or cfg.eval_sweep)) else 1
            seconds += n * _attack_passes(name) * repeat * per_pass
    return round(seconds / 3600, 1)


def list_tables() -> list[dict[str, Any]]:
    """One dict per table: key, title, rows, kind, which, estimated paper-profile GPU hours."""
    return [
        {"key": t.key, "title": t.title, "rows": [r.name for r in t.rows], "kind": t.kind, "which": t.which,
         "gpu_hours_paper": estimate_gpu_hours(t.key)}
        for t in TABLES.values()
    ]
