"""Names of the evaluation attacks, shared by configs, the trainer, the CLI and the tables.

=================  ==========================================================  ==============
spec               attack                                                       paper column
=================  ==========================================================  ==============
``natural``        no attack (clean accuracy)                                   Natural
``fgsm``           one step of size eps, no random start                        FGSM
``pgd20``          PGD-20, step eps/10, no random start                         PGD-20
``pgd100``         PGD-100, step eps/10                                         PGD-100
``pgd20@0.01``     PGD-20 with an explicit step size (Fashion-MNIST: 0.01)      --
``cw``             C&W-l_inf: PGD-30 on the margin loss (kappa 50), step eps/10  C&W
``autoattack``     APGD-CE, APGD-T, FAB-T and Square (torchattacks)             AutoAttack
=================  ==========================================================  ==============

For CIFS and CAS models every gradient attack uses the adaptive loss (Eq. 3) with the
attacker's ``beta_atk`` (the training beta by default, or the whole sweep of Table B.3).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["AttackSpec", "parse_attack", "ATTACK_HELP"]

ATTACK_HELP = "natural, fgsm, pgdN (e.g. pgd20, pgd100), pgdN@STEP (e.g. pgd20@0.01), cw, cwN, autoattack"

_PGD = re.compile(r"^(pgd|cw)(\d*)(?:@([0-9.eE+-]+))?$")


@dataclass(frozen=True)
class AttackSpec:
    """A parsed attack name.

    Attributes:
        name: the canonical spelling (``"pgd20"``, ``"cw"``, ``"pgd20@0.01"``).
        kind: ``"natural"``, ``"fgsm"``, ``"pgd"``, ``"cw"`` or ``"autoattack"``.
        steps: iterations (1 for FGSM, 0 for natural / AutoAttack).
        step_size: explicit step size in input units, or ``None`` for ``eps / 10``.
    """

    name: str
    kind: str
    steps: int = 0
    step_size: float | None = None

    @property
    def gradient(self) -> bool:
        """True for the attacks that take the (adaptive) loss: FGSM, PGD, C&W."""
        return self.kind in ("fgsm", "pgd", "cw")


def parse_attack(spec: str) -> AttackSpec:
    """Parse an attack name (see the module table).

    Raises:
        ValueError: for an unknown name, zero steps or a non-positive step size.
    """
    if not isinstance(spec, str):
        raise ValueError(f"attack must be a string ({ATTACK_HELP}); got {spec!r}")
    s = spec.strip().lower().replace("-", "") if "@" not in spec else spec.strip().lower()
    if s in ("natural", "clean"):
        return AttackSpec("natural", "natural")
    if s == "fgsm":
        return AttackSpec("fgsm", "fgsm", steps=1)
    if s in ("autoattack", "aa"):
        return AttackSpec("autoattack", "autoattack")
    m = _PGD.match(s.replace("pgd-", "pgd").replace("cw-", "cw"))
    if m:
        kind, steps, step = m.group(1), m.group(2), m.group(3)
        n = int(steps) if steps else (30 if kind == "cw" else 0)
        if n <= 0:
            raise ValueError(f"attack {spec!r}: give the number of steps, e.g. pgd20")
        step_size = None
        if step is not None:
            try:
                step_size = float(step)
            except ValueError:
                raise ValueError(f"attack {spec!r}: step size {step!r} is not a number") from None
            if not step_size > 0:
                raise ValueError(f"attack {spec!r}: step size must be > 0")
        if kind == "cw":
            name = "cw" if n == 30 and step_size is None else f"cw{n}"
        else:
            name = f"pgd{n}"
        if step_size is not None:
            name += f"@{step_size:g}"
        return AttackSpec(name, kind, steps=n, step_size=step_size)
    raise ValueError(f"unknown attack {spec!r}; choose from {ATTACK_HELP}")
