"""The smoke recipe end to end: PGD breaks a standard model (near 0%), not an adversarially trained one.

Its own module so that ``pytest -n 2 --dist loadscope`` (``make test``) can run this minute-long
test beside the rest of the training tests.
"""
from __future__ import annotations

from cifs_edu.training import TrainConfig, load_or_train


def test_smoke_profile_adversarial_training_is_robust_standard_is_not(cifs_home):
    """The smoke recipe: a standard model has near-0 PGD-20 accuracy, an adversarially trained one does not.

    Seeds 0-3 of the recipe (500 test images; cifs_edu.synthetic, fourth round): standard 0.2-0.4%
    (hence <= 5 here, on 200 images), PGD-AT 46.6-68.6%."""
    runs = {}
    for method in ("standard", "pgd_at"):
        cfg = TrainConfig.from_profile("smoke", defense="none", method=method, eval_n=200,
                                       eval_attacks=("natural", "pgd20"))
        runs[method] = load_or_train(cfg, progress=False).metrics["last"]
    std, at = runs["standard"], runs["pgd_at"]
    assert std["natural"] >= 80 and at["natural"] >= 70, runs
    assert std["pgd20"] <= 5, runs
    assert at["pgd20"] >= 30, runs
