"""Tests of cifs_edu.datasets and cifs_edu.synthetic (fast: tiny data, no download)."""
from __future__ import annotations

import dataclasses

import os
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

from cifs_edu import datasets as D
from cifs_edu import synthetic as S
from cifs_edu.profiles import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("CIFS_SHARED", REPO.parent / "shared"))
SAMPLE = SHARED / "data" / "cifar10-sample"


# ----------------------------------------------------------------------------- helpers


def _write_png(img: torch.Tensor, path: Path) -> None:
    from PIL import Image

    Image.fromarray(img.permute(1, 2, 0).numpy()).save(path)


def _write_folder(base: Path, n_train: int = 8, n_test: int = 3, classes=("cat", "dog", "eel"), size=8) -> Path:
    """An ImageFolder tree whose image i (over the whole tree) is a flat colour encoding i."""
    i = 0
    for split, n in (("train", n_train), ("test", n_test)):
        for c in classes:
            d = base / split / c
            d.mkdir(parents=True)
            for j in range(n):
                img = torch.zeros(3, size, size, dtype=torch.uint8)
                img[0], img[1] = i % 256, i // 256
                _write_png(img, d / f"{j:03d}.png")
                i += 1
    return base


def _ids(ds) -> list[int]:
    """Identity of each image of a dataset built by _write_folder (from its flat colour)."""
    x, _ = D.as_tensors(ds)
    px = (x[:, :2, 0, 0] * 255).round().long()
    return (px[:, 0] + 256 * px[:, 1]).tolist()


# ----------------------------------------------------------------------------- bad configs


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(dataset="cifar100"),
        dict(dataset="folder:"),
        dict(dataset="synthetic", n_train=0),
        dict(dataset="synthetic", n_train=-5),
        dict(dataset="synthetic", n_train=2.5),
        dict(dataset="synthetic", n_test=True),
        dict(dataset="synthetic", n_val=-1),
        dict(dataset="synthetic", seed=-1),
        dict(dataset="synthetic", image_size=16),
    ],
)
def test_bad_configs_raise_config_error(kwargs):
    with pytest.raises(ConfigError):
        D.load_data(**kwargs)


def test_config_error_is_raised_before_any_loading(tmp_path):
    # an impossible size must be reported even when the data is not there
    with pytest.raises(ConfigError, match="n_train"):
        D.load_data("cifar10", n_train=0, root=tmp_path, download=False)


def test_sizes_larger_than_the_data_raise(tmp_path):
    base = _write_folder(tmp_path / "f")
    with pytest.raises(ConfigError, match="exceeds"):
        D.load_data(f"folder:{base}", n_train=20, n_val=5)  # 24 training images exist
    with pytest.raises(ConfigError, match="exceeds"):
        D.load_data(f"folder:{base}", n_test=10)  # 9 test images exist
    with pytest.raises(ConfigError):
        D.balanced_indices(torch.tensor([0, 1, 1]), 4, torch.Generator().manual_seed(0))


# ----------------------------------------------------------------------------- missing data


@pytest.mark.parametrize("name,title", [("cifar10", "CIFAR-10"), ("svhn", "SVHN"), ("fmnist", "Fashion-MNIST")])
def test_missing_torchvision_data_raises_clear_error(tmp_path, name, title):
    root = tmp_path / "nothing-here"
    with pytest.raises(D.DataNotFoundError) as info:
        D.load_data(name, root=root, download=False)
    msg = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert title in msg and str(root) in msg
    assert "download=True" in msg and D.DATA_ENV in msg


def test_failed_download_raises_clear_error(tmp_path, monkeypatch):
    import torchvision.datasets as tvd

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tvd, "CIFAR10", offline)
    with pytest.raises(D.DataNotFoundError) as info:
        D.load_data("cifar10", root=tmp_path, download=True)
    msg = str(info.value)
    assert "CIFAR-10" in msg and str(tmp_path) in msg and "internet" in msg and "synthetic" in msg
    assert isinstance(info.value.__cause__, urllib.error.URLError)


def test_missing_folder_raises_clear_error(tmp_path):
    with pytest.raises(D.DataNotFoundError, match="ImageFolder") as info:
        D.load_data(f"folder:{tmp_path / 'absent'}")
    assert str(tmp_path / "absent" / "train") in str(info.value)
    (tmp_path / "empty" / "train" / "a").mkdir(parents=True)
    (tmp_path / "empty" / "test" / "a").mkdir(parents=True)
    with pytest.raises(D.DataNotFoundError, match="no images"):
        D.load_data(f"folder:{tmp_path / 'empty'}")


def test_data_root_follows_argument_then_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(D.DATA_ENV, raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("CIFS_HOME", raising=False)
    assert D.data_root().parts[-2:] == ("cifs_edu", "data")
    monkeypatch.setenv("CIFS_HOME", str(tmp_path / "home"))  # the same folder training uses
    assert D.data_root() == tmp_path / "home" / "data"
    monkeypatch.setenv(D.DATA_ENV, str(tmp_path / "env"))
    assert D.data_root() == tmp_path / "env"
    assert D.data_root(tmp_path / "arg") == tmp_path / "arg"


# ----------------------------------------------------------------------------- torchvision conversion


class _FakeTV:
    """Stands in for a torchvision data set class: records calls, serves arrays in its layout."""

    def __init__(self, layout):
        self.layout, self.calls = layout, []

    def __call__(self, root, train=None, split=None, download=False):
        self.calls.append(dict(root=root, train=train, split=split, download=download))
        n = 20 if (train or split == "train") else 10
        rng = np.random.default_rng(n)
        labels = np.arange(n) % 10
        obj = type("DS", (), {})()
        if self.layout == "cifar10":
            obj.data = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
            obj.targets, obj.classes = labels.tolist(), [f"c{k}" for k in range(10)]
        elif self.layout == "svhn":
            obj.data = rng.integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
            obj.labels = labels
        else:
            obj.data = torch.from_numpy(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
            obj.targets, obj.classes = torch.from_numpy(labels), [f"f{k}" for k in range(10)]
        return obj


@pytest.mark.parametrize(
    "name,cls,shape,aug",
    [("cifar10", "CIFAR10", (3, 32, 32), True), ("svhn", "SVHN", (3, 32, 32), False), ("fmnist", "FashionMNIST", (1, 28, 28), False)],
)
def test_torchvision_sets_become_uint8_tensors(tmp_path, monkeypatch, name, cls, shape, aug):
    import torchvision.datasets as tvd

    fake = _FakeTV(name)
    monkeypatch.setattr(tvd, cls, fake)
    d = D.load_data(name, root=tmp_path, n_val=10)
    assert [c["download"] for c in fake.calls] == [True, True]
    assert all(c["root"] == str(tmp_path) for c in fake.calls)
    if name == "svhn":
        assert [c["split"] for c in fake.calls] == ["train", "test"]
    assert (d.in_channels, d.image_size, d.image_size) == shape
    assert (len(d.train), len(d.val), len(d.test)) == (10, 10, 10)
    assert d.augmentation.startswith("random crop") is aug
    x = d.test.x[3]
    assert x.dtype == torch.float32 and tuple(x.shape) == shape and 0 <= x.min() and x.max() <= 1
    # the first test image, converted back, equals the array torchvision served
    raw = fake(str(tmp_path), train=False, split="test").data
    raw = torch.as_tensor(np.asarray(raw))
    raw = raw.permute(0, 3, 1, 2) if name == "cifar10" else raw.unsqueeze(1) if name == "fmnist" else raw
    assert torch.equal(d.test.images, raw)


# ----------------------------------------------------------------------------- subsets and splits


def test_subsets_are_balanced_per_class():
    d = D.load_data("synthetic", n_train=200, n_val=50, n_test=100, seed=3)
    assert set(D.class_counts(d.train).values()) == {20}
    assert set(D.class_counts(d.val).values()) == {5}
    assert set(D.class_counts(d.test).values()) == {10}
    assert list(D.class_counts(d.train)) == d.classes


def test_balanced_indices_spread_a_shortfall_over_other_classes():
    targets = torch.tensor([0] * 2 + [1] * 10 + [2] * 10 + [3] * 1)
    idx = D.balanced_indices(targets, 15, torch.Generator().manual_seed(0))
    counts = torch.bincount(targets[idx], minlength=4).tolist()
    assert sum(counts) == 15 and len(set(idx.tolist())) == 15
    assert counts[0] == 2 and counts[3] == 1 and sorted(counts[1:3]) == [6, 6]
    idx = D.balanced_indices(targets, 7, torch.Generator().manual_seed(1))
    counts = torch.bincount(targets[idx], minlength=4).tolist()
    assert max(counts) - min(counts) <= 1 and sum(counts) == 7


def test_val_split_is_disjoint_from_train_and_independent_of_n_train(tmp_path):
    base = _write_folder(tmp_path / "f", n_train=10)
    full = D.load_data(f"folder:{base}", n_val=6, seed=1)
    small = D.load_data(f"folder:{base}", n_train=9, n_val=6, seed=1)
    val, train, train_small = set(_ids(full.val)), set(_ids(full.train)), set(_ids(small.train))
    assert len(val) == 6 and set(D.class_counts(full.val).values()) == {2}
    assert val.isdisjoint(train) and val.isdisjoint(train_small)
    assert len(train) == 24 and train_small < train  # all 30 training images = 24 train + 6 val
    assert _ids(small.val) == _ids(full.val)  # val is carved before the training subset
    test = set(_ids(full.test))
    assert test.isdisjoint(train | val) and len(test) == 9
    other = D.load_data(f"folder:{base}", n_val=6, seed=2)
    assert set(_ids(other.val)) != val  # the seed picks the split
    assert D.load_data(f"folder:{base}", n_test=6, seed=5).test.images.equal(
        D.load_data(f"folder:{base}", n_test=6, seed=6).test.images
    )  # the test subset does not depend on the run's seed


def test_folder_loading_and_cache(tmp_path):
    base = _write_folder(tmp_path / "f")
    d = D.load_data(f"folder:{base}", n_val=3)
    assert d.classes == ["cat", "dog", "eel"] and d.num_classes == 3
    assert (d.in_channels, d.image_size) == (3, 8)
    assert d.augmentation.startswith("random crop 8")
    assert d.name == f"folder:{base}" and d.root == str(base)
    assert D.class_counts(d.test) == {"cat": 3, "dog": 3, "eel": 3}
    x, y = D.as_tensors(d.test)
    assert y.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert _ids(d.test) == list(range(24, 33))  # pixels survive the round trip exactly
    assert D.load_data(f"folder:{base}").test.images.data_ptr() != 0
    n_cached = len(D._FOLDER_CACHE)
    D.load_data(f"folder:{base}", n_train=3)
    assert len(D._FOLDER_CACHE) == n_cached  # decoded once, reused


def test_folder_with_mixed_sizes_needs_image_size(tmp_path):
    base = _write_folder(tmp_path / "f", size=8)
    _write_png(torch.zeros(3, 10, 12, dtype=torch.uint8), base / "train" / "cat" / "odd.png")
    with pytest.raises(ConfigError, match="image_size"):
        D.load_data(f"folder:{base}")
    d = D.load_data(f"folder:{base}", image_size=6)
    assert d.image_size == 6 and tuple(d.test.x[0].shape) == (3, 6, 6)


@pytest.mark.shared
@pytest.mark.skipif(not SAMPLE.is_dir(), reason="../shared/data/cifar10-sample is absent")
def test_shared_cifar10_sample_folder():
    d = D.load_data(f"folder:{SAMPLE}", n_train=1000, n_val=500, n_test=1000, seed=0)
    assert d.classes == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert (d.in_channels, d.image_size) == (3, 32)
    assert set(D.class_counts(d.train).values()) == {100}
    assert set(D.class_counts(d.val).values()) == {50}
    assert set(D.class_counts(d.test).values()) == {100}
    x, y = D.as_tensors(d.test, 64)
    assert x.shape == (64, 3, 32, 32) and 0 <= x.min() < 0.1 and 0.9 < x.max() <= 1
    assert 0.3 < x.mean() < 0.7  # natural images, not blank
    full = D.load_data(f"folder:{SAMPLE}")
    assert (len(full.train), len(full.test)) == (5000, 1000)


# ----------------------------------------------------------------------------- tensors, loaders, augmentation


def test_splits_are_the_tensors_training_uses(tmp_path):
    """One path from files to tensors: a split's x/y are load_tensors' tensors, never augmented."""
    from cifs_edu.training import TrainConfig
    from cifs_edu.training.data import load_tensors

    base = _write_folder(tmp_path / "f")
    d = D.load_data(f"folder:{base}", n_val=3)
    assert torch.equal(d.train.x, d.train.images.float() / 255) and d.train.y.dtype == torch.int64
    assert torch.equal(d.train.x, d.train.x)  # no random crops: augmentation is the trainer's
    assert D._AUGMENT["svhn"] is False and d.augmentation.startswith("random crop")
    assert D.load_data("synthetic", n_train=20, n_test=10).augmentation == "none"
    cfg = TrainConfig.from_profile("smoke", dataset=f"folder:{base}", n_train=None, n_val=3, n_test=None, seed=0)
    t = load_tensors(cfg)
    assert torch.equal(t.x_train, d.train.x) and torch.equal(t.y_val, d.val.y) and torch.equal(t.x_test, d.test.x)
    with pytest.raises(ConfigError, match="split"):
        D.as_tensors((d.test.x, d.test.y))


def test_as_tensors_first_and_balanced():
    d = D.load_data("synthetic", n_train=100, n_test=50)
    x, y = D.as_tensors(d.train)
    assert x.shape == (100, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.equal(x, d.train.images.float() / 255)
    x5, y5 = D.as_tensors(d.test, 5)
    assert torch.equal(y5, d.test.targets[:5])
    xb, yb = D.as_tensors(d.test, 20, balanced=True)
    assert torch.bincount(yb, minlength=10).tolist() == [2] * 10
    with pytest.raises(ConfigError):
        D.as_tensors(d.test, 51)
    assert D.class_counts(d.test) == dict.fromkeys(d.classes, 5)


def test_describe_says_what_the_data_is():
    d = D.load_data("synthetic", n_train=30, n_val=10, n_test=20)
    text = d.describe()
    assert "NOT CIFAR-10" in text and "30 train / 10 val / 20 test" in text and "3x32x32" in text
    assert d.num_classes == 10 and d.in_channels == 3 and d.image_size == 32 and d.val is not None
    assert D.load_data("synthetic", n_train=30, n_test=20).val is None


# ----------------------------------------------------------------------------- synthetic data


def test_synthetic_shapes_balance_and_range():
    data = S.make_synthetic(50, 20, seed=1)
    assert data.x_train.shape == (50, 3, 32, 32) and data.x_train.dtype == torch.uint8
    assert data.x_test.shape == (20, 3, 32, 32) and data.y_test.dtype == torch.int64
    assert torch.bincount(data.y_train, minlength=10).tolist() == [5] * 10
    assert torch.bincount(data.y_test, minlength=10).tolist() == [2] * 10
    assert len(S.CLASSES) == 10 and len(set(S.CLASSES)) == 10
    x = data.x_train.float() / 255
    assert 0 <= x.min() and x.max() <= 1 and x.std() > 0.1  # in [0, 1], not blank
    d = D.load_data("synthetic", n_train=40, n_test=20)
    x0 = d.train.x[0]
    assert x0.dtype == torch.float32 and x0.shape == (3, 32, 32) and 0 <= x0.min() and x0.max() <= 1
    assert d.classes == list(S.CLASSES)


def test_synthetic_is_deterministic_from_the_seed():
    a = S.make_synthetic(30, 10, seed=7)
    b = S.make_synthetic(30, 10, seed=7)
    c = S.make_synthetic(30, 10, seed=8)
    assert all(torch.equal(u, v) for u, v in zip(a, b))
    assert not torch.equal(a.x_train, c.x_train) and not torch.equal(a.x_test, c.x_test)
    fixed = S.make_synthetic(30, 10, seed=8, test_seed=7)
    assert torch.equal(fixed.x_test, a.x_test)  # test images follow test_seed only
    train_split, _ = S.make_split(10, 7, "train")
    test_split, _ = S.make_split(10, 7, "test")
    assert not torch.equal(train_split, test_split)  # separate streams
    d1 = D.load_data("synthetic", n_train=30, n_val=10, n_test=10, seed=1)
    d2 = D.load_data("synthetic", n_train=30, n_val=10, n_test=10, seed=2)
    assert not torch.equal(d1.train.images, d2.train.images)
    assert torch.equal(d1.test.images, d2.test.images)  # one test set for every run


def _texture_class(residual: torch.Tensor, cfg: S.SyntheticConfig) -> torch.Tensor:
    """The class whose texture (at its best phase) correlates most with each residual image."""
    pats = S.texture_patterns(cfg)  # (10, 3, t, t)
    t = cfg.tile
    n = residual.shape[0]
    scores = torch.full((n, 10), -float("inf"))
    for oy in range(t):
        for ox in range(t):
            tiled = pats.repeat(1, 1, 32 // t + 2, 32 // t + 2)[:, :, oy : oy + 32, ox : ox + 32]
            s = torch.einsum("nchw,kchw->nk", residual, tiled)
            scores = torch.maximum(scores, s)
    return scores.argmax(1)


def test_synthetic_texture_is_small_and_alone_predicts_the_label():
    cfg = S.SyntheticConfig()
    x, y = S.make_split(100, 3, "test")
    x_none, y_none = S.make_split(100, 3, "test", texture="none")
    x_shift, _ = S.make_split(100, 3, "test", texture="shifted")
    assert torch.equal(y, y_none)
    diff = x.float() - x_none.float()  # uint8 units
    amp = cfg.texture * 255
    assert diff.abs().max() <= amp + 1  # below eps/2 = 4/255 (+ rounding): never clipped
    assert abs(diff.abs().mean() - amp) < 0.5  # present on every pixel
    assert torch.equal(_texture_class(diff, cfg), y)  # a perfect predictor on its own
    shifted = x_shift.float() - x_none.float()
    assert torch.equal(_texture_class(shifted, cfg), (y + 1) % 10)
    # two textures differ by at most 2 x amplitude = 8/255 per pixel: PGD at eps=8/255 can swap them
    assert (x_shift.float() - x.float()).abs().max() <= 2 * amp + 1


def test_synthetic_shape_is_large_and_class_specific():
    x_none, y = S.make_split(200, 0, "train", texture="none")
    x = x_none.float() / 255
    # the object differs from the background (the corners) by far more than eps = 8/255
    corner = x[:, :, :2, :2].mean((2, 3), keepdim=True)
    dev = (x - corner).abs().amax(1)  # (N, 32, 32): per-pixel largest channel deviation
    obj = dev > 0.1  # > 3 x eps (contrast 0.2-0.4 per channel on average; soft edges, thin frames)
    assert (obj.float().mean((1, 2)) > 0.08).all()  # every image has a large shape
    # the mean shape mask of each class is distinct from every other class's
    masks = torch.stack([obj[y == k].float().mean(0) for k in range(10)])
    dist = torch.cdist(masks.flatten(1), masks.flatten(1))
    assert (dist + torch.eye(10) * 100).min() > 2.0


def test_synthetic_bad_configs_raise():
    with pytest.raises(ConfigError):
        S.SyntheticConfig(texture=-0.1)
    with pytest.raises(ConfigError):
        S.SyntheticConfig(radius=(5.0, 3.0))
    with pytest.raises(ConfigError, match="edge must be > 0"):
        S.SyntheticConfig(edge=0.0)
    with pytest.raises(ConfigError):
        S.make_split(10, 0, "val")
    with pytest.raises(ConfigError):
        S.make_split(10, 0, texture="sometimes")
    with pytest.raises(ConfigError):
        S.make_synthetic(-1, 10)


def test_softer_edges_lower_the_steepest_step():
    """``edge`` sets how steep the shape's border is (same draws otherwise)."""
    y = torch.arange(10)
    cfg = S.SyntheticConfig(texture=0.0, contrast=(0.5, 0.8), edge=1.5)
    sharp = S.render(y, torch.Generator().manual_seed(3), cfg).float()
    soft = S.render(y, torch.Generator().manual_seed(3), dataclasses.replace(cfg, edge=0.4)).float()
    step = lambda x: (x[..., 1:] - x[..., :-1]).abs().amax(dim=(1, 2, 3))  # noqa: E731  per image
    assert (step(soft) < 0.6 * step(sharp)).all() and (step(sharp) > 25).all()
