r"""Is the robustness real? A robustness report with gradient-masking checks (beyond the paper).

CIFS builds its mask from a gradient of a probe, detaches it from the input (in the authors'
code) and chooses classes with a top-k: exactly the ingredients that can make gradient-based
attacks look weaker than they are. :func:`robustness_report` runs the checks that careful
evaluators ask for (Carlini et al., 2019; Athalye et al., 2018; Tramer et al., 2020; the
sanity checks built into AutoAttack, Croce & Hein, 2020) and returns a
:class:`RobustnessReport` with a table, flags and the per-example worst case.

Checks (``ReportConfig.checks``), in the order they run:

``sanity``
    the input gradient of the logit margin is not exactly zero; two forward passes agree
    (a randomised model needs EOT); ``model(x)`` returns logits, not probabilities.
``eps_sweep``
    PGD (random start, step ``2.5 eps / steps``, Madry et al.'s rule) for a grid of eps up to
    8x the nominal one: accuracy must fall to about 0 and must not rise with eps.
``saturation``
    PGD with a growing number of steps (step ``2.5 eps / steps``, no random start) and PGD
    with random restarts: accuracy must stop falling. APGD-CE and APGD-DLR (torchattacks,
    logits only) are run beside them for reference.
``black_box``
    the Square attack (no gradients at all) must not beat the best white-box attack.
``transfer``
    PGD crafted on a *surrogate* (a vanilla adversarially trained model) and evaluated on
    the target must not beat the best white-box attack.
``adaptive``
    (models with CIFS/CAS probes) PGD (the paper's PGD-20, step eps/10) and our APGD on the
    joint loss of Eq. 3 for every attacker's beta, worst case per example, with the mask
    ``"detached"`` (the paper's evaluation), with ``"full"`` gradients through the relevance
    and the mask, and with the mask frozen at its clean-input value (BPDA-style,
    :class:`~cifs_edu.attacks.FrozenMask`).
    For a vanilla model this check runs only the paper's PGD on CE (step eps/10), so that
    :attr:`RobustnessReport.paper_attack` exists for every model.
``autoattack``
    the standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square) on the logits-only model.

The white-box attacks use the model's *standard* loss: cross-entropy for a vanilla model,
Eq. 3 with ``beta_atk`` (the training beta, 2) for a model with probes.

Only the examples the model classifies correctly are attacked; the others count as wrong
under every attack (AutoAttack's convention). The **worst case** per example is the AND of
"still correct" over every attack at the nominal eps (all rows but the other eps of the
sweep): the accuracy against the best attack we know, per example.

Flags and thresholds (each flag carries a one-line explanation):

=====================  ========  ==================================================================
flag                   kind      raised when
=====================  ========  ==================================================================
zero_gradients         masking   some attacked example has an exactly zero input gradient
randomized             masking   two forward passes on the same input differ (use EOT)
probabilities          masking   ``model(x)`` rows lie in [0, 1] and sum to 1
eps_not_zero           masking   accuracy at the largest eps > ``zero_tol`` (%)
eps_not_monotone       masking   accuracy rises with eps by more than ``tol``
steps_not_saturated    masking   the last step increase lowers accuracy by more than ``tol``
restarts_not_saturated masking   restarts lower accuracy by more than ``tol``
black_box_stronger     masking   Square's accuracy < the best white-box attack's - ``tol``
transfer_stronger      masking   transfer accuracy < the best white-box attack's - ``tol``
adaptive_gap           finding   full-gradient or frozen-mask attacks < the detached (paper's)
                                 attack of the same optimiser - ``adaptive_tol``
=====================  ========  ==================================================================

A difference flags only if it is larger than the tolerance (percentage points), involves at
least ``min_examples`` examples *and* is significant on the examples where the two attacks
disagree (one-sided exact sign test, p < ``alpha`` = 0.05), so a few lucky examples among 64 do
not raise a flag (2 examples against 0: p = 0.25). "masking" flags say that gradient-based numbers may overstate robustness;
"finding" flags say that the paper's adaptive attack underestimates the attacker.
"""
from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from .attacks.apgd import APGD
from .attacks.autoattack import AUTOATTACK_COMPONENTS, AutoAttack
from .attacks.base import eval_mode, format_eps, model_device, model_name
from .attacks.accuracy import iterate_batches
from .attacks.external import Square, TorchattacksAPGD
from .attacks.frozen import FrozenMask, selector_layers
from .attacks.pgd import PGD
from .attacks.beta_sweep import beta_label
from .cifs import CIFSLayer
from .losses import BETA_SWEEP, Beta, loss_weights, parse_beta
from .errors import ConfigError
from .profiles import Profile, get_profile

__all__ = [
    "CHECKS",
    "FLAG_KINDS",
    "ReportConfig",
    "Flag",
    "AttackRecord",
    "RobustnessReport",
    "robustness_report",
    "compare_reports",
]

CHECKS = ("sanity", "eps_sweep", "saturation", "black_box", "transfer", "adaptive", "autoattack")

#: flag code -> kind
FLAG_KINDS = {
    "zero_gradients": "masking",
    "randomized": "masking",
    "probabilities": "masking",
    "eps_not_zero": "masking",
    "eps_not_monotone": "masking",
    "steps_not_saturated": "masking",
    "restarts_not_saturated": "masking",
    "black_box_stronger": "masking",
    "transfer_stronger": "masking",
    "adaptive_gap": "finding",
}

MASK_MODES = ("detached", "full", "frozen")


# ============================================================================ configuration
def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


@dataclass(frozen=True)
class ReportConfig:
    """Sizes and tolerances of :func:`robustness_report` (validated at construction).

    Attributes:
        n: examples, drawn at random (seeded by ``seed``) from the data; ``None`` = all.
        eps: nominal l_inf budget (the paper: 8/255).
        eps_multipliers: the eps sweep, as multiples of ``eps`` (its largest must bring accuracy to ~0).
        sweep_steps: PGD steps at each eps of the sweep.
        steps: the PGD step ladder of the saturation check (increasing).
        restarts, restart_steps: PGD with random restarts (``restarts`` > 1) and its steps.
        apgd_steps: steps of APGD (torchattacks' CE/DLR and ours on the joint loss).
        square_queries: Square's query budget.
        transfer_steps: PGD steps on the surrogate.
        adaptive_steps: PGD steps of the adaptive sweeps (the paper: 20, step eps/10).
        betas: the attacker's betas of the adaptive sweeps (the paper's: BETA_SWEEP).
        beta_atk: beta of the standard loss of models with probes (the training beta, 2).
        aa_steps, aa_queries: AutoAttack's APGD/FAB steps and Square queries.
        aa_components: ``None`` for the standard AutoAttack, or a subset of
            :data:`~cifs_edu.attacks.AUTOATTACK_COMPONENTS` (the ``smoke`` preset leaves out FAB-T).
        batch_size: attack batch size. seed: seed of every random start.
        checks: which checks to run (subset of :data:`CHECKS`, run in that order).
        zero_tol: accuracy (%) above which the largest eps "did not reach zero".
        tol: tolerance (points) of the saturation, black-box, transfer and monotonicity flags.
        adaptive_tol: tolerance (points) of the adaptive_gap finding.
        min_examples: a difference must involve at least this many examples to flag.
        alpha: a drop flags only if significant on the examples where the two attacks disagree
            (one-sided exact sign test, p < alpha): on 64 examples, 2 lucky ones are noise.
    """

    n: int | None = 1000
    eps: float = 8 / 255
    eps_multipliers: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0)
    sweep_steps: int = 20
    steps: tuple[int, ...] = (10, 20, 100, 500)
    restarts: int = 5
    restart_steps: int = 100
    apgd_steps: int = 100
    square_queries: int = 5000
    transfer_steps: int = 100
    adaptive_steps: int = 20
    betas: tuple[Beta, ...] = BETA_SWEEP
    beta_atk: Beta = 2.0
    aa_steps: int = 100
    aa_queries: int = 5000
    aa_components: tuple[str, ...] | None = None
    batch_size: int = 500
    seed: int = 0
    checks: tuple[str, ...] = CHECKS
    zero_tol: float = 1.0
    tol: float = 2.0
    adaptive_tol: float = 3.0
    min_examples: int = 2
    alpha: float = 0.05

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)  # noqa: E731
        problems: list[str] = []
        if isinstance(self.aa_components, list):
            set_("aa_components", tuple(self.aa_components))
        if self.aa_components is not None:
            comps = self.aa_components if isinstance(self.aa_components, tuple) else ()
            if not comps or any(c not in AUTOATTACK_COMPONENTS for c in comps):
                problems.append(f"aa_components must be None or a non-empty subset of {AUTOATTACK_COMPONENTS} "
                                f"(got {self.aa_components!r})")
        for name in ("eps_multipliers", "steps", "betas", "checks"):
            v = getattr(self, name)
            if isinstance(v, (list, tuple)):
                set_(name, tuple(v))
            else:
                problems.append(f"{name} must be a list or tuple (got {v!r})")
        if self.n is not None and (not _is_int(self.n) or self.n < 1):
            problems.append(f"n must be an int >= 1 or None (got {self.n!r})")
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not 0 < self.eps <= 1:
            problems.append(f"eps must be in (0, 1] (got {self.eps!r})")
        mults = self.eps_multipliers if isinstance(self.eps_multipliers, tuple) else ()
        if not mults or any(isinstance(m, bool) or not isinstance(m, (int, float)) or m <= 0 for m in mults):
            problems.append(f"eps_multipliers must be positive numbers (got {self.eps_multipliers!r})")
        elif list(mults) != sorted(set(mults)):
            problems.append(f"eps_multipliers must be strictly increasing (got {mults})")
        elif isinstance(self.eps, (int, float)) and self.eps * max(mults) > 1:
            problems.append(f"the largest eps of the sweep ({self.eps * max(mults):.3f}) exceeds 1")
        ladder = self.steps if isinstance(self.steps, tuple) else ()
        if len(ladder) < 2 or not all(_is_int(s) and s >= 1 for s in ladder) or list(ladder) != sorted(set(ladder)):
            problems.append(f"steps must be at least two strictly increasing ints >= 1 (got {self.steps!r})")
        for name, low in (("sweep_steps", 1), ("restarts", 1), ("restart_steps", 1), ("apgd_steps", 1),
                          ("square_queries", 1), ("transfer_steps", 1), ("adaptive_steps", 1), ("aa_steps", 1),
                          ("aa_queries", 1), ("batch_size", 1), ("seed", 0), ("min_examples", 1)):
            v = getattr(self, name)
            if not _is_int(v) or v < low:
                problems.append(f"{name} must be an int >= {low} (got {v!r})")
        betas = self.betas if isinstance(self.betas, tuple) else ()
        if not betas:
            problems.append("betas must not be empty")
        parsed = []
        for b in betas + (self.beta_atk,):
            try:
                parsed.append(parse_beta(b))
            except ValueError as e:
                problems.append(str(e))
        if not problems:
            set_("betas", tuple(parsed[:-1]))
            set_("beta_atk", parsed[-1])
            if isinstance(self.beta_atk, str):
                problems.append(f"beta_atk must be a finite number (got {self.beta_atk!r})")
        unknown = [c for c in (self.checks if isinstance(self.checks, tuple) else ()) if c not in CHECKS]
        if unknown:
            problems.append(f"unknown checks {unknown}; choose from {CHECKS}")
        for name in ("zero_tol", "tol", "adaptive_tol"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                problems.append(f"{name} must be a number >= 0 (got {v!r})")
        if isinstance(self.alpha, bool) or not isinstance(self.alpha, (int, float)) or not 0 < self.alpha <= 1:
            problems.append(f"alpha must be a number in (0, 1] (got {self.alpha!r})")
        if problems:
            raise ConfigError("invalid ReportConfig: " + "; ".join(problems))
        set_("eps", float(self.eps))

    @property
    def eps_grid(self) -> tuple[float, ...]:
        """The absolute eps values of the sweep."""
        return tuple(self.eps * m for m in self.eps_multipliers)

    @classmethod
    def from_profile(cls, profile: str | Profile | None = None, **overrides: Any) -> "ReportConfig":
        """The sizes of a profile (:attr:`cifs_edu.profiles.Profile.report`), its eps, then ``overrides``.

        ``smoke``: 64 examples, ladder 5-10-20, Square 50 queries, betas (2, inf), AutoAttack without
        FAB-T at 5 steps (about half a minute per model on 2 CPU cores); ``laptop``: 200 examples;
        ``colab``: 1,000; ``paper``: 1,000 with the defaults (ladder to PGD-500, 5 restarts of
        PGD-100, Square 5,000 queries, the standard AutoAttack). The ``seed`` (example choice and
        random starts) is the active session's unless given.
        """
        from .runtime import current

        prof = get_profile(profile)
        unknown = sorted(set(overrides) - {f.name for f in fields(cls)})
        if unknown:
            raise ConfigError(f"unknown ReportConfig field(s) {unknown}")
        return cls(**{**prof.report, "eps": prof.eps, "seed": current().seed, **overrides})

    def replace(self, **changes: Any) -> "ReportConfig":
        """A copy with some fields changed (validated again)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: (list(v) if isinstance(v := getattr(self, f.name), tuple) else v) for f in fields(self)}

    def threshold(self, points: float, n: int) -> float:
        """The smallest difference (points) that flags: ``max(points, 100 * (min_examples - 0.5) / n)``."""
        return max(points, 100.0 * (self.min_examples - 0.5) / max(n, 1))


# ============================================================================ results
@dataclass(frozen=True)
class Flag:
    """One raised flag: which check, a code (see :data:`FLAG_KINDS`), its kind and a one-line explanation."""

    check: str
    code: str
    message: str

    @property
    def kind(self) -> str:
        """``"masking"`` (numbers may overstate robustness) or ``"finding"`` (about the paper's evaluation)."""
        return FLAG_KINDS[self.code]

    def __str__(self) -> str:
        return f"[{self.kind}] {self.code}: {self.message}"


@dataclass
class AttackRecord:
    """One attack of the report.

    Attributes:
        check: the check it belongs to; label: short name (the table's row).
        eps: l_inf budget; loss: what the attacker maximised (text).
        correct: bool (n,), the example is still correctly classified after the attack
            (False for examples misclassified when clean).
        seconds: wall time; attack: the attack's full ``repr``.
        detail: extra numbers (e.g. accuracy per beta of a sweep).
        pair_change: position -> fraction (%) of attacked examples whose CIFS classes (the
            top-k of the probe) changed under the attack.
        in_worst_case: counted in the per-example worst case (every attack at the nominal eps).
    """

    check: str
    label: str
    eps: float
    loss: str
    correct: Tensor
    seconds: float
    attack: str
    detail: dict[str, Any] = field(default_factory=dict)
    pair_change: dict[str, float] = field(default_factory=dict)
    in_worst_case: bool = True

    @property
    def accuracy(self) -> float:
        """Accuracy (%) under this attack."""
        return 100.0 * self.correct.double().mean().item() if self.correct.numel() else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check, "label": self.label, "eps": self.eps, "loss": self.loss,
            "accuracy": self.accuracy, "seconds": self.seconds, "attack": self.attack, "detail": self.detail,
            "pair_change": self.pair_change, "in_worst_case": self.in_worst_case,
            "correct": "".join("1" if c else "0" for c in self.correct.tolist()),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "AttackRecord":
        correct = torch.tensor([c == "1" for c in d["correct"]], dtype=torch.bool)
        return cls(d["check"], d["label"], float(d["eps"]), d["loss"], correct, float(d["seconds"]), d["attack"],
                   dict(d.get("detail", {})), dict(d.get("pair_change", {})), bool(d.get("in_worst_case", True)))


@dataclass
class RobustnessReport:
    """The outcome of :func:`robustness_report`.

    Attributes:
        model: the model's name; config: the :class:`ReportConfig`.
        clean_correct: bool (n,), clean predictions correct.
        records: every attack, in the order run.
        flags: the raised flags.
        skipped: check -> why it was not run.
        sanity: numbers of the sanity check.
        runtime_s: wall time of the whole report; cpu_s: CPU time of this process (all threads),
            a load-independent measure of its cost on a shared machine.
        y: labels (n,); x / x_worst: clean inputs and, per example, the adversarial input of
            the first attack (in run order) that fooled it (the clean input if none did).
            These tensors are not serialised.
    """

    model: str
    config: ReportConfig
    clean_correct: Tensor
    records: list[AttackRecord]
    flags: list[Flag]
    skipped: dict[str, str]
    sanity: dict[str, Any]
    runtime_s: float
    cpu_s: float = float("nan")
    y: Tensor | None = None
    x: Tensor | None = None
    x_worst: Tensor | None = None

    # ------------------------------------------------------------------ numbers
    @property
    def n(self) -> int:
        return int(self.clean_correct.numel())

    @property
    def clean_accuracy(self) -> float:
        return 100.0 * self.clean_correct.double().mean().item()

    def _worst_records(self) -> list[AttackRecord]:
        return [r for r in self.records if r.in_worst_case]

    @property
    def worst_correct(self) -> Tensor:
        """Bool (n,): correct under every attack at the nominal eps (and clean)."""
        ok = self.clean_correct.clone()
        for r in self._worst_records():
            ok &= r.correct
        return ok

    @property
    def worst_case_accuracy(self) -> float:
        """Accuracy (%) against the best known attack, per example."""
        return 100.0 * self.worst_correct.double().mean().item()

    @property
    def best_attack(self) -> str:
        """The single attack (label) with the lowest accuracy at the nominal eps (the first on ties)."""
        recs = self._worst_records()
        if not recs:
            return "clean"
        return min(recs, key=lambda r: r.accuracy).label

    @property
    def best_attack_per_example(self) -> list[str | None]:
        """Per example: ``"clean"`` if misclassified without attack, else the label of the first attack
        (in run order) that fooled it, else ``None`` (robust to everything)."""
        out: list[str | None] = ["clean" if not c else None for c in self.clean_correct.tolist()]
        for r in self._worst_records():
            for i, c in enumerate(r.correct.tolist()):
                if out[i] is None and not c:
                    out[i] = r.label
        return out

    def only_fooled_by(self) -> dict[str, int]:
        """label -> number of examples that this attack, and no other at the nominal eps, fooled."""
        recs = self._worst_records()
        if not recs:
            return {}
        fooled = torch.stack([~r.correct for r in recs]) & self.clean_correct[None, :]
        unique = fooled & (fooled.sum(dim=0, keepdim=True) == 1)
        return {r.label: int(u.sum().item()) for r, u in zip(recs, unique)}

    @property
    def paper_attack(self) -> AttackRecord | None:
        """The attack of the paper's evaluation: PGD-k with step eps/10 and no random start, on CE for a
        vanilla model and on Eq. 3 with the detached mask, worst over the betas, for CIFS/CAS
        (``None`` if the adaptive check did not run)."""
        for r in self.records:
            if r.detail.get("paper_attack"):
                return r
        return None

    def record(self, label: str) -> AttackRecord:
        """The record with this label."""
        for r in self.records:
            if r.label == label:
                return r
        raise KeyError(f"no attack {label!r} in the report; labels: {[r.label for r in self.records]}")

    def check_records(self, check: str) -> list[AttackRecord]:
        return [r for r in self.records if r.check == check]

    @property
    def masking_flags(self) -> list[Flag]:
        return [f for f in self.flags if f.kind == "masking"]

    @property
    def findings(self) -> list[Flag]:
        return [f for f in self.flags if f.kind == "finding"]

    # ------------------------------------------------------------------ presentation
    def table(self) -> pd.DataFrame:
        """One row per attack (plus clean and the worst case): check, eps, loss, accuracy (%),
        examples only this attack fooled, P1/P2 class-pair change (%) and seconds."""
        only = self.only_fooled_by()
        positions = sorted({p for r in self.records for p in r.pair_change}, reverse=True)
        rows = [{"attack": "clean", "check": "", "eps": "0", "loss": "", "accuracy": self.clean_accuracy,
                 "only fooled by this": float("nan"), **{f"{p} pair changed": float("nan") for p in positions},
                 "seconds": float("nan")}]
        for r in self.records:
            row = {"attack": r.label, "check": r.check, "eps": format_eps(r.eps), "loss": r.loss,
                   "accuracy": r.accuracy,
                   "only fooled by this": float(only[r.label]) if r.in_worst_case else float("nan"),
                   **{f"{p} pair changed": r.pair_change.get(p, float("nan")) for p in positions},
                   "seconds": r.seconds}
            rows.append(row)
        rows.append({"attack": "worst case", "check": "all", "eps": format_eps(self.config.eps),
                     "loss": f"best: {self.best_attack}", "accuracy": self.worst_case_accuracy,
                     "only fooled by this": float("nan"), **{f"{p} pair changed": float("nan") for p in positions},
                     "seconds": sum(r.seconds for r in self.records)})
        return pd.DataFrame(rows).set_index("attack")

    def beta_table(self) -> pd.DataFrame:
        """Accuracy (%) per attacker's beta (columns) of every adaptive sweep (rows)."""
        rows = {}
        for r in self.check_records("adaptive"):
            rows[r.label] = {**r.detail.get("accuracy_per_beta", {}), "worst case": r.accuracy}
        return pd.DataFrame.from_dict(rows, orient="index")

    def flag_table(self) -> pd.DataFrame:
        """The flags as a table (check, code, kind, message); empty with those columns if none."""
        return pd.DataFrame([{"check": f.check, "flag": f.code, "kind": f.kind, "message": f.message}
                             for f in self.flags], columns=["check", "flag", "kind", "message"])

    def summary(self) -> str:
        """A few lines: worst case, best attack, flags."""
        lines = [
            f"{self.model}: clean {self.clean_accuracy:.1f}%, worst case {self.worst_case_accuracy:.1f}% "
            f"over {len(self._worst_records())} attacks at eps={format_eps(self.config.eps)} "
            f"(best single attack: {self.best_attack}, {self.record(self.best_attack).accuracy:.1f}%)"
            if self._worst_records() else f"{self.model}: clean {self.clean_accuracy:.1f}%, no attack run",
            f"{len(self.masking_flags)} masking flag(s), {len(self.findings)} finding(s); n={self.n}, "
            f"{self.runtime_s:.0f} s",
        ]
        lines += [f"  {f}" for f in self.flags]
        lines += [f"  skipped {c}: {why}" for c, why in self.skipped.items()]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return (f"RobustnessReport({self.model}, n={self.n}, clean={self.clean_accuracy:.1f}%, "
                f"worst={self.worst_case_accuracy:.1f}% ({self.best_attack}), flags={[f.code for f in self.flags]})")

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """Everything but the input tensors, as JSON types (per-example correctness as '0'/'1' strings)."""
        return {
            "model": self.model, "config": self.config.to_dict(), "n": self.n,
            "clean_accuracy": self.clean_accuracy, "worst_case_accuracy": self.worst_case_accuracy,
            "best_attack": self.best_attack,
            "clean_correct": "".join("1" if c else "0" for c in self.clean_correct.tolist()),
            "records": [r.to_dict() for r in self.records],
            "flags": [{"check": f.check, "code": f.code, "kind": f.kind, "message": f.message} for f in self.flags],
            "skipped": self.skipped, "sanity": self.sanity, "runtime_s": self.runtime_s, "cpu_s": self.cpu_s,
            "labels": None if self.y is None else self.y.tolist(),
        }

    def to_json(self, path: str | Path | None = None) -> str:
        """The report as JSON text; also written to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=1)
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text)
        return text

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "RobustnessReport":
        config = ReportConfig(**d["config"])
        clean = torch.tensor([c == "1" for c in d["clean_correct"]], dtype=torch.bool)
        records = [AttackRecord.from_dict(r) for r in d["records"]]
        flags = [Flag(f["check"], f["code"], f["message"]) for f in d["flags"]]
        y = None if d.get("labels") is None else torch.tensor(d["labels"], dtype=torch.long)
        return cls(d["model"], config, clean, records, flags, dict(d["skipped"]), dict(d["sanity"]),
                   float(d["runtime_s"]), float(d.get("cpu_s", float("nan"))), y=y)

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> "RobustnessReport":
        """Inverse of :meth:`to_json` (a path to a file, or the JSON text)."""
        p = Path(text_or_path) if not str(text_or_path).lstrip().startswith("{") else None
        text = p.read_text() if p is not None else str(text_or_path)
        return cls.from_dict(json.loads(text))


def compare_reports(reports: dict[str, RobustnessReport]) -> pd.DataFrame:
    """Accuracy (%) of each attack (rows) for several reports (columns), aligned by label."""
    cols = {name: rep.table()["accuracy"] for name, rep in reports.items()}
    df = pd.concat(cols, axis=1)
    order = list(dict.fromkeys(lab for rep in reports.values() for lab in rep.table().index))
    return df.loc[order]


# ============================================================================ running attacks
def _has_probes(model: nn.Module) -> bool:
    return hasattr(model, "forward_with_aux") and bool(selector_layers(model))


def _positions(model: nn.Module) -> tuple[str, ...]:
    return tuple(getattr(model, "positions", ())) if _has_probes(model) else ()


def _select(data: Any, n: int | None, seed: int) -> tuple[Tensor, Tensor]:
    """``n`` examples of a Dataset, DataLoader or (X, Y) pair, drawn at random (seeded), in data order.

    A random draw rather than the first ``n``: image folders and some test sets are sorted by class.
    """
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(torch.is_tensor(t) for t in data):
        X, Y = data
        if X.shape[0] != Y.shape[0]:
            raise ConfigError(f"X and Y have different lengths ({X.shape[0]} vs {Y.shape[0]})")
    else:
        batches, _ = iterate_batches(data, 500)
        xs, ys = [], []
        for x, y in batches:
            xs.append(x)
            ys.append(torch.as_tensor(y))
        if not xs:
            raise ConfigError("the data is empty")
        X, Y = torch.cat(xs), torch.cat(ys)
    if n is None or n >= X.shape[0]:
        return X, Y
    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(X.shape[0], generator=g)[:n].sort().values
    return X[idx.to(X.device)], Y[idx.to(Y.device)]


@torch.no_grad()
def _predict(model: nn.Module, x: Tensor, batch_size: int) -> tuple[Tensor, dict[str, Tensor]]:
    """Predictions (N,) and, for CIFS/CAS models, the classes each layer selected (pos -> (N, k))."""
    preds, classes = [], {}
    aux = _has_probes(model)
    with eval_mode(model):
        for i in range(0, x.shape[0], batch_size):
            xb = x[i : i + batch_size]
            if aux:
                out = model.forward_with_aux(xb)
                logits = out.logits
                for p, c in out.classes.items():
                    classes.setdefault(p, []).append(c.cpu())
            else:
                logits = model(xb)
            preds.append(logits.argmax(dim=1).cpu())
    return torch.cat(preds), {p: torch.cat(c) for p, c in classes.items()}


class _Runner:
    """Runs attacks on the clean-correct examples and keeps records, x_worst and progress."""

    def __init__(self, model, X, Y, config: ReportConfig, progress: bool, total: int) -> None:
        self.model, self.X, self.Y, self.config = model, X, Y, config
        self.device = model_device(model)
        pred, self.clean_classes = _predict(model, X, config.batch_size)
        self.clean_correct = pred == Y.cpu()
        self.idx = self.clean_correct.nonzero().squeeze(1)
        self.records: list[AttackRecord] = []
        self.x_worst = X.detach().cpu().clone()
        self.fooled = ~self.clean_correct
        self.bar = tqdm(total=total, disable=not progress, desc="report", leave=False)

    def _adv(self, attack: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """Adversarial versions of the attacked (clean-correct) examples, on the CPU."""
        xs, ys = self.X[self.idx.to(self.X.device)], self.Y[self.idx.to(self.Y.device)]
        out = []
        bs = self.config.batch_size
        for i in range(0, xs.shape[0], bs):
            xb = xs[i : i + bs].to(self.device)
            yb = ys[i : i + bs].to(self.device)
            out.append(attack(xb, yb).detach().cpu())
        return torch.cat(out) if out else xs.detach().cpu()[:0]

    def _score(self, x_adv: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """(still correct (m,), classes pos -> (m, k)) of the attacked examples."""
        if x_adv.shape[0] == 0:
            return torch.zeros(0, dtype=torch.bool), {}
        pred, classes = _predict(self.model, x_adv.to(self.device), self.config.batch_size)
        return pred == self.Y.cpu()[self.idx], classes

    def run(self, check: str, label: str, loss: str, attacks: Sequence[tuple[str, Callable]], eps: float,
            in_worst_case: bool = True, detail: dict[str, Any] | None = None) -> AttackRecord:
        """Run one attack, or several (a sweep: per-example AND); record and return it.

        ``attacks``: (name, attack) pairs; for a sweep, names are the betas.
        """
        t0 = time.perf_counter()
        m = self.idx.numel()
        ok_all = torch.ones(m, dtype=torch.bool)
        rep_x: Tensor | None = None
        rep_classes: dict[str, Tensor] = {}
        per: dict[str, float] = {}
        n = self.clean_correct.numel()
        for name, attack in attacks:
            self.bar.set_description_str(f"{label} {name}".strip()[:40])
            x_adv = self._adv(attack)
            ok, classes = self._score(x_adv)
            self.bar.update(1)
            if rep_x is None:
                rep_x, rep_classes = x_adv.clone(), {p: c.clone() for p, c in classes.items()}
            else:  # per example, keep the first beta that fooled it
                take = ~ok & ok_all
                rep_x[take] = x_adv[take]
                for p in rep_classes:
                    rep_classes[p][take] = classes[p][take]
            ok_all &= ok
            per[name] = 100.0 * ok.double().sum().item() / n
        correct = torch.zeros(n, dtype=torch.bool)
        correct[self.idx] = ok_all
        detail = dict(detail or {})
        if len(attacks) > 1:
            detail.update(accuracy_per_beta=per, worst_beta=min(per, key=per.__getitem__))
        pair = {}
        for p, c in rep_classes.items():
            if m:
                changed = _pair_changed(self.clean_classes[p][self.idx], c)
                pair[p] = 100.0 * changed.double().mean().item()
        rec = AttackRecord(check, label, float(eps), loss, correct, time.perf_counter() - t0,
                           "; ".join(repr(a) for _, a in attacks[:1]) + (" (+ other betas)" if len(attacks) > 1 else ""),
                           detail, pair, in_worst_case)
        if in_worst_case and rep_x is not None and m:
            new = torch.zeros(n, dtype=torch.bool)
            new[self.idx] = ~ok_all
            new &= ~self.fooled
            sub = new[self.idx]
            self.x_worst[self.idx[sub]] = rep_x[sub]
            self.fooled |= new
        self.records.append(rec)
        return rec


def _pair_changed(a: Tensor, b: Tensor) -> Tensor:
    from .analysis import class_pair_change

    return class_pair_change(a, b)


# ============================================================================ the checks
def _sanity(model: nn.Module, X: Tensor, Y: Tensor, idx: Tensor, config: ReportConfig) -> tuple[dict, list[Flag]]:
    """AutoAttack-style sanity checks on the clean-correct examples."""
    device = model_device(model)
    zero, total, max_diff, probs = 0, 0, 0.0, True
    with eval_mode(model):
        for i in range(0, idx.numel(), config.batch_size):
            j = idx[i : i + config.batch_size]
            x = X[j.to(X.device)].to(device).detach().requires_grad_(True)
            y = Y[j.to(Y.device)].to(device)
            with torch.enable_grad():
                z = model(x).float()
                true = z.gather(1, y[:, None]).squeeze(1)
                other = z.scatter(1, y[:, None], float("-inf")).amax(dim=1)
                (g,) = torch.autograd.grad((true - other).sum(), x)
            zero += int((g.flatten(1).abs().amax(dim=1) == 0).sum().item())
            total += x.shape[0]
            with torch.no_grad():
                z2 = model(x.detach()).float()
            max_diff = max(max_diff, float((z.detach() - z2).abs().max().item()))
            s = z.detach().sum(dim=1)
            probs &= bool(((z >= 0) & (z <= 1)).all().item() and torch.allclose(s, torch.ones_like(s), atol=1e-4))
    info = {"examples": total, "zero_gradient_examples": zero, "max_logit_difference": max_diff,
            "outputs_probabilities": probs and total > 0}
    flags = []
    if zero:
        flags.append(Flag("sanity", "zero_gradients",
                          f"{zero} of {total} examples have an exactly zero input gradient of the logit margin: "
                          "gradient-based attacks cannot move them (masked or shattered gradients)"))
    if max_diff > 1e-4:
        flags.append(Flag("sanity", "randomized",
                          f"two forward passes on the same input differ by up to {max_diff:.2g} in the logits: "
                          "a randomised defense needs attacks with Expectation over Transformation"))
    if info["outputs_probabilities"]:
        flags.append(Flag("sanity", "probabilities",
                          "model(x) returns probabilities (rows in [0, 1] summing to 1), not logits: "
                          "cross-entropy on them saturates and hides gradients"))
    return info, flags


def _pct(x: float) -> str:
    return f"{x:.1f}%"


def _flag_eps(recs: list[AttackRecord], config: ReportConfig, n: int) -> list[Flag]:
    flags = []
    if not recs:
        return flags
    last = recs[-1]
    survivors = int(last.correct.sum().item())
    if last.accuracy > config.zero_tol and survivors >= config.min_examples:
        flags.append(Flag("eps_sweep", "eps_not_zero",
                          f"accuracy at eps={format_eps(last.eps)} is {_pct(last.accuracy)} > {config.zero_tol:g}%: "
                          "an attack this large should fool every example; gradients may be masked"))
    thr = config.threshold(config.tol, n)
    for a, b in zip(recs, recs[1:]):
        if b.accuracy - a.accuracy > thr:
            flags.append(Flag("eps_sweep", "eps_not_monotone",
                              f"accuracy rises from {_pct(a.accuracy)} at eps={format_eps(a.eps)} to "
                              f"{_pct(b.accuracy)} at eps={format_eps(b.eps)}: a larger ball cannot be safer; "
                              "the attack is not converging"))
            break
    return flags


def sign_test_p(broken_only_by_strong: int, broken_only_by_weak: int) -> float:
    """One-sided exact sign test (McNemar) on the examples where two attacks disagree: the
    probability of at least ``broken_only_by_strong`` of them going the strong attack's way if
    either way were equally likely. Small values mean the difference is not the noise of a few
    examples."""
    b, m = int(broken_only_by_strong), int(broken_only_by_strong) + int(broken_only_by_weak)
    if m == 0:
        return 1.0
    return sum(math.comb(m, i) for i in range(b, m + 1)) / 2.0 ** m


def _flag_drop(check: str, code: str, weak: AttackRecord, strong: AttackRecord, tol: float, n: int,
               config: ReportConfig, why: str) -> list[Flag]:
    """A flag when ``strong`` leaves clearly fewer examples correct than ``weak``: by more than the
    tolerance (and ``min_examples``), and significantly on the examples where they disagree
    (:func:`sign_test_p` < ``config.alpha``), so that a few lucky examples of a small report flag nothing."""
    drop = weak.accuracy - strong.accuracy
    if drop <= config.threshold(tol, n):
        return []
    only_strong = int((weak.correct & ~strong.correct).sum())
    only_weak = int((~weak.correct & strong.correct).sum())
    p = sign_test_p(only_strong, only_weak)
    if p >= config.alpha:
        return []
    return [Flag(check, code, f"{strong.label} reaches {_pct(strong.accuracy)}, {drop:.1f} points below "
                              f"{weak.label} ({_pct(weak.accuracy)}; {only_strong} examples against {only_weak}, "
                              f"sign test p = {p:.2g}): {why}")]


def _count_checks(model, config: ReportConfig, surrogate, probes: bool, has_cifs: bool, n_betas: int) -> int:
    c = config.checks
    total = 0
    total += len(config.eps_multipliers) if "eps_sweep" in c else 0
    total += (len(config.steps) + 2 + 2) if "saturation" in c else 0
    total += 1 if "black_box" in c else 0
    total += 1 if ("transfer" in c and surrogate is not None and surrogate is not model) else 0
    if "adaptive" in c:
        total += 2 * n_betas * (3 if has_cifs else 2) if probes else 1
    total += 1 if "autoattack" in c else 0
    return total


def robustness_report(
    model: nn.Module,
    data: Any,
    config: ReportConfig | None = None,
    *,
    surrogate: nn.Module | None = None,
    name: str | None = None,
    progress: bool = True,
    **overrides: Any,
) -> RobustnessReport:
    """Run the robustness checks of this module on ``model`` and return a :class:`RobustnessReport`.

    Args:
        model: the classifier (``model(x)`` -> logits for x in [0, 1]); a cifs_edu model with
            CIFS/CAS layers also gets the adaptive check.
        data: a Dataset, a DataLoader or an ``(X, Y)`` pair; ``config.n`` examples drawn at random (seeded)
            are used, in data order.
        config: sizes and tolerances (default: :meth:`ReportConfig.from_profile` of the current session).
        surrogate: a vanilla adversarially trained model for the transfer check (skipped when
            ``None`` or when it is ``model`` itself).
        name: the model's name in tables (default: class and defense, e.g. ``CIFARResNet[cifs]``).
        progress: a tqdm bar over the attacks.
        overrides: fields of :class:`ReportConfig` to change (e.g. ``n=32``).

    Returns:
        the report: ``.table()``, ``.flags``, ``.worst_case_accuracy``, ``.best_attack``, ``.to_json()``.
    """
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module (got {type(model).__name__})")
    if config is None:
        from .runtime import current

        config = ReportConfig.from_profile(current().profile)
    if overrides:
        config = config.replace(**overrides)
    if surrogate is not None and not isinstance(surrogate, nn.Module):
        raise ConfigError(f"surrogate must be a torch.nn.Module or None (got {type(surrogate).__name__})")
    t_start, cpu_start = time.perf_counter(), time.process_time()
    X, Y = _select(data, config.n, config.seed)
    X, Y = X.float(), Y.long()
    if X.numel() and (X.min() < 0 or X.max() > 1):
        raise ConfigError("inputs must lie in [0, 1]")
    n = X.shape[0]
    eps = config.eps
    probes = _has_probes(model)
    positions = _positions(model)
    has_cifs = probes and any(isinstance(m, CIFSLayer) for m in selector_layers(model).values())
    betas = [b for b in config.betas if _beta_applies(b, positions)] if probes else []
    skipped: dict[str, str] = {}
    flags: list[Flag] = []
    if probes and not betas and "adaptive" in config.checks:
        raise ConfigError(f"none of the betas {config.betas} applies to a model with layers {positions}")

    runner = _Runner(model, X, Y, config, progress,
                     _count_checks(model, config, surrogate, probes, has_cifs, len(betas)))
    std_loss = dict(loss="adaptive", beta_atk=config.beta_atk) if probes else dict(loss="ce")
    std_text = f"Eq. 3, beta_atk={beta_label(config.beta_atk)}" if probes else "CE"
    seed = config.seed
    num_classes = int(getattr(model, "num_classes", 0) or _num_classes(model, X))
    sanity: dict[str, Any] = {}
    c = config.checks

    # -------------------------------------------------------------- sanity
    if "sanity" in c:
        sanity, f = _sanity(model, X, Y, runner.idx, config)
        flags += f

    # -------------------------------------------------------------- eps sweep
    if "eps_sweep" in c:
        s = config.sweep_steps
        recs = []
        for e in config.eps_grid:
            atk = PGD(model, e, alpha=2.5 * e / s, steps=s, random_start=True, seed=seed, **std_loss)
            recs.append(runner.run("eps_sweep", f"PGD-{s} eps={format_eps(e)}", std_text, [("", atk)], e,
                                   in_worst_case=math.isclose(e, eps)))
        flags += _flag_eps(recs, config, n)

    # -------------------------------------------------------------- saturation
    if "saturation" in c:
        ladder = []
        for s in config.steps:
            atk = PGD(model, eps, alpha=2.5 * eps / s, steps=s, **std_loss)
            ladder.append(runner.run("saturation", f"PGD-{s}", std_text, [("", atk)], eps))
        flags += _flag_drop("saturation", "steps_not_saturated", ladder[-2], ladder[-1], config.tol, n, config,
                            "accuracy still falls with more steps; the attack has not converged")
        s, r = config.restart_steps, config.restarts
        one = PGD(model, eps, alpha=2.5 * eps / s, steps=s, random_start=True, seed=seed, **std_loss)
        rec1 = runner.run("saturation", f"PGD-{s} random start", std_text, [("", one)], eps)
        if r > 1:
            many = PGD(model, eps, alpha=2.5 * eps / s, steps=s, random_start=True, restarts=r, seed=seed, **std_loss)
            recr = runner.run("saturation", f"PGD-{s} x{r} restarts", std_text, [("", many)], eps)
            flags += _flag_drop("saturation", "restarts_not_saturated", rec1, recr, config.tol, n, config,
                                "random restarts keep finding adversarial examples; the loss landscape is rugged")
        else:
            runner.bar.update(1)
        for lossname in ("ce", "dlr"):
            if lossname == "dlr" and num_classes < 3:
                runner.bar.update(1)
                continue
            atk = TorchattacksAPGD(model, eps, loss=lossname, steps=config.apgd_steps, seed=seed)
            runner.run("saturation", f"APGD-{lossname.upper()}-{config.apgd_steps}", f"{lossname.upper()} (logits)",
                       [("", atk)], eps)

    white_box = [r for r in runner.records if r.in_worst_case]

    # -------------------------------------------------------------- black box
    if "black_box" in c:
        atk = Square(model, eps, n_queries=config.square_queries, seed=seed)
        sq = runner.run("black_box", f"Square-{config.square_queries}", "margin (scores only)", [("", atk)], eps)
        if white_box:
            best = min(white_box, key=lambda r: r.accuracy)
            only = int((~sq.correct & runner.clean_correct & _all_correct(white_box)).sum().item())
            flags += _flag_drop("black_box", "black_box_stronger", best, sq, config.tol, n, config,
                                f"a gradient-free attack beats every gradient-based one ({only} examples only it "
                                "fools): the gradients are not informative")

    # -------------------------------------------------------------- transfer
    if "transfer" in c:
        if surrogate is None:
            skipped["transfer"] = "no surrogate model given"
        elif surrogate is model:
            skipped["transfer"] = "the surrogate is the model itself (transfer = white-box)"
        else:
            s = config.transfer_steps
            sur_loss = dict(loss="ce")
            atk = PGD(surrogate, eps, alpha=2.5 * eps / s, steps=s, random_start=True, seed=seed, **sur_loss)
            tr = runner.run("transfer", f"transfer PGD-{s} from {model_name(surrogate)}", "CE (surrogate)",
                            [("", atk)], eps)
            if white_box:
                best = min(white_box, key=lambda r: r.accuracy)
                flags += _flag_drop("transfer", "transfer_stronger", best, tr, config.tol, n, config,
                                    "examples crafted on another model fool this one more than its own gradients do")

    # -------------------------------------------------------------- adaptive (full / frozen mask)
    if "adaptive" in c:
        if not probes:
            skipped["adaptive"] = "the model has no CIFS/CAS probes: its joint loss is CE (see saturation)"
            k = config.adaptive_steps
            runner.run("paper", f"PGD-{k} (paper's attack)", "CE", [("", PGD(model, eps, steps=k))], eps,
                       detail={"paper_attack": True})
        else:
            modes = MASK_MODES if has_cifs else ("detached", "frozen")
            if not has_cifs:
                skipped["adaptive/full"] = "CAS masks are never detached: 'full' equals 'detached'"
            by_mode: dict[tuple[str, str], AttackRecord] = {}
            text = {"detached": "detached mask (paper)", "full": "full gradient", "frozen": "frozen clean mask"}
            for opt in ("PGD", "APGD"):
                for mode in modes:
                    pairs = []
                    for b in betas:
                        grad_mode = None if mode == "frozen" else mode
                        if opt == "PGD":
                            atk = PGD(model, eps, steps=config.adaptive_steps, loss="adaptive", beta_atk=b,
                                      mask_grad=grad_mode)
                        else:
                            atk = APGD(model, eps, steps=config.apgd_steps, loss="adaptive", beta_atk=b, seed=seed,
                                       mask_grad=grad_mode)
                        pairs.append((beta_label(b), FrozenMask(atk) if mode == "frozen" else atk))
                    steps = config.adaptive_steps if opt == "PGD" else config.apgd_steps
                    paper = opt == "PGD" and mode == "detached"
                    by_mode[(opt, mode)] = runner.run(
                        "adaptive", f"{opt}-{steps} adaptive, {text[mode]}", "Eq. 3, worst over betas", pairs, eps,
                        detail={"paper_attack": True} if paper else None)
                base = by_mode[(opt, "detached")]
                for mode in modes[1:]:
                    flags += _flag_drop("adaptive", "adaptive_gap", base, by_mode[(opt, mode)], config.adaptive_tol, n,
                                        config, "the paper's detached-mask attack underestimates the attacker")

    # -------------------------------------------------------------- AutoAttack
    if "autoattack" in c:
        if num_classes < 3:
            skipped["autoattack"] = "AutoAttack's targeted attacks need at least 3 classes"
        else:
            comps = config.aa_components
            version = dict(version="standard") if comps is None else dict(version="custom", attacks_to_run=comps)
            atk = AutoAttack(model, eps, n_classes=num_classes, seed=seed, steps=config.aa_steps,
                             n_queries=config.aa_queries, **version)
            label = "AutoAttack (standard)" if comps is None else f"AutoAttack ({'+'.join(atk.components)})"
            runner.run("autoattack", label, "logits only", [("", atk)], eps)

    runner.bar.close()
    return RobustnessReport(
        model=name or model_name(model), config=config, clean_correct=runner.clean_correct, records=runner.records,
        flags=flags, skipped=skipped, sanity=sanity, runtime_s=time.perf_counter() - t_start,
        cpu_s=time.process_time() - cpu_start,
        y=Y.cpu(), x=X.detach().cpu(), x_worst=runner.x_worst,
    )


def _beta_applies(beta: Beta, positions: tuple[str, ...]) -> bool:
    try:
        loss_weights(beta, positions)
    except ValueError:
        return False
    return True


def _all_correct(records: list[AttackRecord]) -> Tensor:
    ok = torch.ones_like(records[0].correct)
    for r in records:
        ok &= r.correct
    return ok


@torch.no_grad()
def _num_classes(model: nn.Module, X: Tensor) -> int:
    with eval_mode(model):
        return int(model(X[:1].to(model_device(model))).shape[1])
