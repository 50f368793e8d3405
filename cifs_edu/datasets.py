"""Data: CIFAR-10, SVHN, Fashion-MNIST, any image folder, and the embedded synthetic set.

One entry point, :func:`load_data`, returns a :class:`DataSplits` (train / val / test), each
split a :class:`Split` of in-memory tensors: ``split.x`` float32 ``(N, C, H, W)`` in ``[0, 1]``
(models normalise internally, if at all) and ``split.y`` int64 ``(N,)``. These are the tensors
training uses (:func:`cifs_edu.training.data.load_tensors`); there is no second loading path.

=============  ==================  ==========  ===============================================
name           source              image       training augmentation (train split only)
=============  ==================  ==========  ===============================================
``synthetic``  generated here      3x32x32     none (position, size and colour are already random;
                                               zero-padded crops put black borders on its grey
                                               images and cost adversarial training ~40 points)
``cifar10``    torchvision         3x32x32     random crop 32 (zero padding 4) + horizontal flip
``svhn``       torchvision         3x32x32     none (digits must not be mirrored; the paper uses none)
``fmnist``     torchvision         1x28x28     none (centred, aligned images, kept at 28x28)
``folder:P``   ``P/train``,        as stored   random crop (zero padding 4) + horizontal flip
               ``P/test``
=============  ==================  ==========  ===============================================

All images are held in memory as ``uint8`` tensors (CIFAR-10's training set is 50,000 x 3 x
32 x 32 bytes = 150 MB). The training augmentation of the table is applied per batch by the
trainer (:func:`cifs_edu.training.data.augment_batch`); :func:`default_augmentation` says which
data sets get it.

Where the real data sets live: ``root`` if given, else the ``CIFS_DATA`` environment
variable, else ``~/.cache/cifs_edu/data`` (``$XDG_CACHE_HOME/cifs_edu/data`` when that is
set). The folder is a plain torchvision root, so an existing download can be reused by
pointing ``CIFS_DATA`` at it. A data set that is missing and cannot be downloaded raises
:class:`DataNotFoundError`, whose message names the data set, the folder and the fix;
nothing is ever replaced silently by other data.

Splits: the validation split (``n_val`` images, for choosing the best epoch without
looking at the test set) is carved from the full training set first, balanced per class;
then ``n_train`` training images are drawn, balanced per class, from what remains. Both
choices are deterministic given ``seed``. The test subset (``n_test``) is balanced too and
drawn with a fixed seed, so every run of a comparison sees the same test images.
"""
from __future__ import annotations

import os
import urllib.error
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError
from .names import DATASETS
from .paths import data_dir

__all__ = [
    "DATASETS",
    "default_augmentation",
    "DATA_ENV",
    "DataNotFoundError",
    "DataSplits",
    "Split",
    "load_data",
    "as_tensors",
    "class_counts",
    "balanced_indices",
    "data_root",
    "clear_folder_cache",
]

DATA_ENV = "CIFS_DATA"
TEST_SUBSET_SEED = 0  # the test subset never depends on the run's seed
PAD = 4  # zero padding of the random crop (the paper's augmentation)

_AUGMENT = {"synthetic": False, "cifar10": True, "svhn": False, "fmnist": False, "folder": True}


def default_augmentation(dataset: str) -> bool:
    """Whether ``dataset``'s training images get random crop + flip by default (the module table);
    ``folder:<path>`` counts as ``"folder"``. The one place both :func:`load_data` and
    :meth:`cifs_edu.training.TrainConfig.resolved_augment` read it from."""
    return _AUGMENT["folder" if dataset.startswith("folder:") else dataset]


_TITLES = {
    "synthetic": "embedded synthetic shapes (NOT CIFAR-10)",
    "cifar10": "CIFAR-10",
    "svhn": "SVHN",
    "fmnist": "Fashion-MNIST",
}


class DataNotFoundError(FileNotFoundError):
    """A data set is not on disk and could not be fetched; the message says which, where and how to fix it."""


# --------------------------------------------------------------------------- datasets


class Split:
    """One split held in memory: ``images`` uint8 ``(N, C, H, W)``, ``targets`` int64 ``(N,)``.

    ``x`` is the float32 view in ``[0, 1]`` that models take, ``y`` the labels; ``classes[k]``
    names label ``k``. Never augmented (the trainer augments its batches).
    """

    def __init__(self, images: torch.Tensor, targets: torch.Tensor, classes: Sequence[str]):
        if images.dtype != torch.uint8 or images.dim() != 4:
            raise ValueError(f"images must be a uint8 tensor (N, C, H, W), got {images.dtype} {tuple(images.shape)}")
        if targets.shape != (images.shape[0],):
            raise ValueError(f"targets must have shape ({images.shape[0]},), got {tuple(targets.shape)}")
        self.images = images
        self.targets = targets.long()
        self.classes = list(classes)

    @property
    def x(self) -> torch.Tensor:
        """Images as float32 ``(N, C, H, W)`` in ``[0, 1]`` (a new tensor)."""
        return self.images.float().div_(255)

    @property
    def y(self) -> torch.Tensor:
        """Labels, int64 ``(N,)``."""
        return self.targets

    def __len__(self) -> int:
        return self.images.shape[0]

    def subset(self, indices: torch.Tensor) -> "Split":
        """A new split holding the images at ``indices`` (copied)."""
        return Split(self.images[indices], self.targets[indices], self.classes)

    def __repr__(self) -> str:
        c, h, w = self.images.shape[1:]
        return f"Split({len(self)} images {c}x{h}x{w}, {len(self.classes)} classes)"


# --------------------------------------------------------------------------- splits


@dataclass
class DataSplits:
    """The three splits of one data set, and what a model needs to know about it.

    Attributes:
        train: training data (the trainer augments its batches if the data set's recipe says so).
        val: validation data carved from the training set, or ``None``.
        test: test data.
        classes: class names; ``classes[k]`` is label ``k``.
        name: the data set's name as passed to :func:`load_data`.
        in_channels, image_size: input shape ``(in_channels, image_size, image_size)``.
        augmentation: a short description of the training augmentation the trainer applies.
        root: the folder the data came from (``None`` for the synthetic set).
    """

    train: Split
    val: Split | None
    test: Split
    classes: list[str]
    name: str
    in_channels: int
    image_size: int
    augmentation: str
    root: str | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> str:
        """One line, e.g. ``"cifar10: 5000 train / 500 val / 1000 test; 10 classes; 3x32x32; ..."``."""
        title = _TITLES.get(self.name, f"image folder {self.root}")
        n_val = 0 if self.val is None else len(self.val)
        return (
            f"{self.name} [{title}]: {len(self.train)} train / {n_val} val / {len(self.test)} test; "
            f"{self.num_classes} classes; {self.in_channels}x{self.image_size}x{self.image_size}; "
            f"train augmentation: {self.augmentation}"
        )

    def __str__(self) -> str:
        return self.describe()


def balanced_indices(
    targets: torch.Tensor, n: int, generator: torch.Generator, num_classes: int | None = None
) -> torch.Tensor:
    """``n`` indices into ``targets``, as balanced across classes as the counts allow.

    Every class gets ``n // K`` (the first ``n % K`` classes in a seeded order one more);
    a class with too few images gives all it has and the shortfall is spread over the
    others. Within a class the images are a seeded random choice. Returns sorted indices.

    Raises:
        ConfigError: if ``n`` exceeds ``len(targets)``.
    """
    targets = targets.long()
    if n > targets.numel():
        raise ConfigError(f"asked for {n} images but only {targets.numel()} are available")
    k = int(targets.max()) + 1 if num_classes is None else num_classes
    counts = torch.bincount(targets, minlength=k)
    # water-filling: the largest level L with sum(min(counts, L)) <= n ...
    level = 0
    while level < int(counts.max()) and int(counts.clamp(max=level + 1).sum()) <= n:
        level += 1
    quota = counts.clamp(max=level)
    # ... then one more image for (n - sum) classes that still have some, in a seeded order
    short = n - int(quota.sum())
    if short:
        roomy = (counts > level).nonzero().flatten()
        quota[roomy[torch.randperm(roomy.numel(), generator=generator)[:short]]] += 1
    chosen = []
    for c in range(k):
        if quota[c]:
            idx = (targets == c).nonzero().flatten()
            perm = torch.randperm(idx.numel(), generator=generator)[: int(quota[c])]
            chosen.append(idx[perm])
    return torch.cat(chosen).sort().values if chosen else torch.empty(0, dtype=torch.long)


def class_counts(split: Split) -> dict[str, int]:
    """Images per class of a split, ``{class name: count}`` in label order."""
    counts = torch.bincount(split.targets, minlength=len(split.classes)).tolist()
    return dict(zip(split.classes, counts))


def _split(
    train_pool: Split,
    test_pool: Split,
    n_train: int | None,
    n_val: int,
    n_test: int | None,
    seed: int,
    name: str,
) -> tuple[Split, Split | None, Split]:
    """Carve val from the full training pool, then subset train and test (all balanced)."""
    n_pool = len(train_pool)
    need = n_val + (n_train or 0)
    if need > n_pool or (n_train is None and n_val >= n_pool):
        raise ConfigError(
            f"{name}: n_train + n_val = {n_train or 0} + {n_val} exceeds the {n_pool} training images available"
        )
    if n_test is not None and n_test > len(test_pool):
        raise ConfigError(f"{name}: n_test = {n_test} exceeds the {len(test_pool)} test images available")
    k = len(train_pool.classes)
    g = torch.Generator().manual_seed(seed)
    rest = torch.arange(n_pool)
    val = None
    if n_val:
        val_idx = balanced_indices(train_pool.targets, n_val, g, k)
        keep = torch.ones(n_pool, dtype=torch.bool)
        keep[val_idx] = False
        rest = rest[keep]
        val = train_pool.subset(val_idx)
    if n_train is not None:
        rest = rest[balanced_indices(train_pool.targets[rest], n_train, g, k)]
    train = train_pool.subset(rest)
    if n_test is not None:
        gt = torch.Generator().manual_seed(TEST_SUBSET_SEED)
        test = test_pool.subset(balanced_indices(test_pool.targets, n_test, gt, k))
    else:
        test = test_pool.subset(torch.arange(len(test_pool)))
    return train, val, test


# --------------------------------------------------------------------------- sources


def data_root(root: str | os.PathLike | None = None) -> Path:
    """The data folder: ``root``, else :func:`cifs_edu.paths.data_dir` (``$CIFS_DATA``, else
    ``$CIFS_HOME/data``, else ``~/.cache/cifs_edu/data``): the same folder training uses."""
    if root is not None:
        return Path(root).expanduser()
    return data_dir()


def _not_found(name: str, root: Path, download: bool, cause: BaseException) -> DataNotFoundError:
    title = _TITLES[name]
    if download:
        how = (
            f"the download failed ({type(cause).__name__}: {cause}). Fix: run once with internet access "
            f"(load_data({name!r}, download=True)), or copy an existing torchvision download of {title} "
            f"into that folder, or set {DATA_ENV} to a folder that has it; for an offline run use "
            "dataset='synthetic' (embedded, no download) instead"
        )
    else:
        how = (
            f"download=False was given. Fix: pass download=True (needs internet once), or set {DATA_ENV} "
            f"(or root=) to a folder holding a torchvision download of {title}"
        )
    return DataNotFoundError(f"{title} ({name!r}) was not found in {root}: {how}.")


def _torchvision(name: str, root: Path, download: bool) -> tuple[Split, Split]:
    """Load a torchvision data set (real downloader) and convert it to uint8 tensors once."""
    try:
        import torchvision.datasets as tvd
    except ImportError as e:
        raise DataNotFoundError(
            f"data set {name!r} is read through torchvision's downloader, and torchvision is not installed "
            f"({e}). Fix: pip install torchvision (the build that matches your torch), or pip install "
            "'cifs_edu[data]'; or use 'folder:<path>' with the images in folders") from None

    def make(train: bool):
        if name == "cifar10":
            return tvd.CIFAR10(str(root), train=train, download=download)
        if name == "svhn":
            return tvd.SVHN(str(root), split="train" if train else "test", download=download)
        return tvd.FashionMNIST(str(root), train=train, download=download)

    try:
        if download:
            root.mkdir(parents=True, exist_ok=True)
        parts = [make(True), make(False)]
    except (RuntimeError, OSError, urllib.error.URLError, ValueError) as e:
        raise _not_found(name, root, download, e) from e
    out = []
    for ds in parts:
        if name == "cifar10":
            images = torch.from_numpy(np.ascontiguousarray(ds.data)).permute(0, 3, 1, 2).contiguous()
            targets, classes = torch.as_tensor(ds.targets), list(ds.classes)
        elif name == "svhn":
            images = torch.from_numpy(np.ascontiguousarray(ds.data))
            targets, classes = torch.as_tensor(ds.labels, dtype=torch.long), [str(d) for d in range(10)]
        else:
            images = ds.data.unsqueeze(1).contiguous()
            targets, classes = ds.targets.clone(), list(ds.classes)
        out.append(Split(images, targets, classes))
    return out[0], out[1]


_FOLDER_CACHE: dict[tuple, tuple[torch.Tensor, torch.Tensor, list[str]]] = {}


def clear_folder_cache() -> None:
    """Forget the decoded images of every image folder loaded so far."""
    _FOLDER_CACHE.clear()


def _read_image_folder(split_dir: Path, image_size: int | None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """Decode an ImageFolder tree (``split_dir/<class>/<image>``) into uint8 RGB tensors (cached)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS

    classes = sorted(d.name for d in split_dir.iterdir() if d.is_dir() and not d.name.startswith("."))
    files, labels = [], []
    for k, c in enumerate(classes):
        for f in sorted((split_dir / c).rglob("*")):
            if f.is_file() and f.name.lower().endswith(IMG_EXTENSIONS):
                files.append(f)
                labels.append(k)
    if not files:
        raise DataNotFoundError(
            f"image folder {split_dir} holds no images: expected {split_dir}/<class name>/<image>.jpg|png "
            "(torchvision ImageFolder layout)"
        )
    key = (str(split_dir.resolve()), image_size, len(files), max(f.stat().st_mtime_ns for f in files))
    if key in _FOLDER_CACHE:
        return _FOLDER_CACHE[key]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # Pillow decodes without the GIL
        images = list(pool.map(_decode, files, chunksize=64))
    sizes = {tuple(im.shape[1:]) for im in images}
    if image_size is not None:
        from torchvision.transforms.v2 import functional as TF

        images = [im if im.shape[1:] == (image_size, image_size) else TF.resize(im, [image_size, image_size], antialias=True) for im in images]
    elif len(sizes) > 1:
        raise ConfigError(
            f"images in {split_dir} have {len(sizes)} different sizes (e.g. {sorted(sizes)[:3]}); "
            "pass image_size=<pixels> to resize them all to a square"
        )
    out = (torch.stack(images), torch.as_tensor(labels, dtype=torch.long), classes)
    _FOLDER_CACHE[key] = out
    return out


def _decode(path: Path) -> torch.Tensor:
    """One image file -> uint8 RGB tensor (3, H, W) (decoded by Pillow, as ImageFolder does)."""
    from PIL import Image

    with Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def _folder(path: str, image_size: int | None) -> tuple[Split, Split, Path]:
    base = Path(path).expanduser()
    missing = [s for s in ("train", "test") if not (base / s).is_dir()]
    if missing:
        raise DataNotFoundError(
            f"image folder dataset 'folder:{path}': {', '.join(str(base / s) for s in missing)} not found. "
            f"Fix: point 'folder:<path>' at a folder holding train/<class>/<images> and test/<class>/<images> "
            "(torchvision ImageFolder layout)"
        )
    tr = _read_image_folder(base / "train", image_size)
    te = _read_image_folder(base / "test", image_size)
    if tr[2] != te[2]:
        raise ConfigError(f"folder:{path}: train classes {tr[2]} differ from test classes {te[2]}")
    if tr[0].shape[1:] != te[0].shape[1:]:
        raise ConfigError(
            f"folder:{path}: train images are {tuple(tr[0].shape[1:])} but test images are "
            f"{tuple(te[0].shape[1:])}; pass image_size=<pixels>"
        )
    return Split(*tr), Split(*te), base


# --------------------------------------------------------------------------- entry points


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation (Linux ``MemAvailable``); ``None`` if unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def check_memory(n_images: int, bytes_per_image: int, what: str) -> None:
    """Raise :class:`ConfigError` before allocating ``n_images`` images that cannot fit in memory."""
    need, have = n_images * bytes_per_image, available_memory()
    if have is not None and need > have:
        raise ConfigError(f"{n_images:,} {what} need about {need / 2**30:.1f} GiB, but only {have / 2**30:.1f} GiB "
                          "of memory is available: ask for fewer images")


def _check(dataset: str, n_train, n_val, n_test, seed) -> str:
    problems = []
    if not isinstance(dataset, str):
        raise ConfigError(f"dataset must be a string, got {dataset!r}")
    kind = "folder" if dataset.startswith("folder:") else dataset
    if kind not in DATASETS and kind != "folder":
        problems.append(f"unknown dataset {dataset!r}: choose one of {DATASETS} or 'folder:<path>'")
    if kind == "folder" and not dataset[len("folder:"):].strip():
        problems.append("'folder:' needs a path, e.g. 'folder:../shared/data/cifar10-sample'")
    for name, v in (("n_train", n_train), ("n_test", n_test)):
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v <= 0):
            problems.append(f"{name} must be a positive int or None (got {v!r})")
    if isinstance(n_val, bool) or not isinstance(n_val, int) or n_val < 0:
        problems.append(f"n_val must be an int >= 0 (got {n_val!r})")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        problems.append(f"seed must be an int >= 0 (got {seed!r})")
    if problems:
        raise ConfigError("load_data: " + "; ".join(problems))
    return kind


def load_data(
    dataset: str = "synthetic",
    *,
    n_train: int | None = None,
    n_val: int = 0,
    n_test: int | None = None,
    root: str | os.PathLike | None = None,
    seed: int = 0,
    download: bool = True,
    image_size: int | None = None,
) -> DataSplits:
    """Load a data set as train / val / test splits of in-memory image tensors.

    Args:
        dataset: ``"synthetic"`` (embedded, offline; see :mod:`cifs_edu.synthetic`),
            ``"cifar10"``, ``"svhn"``, ``"fmnist"`` (torchvision downloaders) or
            ``"folder:<path>"`` (``<path>/train/<class>/*`` and ``<path>/test/<class>/*``).
        n_train: training images kept after the validation split (balanced per class);
            ``None`` keeps all (for ``synthetic``: 10,000 are generated).
        n_val: validation images carved from the full training set first (balanced); 0 = no
            validation split (``.val`` is ``None``).
        n_test: test images (balanced, drawn with a fixed seed); ``None`` keeps all
            (``synthetic``: 2,000).
        root: data folder for torchvision sets; default ``$CIFS_DATA`` or ``~/.cache/cifs_edu/data``.
        seed: picks the validation and training subsets (and the synthetic training images).
        download: let torchvision download a missing data set (needs internet once).
        image_size: ``folder:`` only: resize every image to ``image_size`` x ``image_size``
            (needed when the folder's images differ in size).

    Returns:
        :class:`DataSplits` of :class:`Split` s (``.x`` float32 ``(N, C, H, W)`` in [0, 1], ``.y`` int64).

    Raises:
        ConfigError: unknown data set, impossible sizes or seed (before any loading).
        DataNotFoundError: the data is not on disk and could not be downloaded.
    """
    kind = _check(dataset, n_train, n_val, n_test, seed)
    if image_size is not None and (kind != "folder" or not isinstance(image_size, int) or image_size <= 0):
        raise ConfigError(f"image_size must be a positive int and is only for 'folder:<path>' (got {image_size!r})")
    do_aug = _AUGMENT[kind]
    where: str | None
    if kind == "synthetic":
        from . import synthetic

        n_pool = (synthetic.DEFAULT_N_TRAIN if n_train is None else n_train) + n_val
        n_te = synthetic.DEFAULT_N_TEST if n_test is None else n_test
        check_memory(n_pool + n_te, 3 * 32 * 32 * 5, "synthetic images (n_train + n_val + n_test)")
        data = synthetic.make_synthetic(n_pool, n_te, seed=seed, test_seed=TEST_SUBSET_SEED)
        classes = list(synthetic.CLASSES)
        train_pool = Split(data.x_train, data.y_train, classes)
        test_pool = Split(data.x_test, data.y_test, classes)
        n_train_eff = None if n_train is None else n_train
        where = None
    elif kind == "folder":
        train_pool, test_pool, base = _folder(dataset[len("folder:"):].strip(), image_size)
        n_train_eff, where = n_train, str(base)
    else:
        base = data_root(root)
        train_pool, test_pool = _torchvision(kind, base, download)
        n_train_eff, where = n_train, str(base)
    train, val, test = _split(train_pool, test_pool, n_train_eff, n_val, n_test, seed, dataset)
    c, h, w = train_pool.images.shape[1:]
    if h != w:
        raise ConfigError(f"{dataset}: images must be square, got {h}x{w}; pass image_size=<pixels>")
    aug_text = f"random crop {h} (zero padding {PAD}) + horizontal flip" if do_aug else "none"
    return DataSplits(
        train=train,
        val=val,
        test=test,
        classes=list(train_pool.classes),
        name=kind if kind != "folder" else dataset,
        in_channels=int(c),
        image_size=int(h),
        augmentation=aug_text,
        root=where,
    )


def as_tensors(split: Split, n: int | None = None, *, balanced: bool = False, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x float32 (N, C, H, W) in [0, 1], y int64 (N,))`` of a split, or of ``n`` of its images.

    Args:
        n: how many; ``None`` = all. The first ``n`` images, or with ``balanced=True`` a
            class-balanced choice of ``n`` (seeded by ``seed``, returned in split order).
    """
    if not isinstance(split, Split):
        raise ConfigError(f"as_tensors takes a split of load_data (e.g. data.test), got {type(split).__name__}")
    total = len(split)
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n <= 0):
        raise ConfigError(f"n must be a positive int or None (got {n!r})")
    if n is not None and n > total:
        raise ConfigError(f"asked for {n} images but the split has {total}")
    if n is None:
        return split.x, split.y.clone()
    idx = balanced_indices(split.targets, n, torch.Generator().manual_seed(seed)) if balanced else torch.arange(n)
    return split.images[idx].float().div_(255), split.targets[idx].clone()
