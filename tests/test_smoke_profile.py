"""The smoke recipe end to end: a standard model is broken by PGD far more than an adversarially trained one.

Its own module so that ``pytest -n 2 --dist loadscope`` (``make test``) can run this minute-long
test beside the rest of the training tests.
"""
from __future__ import annotations

from cifs_edu.training import TrainConfig, load_or_train


def test_smoke_profile_adversarial_training_is_robust_standard_is_not(cifs_home):
    """The smoke recipe: PGD-20 accuracy of a standard model is far below an adversarially trained one's."""
    runs = {}
    for method in ("standard", "pgd_at"):
        cfg = TrainConfig.from_profile("smoke", defense="none", method=method, eval_n=200,
                                       eval_attacks=("natural", "pgd20"))
        runs[method] = load_or_train(cfg, progress=False).metrics["last"]
    std, at = runs["standard"], runs["pgd_at"]
    assert std["natural"] >= 80 and at["natural"] >= 70, runs
    assert at["pgd20"] >= std["pgd20"] + 15, runs
    assert at["pgd20"] >= 30, runs
