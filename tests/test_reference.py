"""The reference recipe at toy size: it trains, evaluates, writes the JSON that the loader reads."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from cifs_edu import reference
from cifs_edu.analysis import mask_selectivity
from cifs_edu.tools import reference_run
from cifs_edu.errors import ConfigError


def _folder(root, n_train=45, n_test=20, classes=10):
    """An ImageFolder tree of random 32x32 images (class = a colour offset, so it is learnable)."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c in range(classes):
            d = root / split / f"class{c}"
            d.mkdir(parents=True)
            for i in range(n):
                img = rng.integers(0, 80, (32, 32, 3)) + 17 * c
                Image.fromarray(img.astype(np.uint8)).save(d / f"{i}.png")
    return root


def test_mask_selectivity_bounds():
    uniform = mask_selectivity(torch.ones(3, 20))
    assert uniform["effective_channels"] == pytest.approx(20) and uniform["top_mass"] == pytest.approx(0.1)
    one_hot = mask_selectivity(torch.eye(20)[:4] * 7.0)
    assert one_hot["effective_channels"] == pytest.approx(1) and one_hot["top_mass"] == pytest.approx(1)
    with pytest.raises(ConfigError, match=r"\(N, C\)"):
        mask_selectivity(torch.ones(5))


def test_reference_recipe_is_the_paper_mask_with_warm_start():
    cfg = reference_run.reference_config("cifs", "folder:/nowhere")
    assert "scale" not in cfg.model_options and "label_rule" not in cfg.model_options
    assert cfg.warm_start_epochs == 2 and cfg.width == 16 and cfg.n_train is None and cfg.method == "pgd_at"
    van = reference_run.reference_config("none", "folder:/nowhere")
    assert van.training_dict() | {"defense": "cifs", "model_options": cfg.model_options} == cfg.training_dict()
    with pytest.raises(ConfigError, match="defense"):
        reference_run.reference_config("cas")


def test_tiny_run_writes_what_load_reads(tmp_path, monkeypatch):
    root = _folder(tmp_path / "images")
    rec = reference_run.run(f"folder:{root}", tmp_path / "out", tiny=True, stages=("attacks", "channels", "sweep"),
                        progress=False)
    path = tmp_path / "out" / "tiny.json"
    assert path.exists() and path.stat().st_size < 1_000_000
    again = reference.load(path)
    assert again["models"]["cifs"]["weights_sha256"] == rec["models"]["cifs"]["weights_sha256"]
    cifs = again["models"]["cifs"]
    assert [h["natural"] for h in cifs["history"]] == [True, False]  # one warm-start epoch, then PGD-AT
    assert set(cifs["eval"]) == {"attacks", "channels", "sweep"}
    sel = cifs["eval"]["attacks"]["natural"]["selectivity"]["P1"]
    assert 1 <= sel["effective_channels"] <= sel["channels"]
    sweep = cifs["eval"]["sweep"]
    assert sweep["pgd20_per_image_worst"] <= sweep["pgd20_lowest_column"]["accuracy"]
    assert len(again["models"]["vanilla"]["eval"]["channels"]["classes"]) == 10
    pgd = reference.correct(again, "vanilla", "pgd20")  # per-image results, in the seeded test order
    assert pgd.numel() == 200 and 100 * pgd.double().mean().item() == again["models"]["vanilla"]["eval"]["attacks"]["pgd20"]["accuracy"]
    table = reference.table1(again)
    assert list(table.index) == ["vanilla", "cifs"] and table.loc["cifs", "clean"] == cifs["eval"]["attacks"]["natural"]["accuracy"]
    # a committed run is extended from its exported weights: one more stage, the others kept
    committed = tmp_path / "committed"
    committed.mkdir()
    monkeypatch.setattr(reference, "_DIR", committed)
    (committed / "toy.json").write_text(path.read_text())
    for m in ("vanilla", "cifs"):
        reference_run.export_weights(tmp_path / "out" / m, committed / f"toy-{m}.pt")
    ext = reference_run.extend("toy", f"folder:{root}", ("full_grad",), progress=False)
    assert set(ext["models"]["cifs"]["eval"]) == {"attacks", "channels", "sweep", "full_grad"}
    assert ext["models"]["cifs"]["eval"]["sweep"] == sweep and reference.load("toy")["extended"][0]["stages"] == ["full_grad"]
    # a second call trains and evaluates nothing new (same weights, stages skipped)
    assert reference_run.run(f"folder:{root}", tmp_path / "out", tiny=True, stages=("attacks",), progress=False)[
        "models"]["vanilla"]["eval_time_s"] == rec["models"]["vanilla"]["eval_time_s"]


def test_load_rejects_unknown_and_malformed(tmp_path):
    with pytest.raises(ConfigError, match="committed ones"):
        reference.load("no-such-run")
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"schema": 1, "models": {}}))
    with pytest.raises(ConfigError, match="missing model 'vanilla'"):
        reference.load(bad)


def test_committed_reference_run_loads_and_matches_its_weights():
    """The shipped results: real test images, both models, and weights with the digests they were evaluated on."""
    from cifs_edu.training import load_model

    ref = reference.load("cpu")
    assert ref["data"]["label"] == reference.DATA_LABEL and ref["recipe"] == reference.RECIPE and not ref["tiny"]
    assert "cpu" in reference.available()
    for m in ("vanilla", "cifs"):
        r = ref["models"][m]
        assert r["eval"]["attacks"]["n"] == 10000 and len(r["eval"]["attacks"]["pgd20"]["correct"]) == 10000
        assert load_model(reference._DIR / f"cpu-{m}.pt").weights_sha256 == r["weights_sha256"]
    assert "scale" not in ref["models"]["cifs"]["config"]["model_options"]  # the paper's mask
    assert reference.table1(ref).loc["cifs", "clean"] == ref["models"]["cifs"]["eval"]["attacks"]["natural"]["accuracy"]
