"""The embedded synthetic data set: ten shapes, each with a faint class texture.

Why it exists: CIFAR-10 needs a download, and a chapter built in CI or offline must still show
the phenomena the book is about -- a normally trained CNN that PGD breaks, an adversarially
trained one that it does not -- within about a minute on a laptop CPU. This data set is made
by the library from a seed (no file, no download), is CIFAR-shaped (3x32x32, 10 classes,
values in [0, 1]) and is built in well under a second per thousand images.
Numbers measured on it are NOT CIFAR-10 results, and every caption should say so.

How one image is drawn (``render``), for label ``y``:

1. *Background*: a flat colour, each channel uniform in ``[0.5 - spread, 0.5 + spread]``
   (default ``spread=0``: mid grey), plus (optional, off by default) a smooth random field
   of amplitude ``background``, upsampled from a 4x4 grid.
2. *Robust feature -- the shape.* A large filled shape (class ``y`` of :data:`CLASSES`:
   disk, ring, square, frame, plus, cross, triangle, diamond, two horizontal bars, two
   vertical bars) of radius ``radius`` pixels, centred within ``shift`` pixels of the
   middle, with edges smoothed over about 2.5 pixels (``edge=0.6``). Its colour is the
   background colour moved by a random RGB direction of length ``contrast`` (times sqrt(3);
   default 0.2-0.4 per channel on average), so colour says nothing about the class.
   Turning one shape into another means changing many pixels by far more than 8/255: a
   model that reads the shape *can* be robust at eps = 8/255, but it needs convolutional
   features (edges, corners, holes) to do so.
   Optional *clutter*: small random discs of random colour.
3. *Non-robust feature -- the texture.* A class-specific 4x4 tile of random signs (+1/-1
   per pixel and channel, fixed by ``pattern_seed``), repeated over the whole image with a
   random phase and added with amplitude ``texture`` (default 4/255, invisible to the eye).
   It alone predicts the label perfectly, but an l_inf change of 2 x 4/255 = 8/255 turns
   any class's texture into any other's, so nothing built on it can be robust at eps = 8/255.
   Before the texture is added the image is squeezed into ``[texture, 1 - texture]`` so it
   is never clipped; images are finally rounded to ``uint8`` like real photos.

Both features agree with the label in every split, so either one alone solves the task.
Adversarial training at eps = 8/255 can erase and swap the texture and must read the shape.
(Measured: in the smoke schedule no model learns the texture next to the shape -- on
images whose texture says ``y + 1`` they predict ``y + 1`` for < 1% of the images; a
standard model is broken through its own, fragile shape features. See the calibration.)

How the ``smoke`` profile trains on it: no augmentation (``augment="auto"`` resolves to
none: position, size and colour are already random) and the models normalise their inputs
with the data set's statistics (``normalize="synthetic"``: ``(x - 0.5) / 0.125`` per
channel, inside the model, so attacks still work in [0, 1]); see the calibration's fourth round.

Calibration: four rounds of measurements chose these defaults; their log is
``benchmarks/results/synthetic_calibration.md`` (the runs: ``scripts/synthetic_calibration.py``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F

from .errors import ConfigError

__all__ = [
    "CLASSES",
    "DEFAULT_N_TRAIN",
    "DEFAULT_N_TEST",
    "SyntheticConfig",
    "SyntheticData",
    "make_synthetic",
    "make_split",
    "render",
    "texture_patterns",
]

CLASSES: tuple[str, ...] = (
    "disk",
    "ring",
    "square",
    "frame",
    "plus",
    "cross",
    "triangle",
    "diamond",
    "two horizontal bars",
    "two vertical bars",
)
SIZE = 32
CHANNELS = 3
DEFAULT_N_TRAIN = 10_000  # "the full training set" when load_data gets n_train=None
DEFAULT_N_TEST = 2_000
_STREAMS = {"train": 0, "test": 1}

#: What the fourth calibration round measured (fractions; see the module docstring).


@dataclass(frozen=True)
class SyntheticConfig:
    """Knobs of the generator (defaults = the calibrated data set; change them to explore).

    Attributes:
        texture: amplitude of the non-robust texture, in [0, 1] units (default 4/255).
        tile: side of the repeated texture tile, in pixels.
        pattern_seed: seed of the class textures (the same for every split and seed).
        background: amplitude of the smooth random background field (0 = flat colour).
        clutter: number of small random discs drawn before the shape.
        noise: standard deviation of per-pixel Gaussian noise (before the texture).
        radius: (min, max) shape radius in pixels.
        shift: largest offset of the shape's centre from the image centre, in pixels.
        contrast: (min, max) length of the object colour's offset from the background,
            per channel on average.
        spread: background colours are uniform in ``[0.5 - spread, 0.5 + spread]`` per channel.
        edge: steepness of the shape's edge, per pixel (the mask is ``sigmoid(-edge * distance)``;
            1.5 = about one pixel wide, smaller = softer).
    """

    texture: float = 4 / 255
    tile: int = 4
    pattern_seed: int = 2021
    background: float = 0.0
    clutter: int = 0
    noise: float = 0.0
    radius: tuple[float, float] = (11.0, 13.0)
    shift: float = 2.0
    contrast: tuple[float, float] = (0.2, 0.4)
    spread: float = 0.0
    edge: float = 0.6

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.texture <= 0.25:
            problems.append(f"texture must be in [0, 0.25] (got {self.texture})")
        if not 1 <= self.tile <= SIZE:
            problems.append(f"tile must be in [1, {SIZE}] (got {self.tile})")
        if not 0 <= self.spread <= 0.5:
            problems.append(f"spread must be in [0, 0.5] (got {self.spread})")
        if self.background < 0 or self.noise < 0 or self.clutter < 0 or self.shift < 0:
            problems.append("background, noise, clutter and shift must be >= 0")
        if not 0 < self.radius[0] <= self.radius[1] <= SIZE:
            problems.append(f"radius must be 0 < min <= max <= {SIZE} (got {self.radius})")
        if not 0 <= self.contrast[0] <= self.contrast[1] <= 1:
            problems.append(f"contrast must be 0 <= min <= max <= 1 (got {self.contrast})")
        if not self.edge > 0:
            problems.append(f"edge must be > 0 (got {self.edge})")
        if problems:
            raise ConfigError("SyntheticConfig: " + "; ".join(problems))


class SyntheticData(NamedTuple):
    """Tensors of :func:`make_synthetic`: images ``uint8 (N, 3, 32, 32)``, labels ``int64 (N,)``."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor


# --------------------------------------------------------------------------- pieces


def _shape_sdf(k: int, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Signed distance (negative inside, in radius units) of shape ``k`` at coordinates (u, v)."""
    name = CLASSES[k]
    r = torch.sqrt(u * u + v * v)
    box = torch.maximum(u.abs(), v.abs())
    if name == "disk":
        return r - 0.9
    if name == "ring":
        return (r - 0.72).abs() - 0.26
    if name == "square":
        return box - 0.8
    if name == "frame":
        return (box - 0.68).abs() - 0.2
    if name in ("plus", "cross"):
        if name == "cross":
            u, v = (u + v) / math.sqrt(2), (u - v) / math.sqrt(2)
        bar1 = torch.maximum(u.abs() - 0.24, v.abs() - 1.0)
        bar2 = torch.maximum(u.abs() - 1.0, v.abs() - 0.24)
        return torch.minimum(bar1, bar2)
    if name == "triangle":  # apex up, base at v = 0.6
        return torch.maximum(v - 0.6, u.abs() * 0.85 - (v + 0.95) * 0.55)
    if name == "diamond":
        return (u.abs() + v.abs()) / math.sqrt(2) - 0.72
    if name == "two horizontal bars":
        return torch.maximum(u.abs() - 0.95, (v.abs() - 0.5).abs() - 0.2)
    if name == "two vertical bars":
        return torch.maximum(v.abs() - 0.95, (u.abs() - 0.5).abs() - 0.2)
    raise KeyError(name)


def texture_patterns(config: SyntheticConfig | None = None) -> torch.Tensor:
    """The class textures: ``(10, 3, tile, tile)`` of +1/-1 (multiply by ``config.texture``)."""
    cfg = config or SyntheticConfig()
    g = torch.Generator().manual_seed(cfg.pattern_seed)
    return torch.randint(0, 2, (len(CLASSES), CHANNELS, cfg.tile, cfg.tile), generator=g).float() * 2 - 1


def _tile(patterns: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Repeat each ``(3, t, t)`` pattern over a 32x32 image with a random phase: ``(n, 3, 32, 32)``."""
    n, c, t, _ = patterns.shape
    reps = SIZE // t + 2
    big = patterns.repeat(1, 1, reps, reps)
    oy = torch.randint(0, t, (n,), generator=g)
    ox = torch.randint(0, t, (n,), generator=g)
    ar = torch.arange(SIZE)
    rows = (oy[:, None] + ar[None]).view(n, 1, SIZE, 1)
    cols = (ox[:, None] + ar[None]).view(n, 1, 1, SIZE)
    return big[torch.arange(n).view(n, 1, 1, 1), torch.arange(c).view(1, c, 1, 1), rows, cols]


def render(
    labels: torch.Tensor,
    generator: torch.Generator,
    config: SyntheticConfig | None = None,
    *,
    texture_labels: torch.Tensor | None = None,
    texture_scale: float = 1.0,
) -> torch.Tensor:
    """Draw one image per label: ``uint8 (N, 3, 32, 32)``.

    ``texture_labels`` (default: ``labels``) chooses whose texture each image carries --
    pass ``(labels + 1) % 10`` to build images whose shape and texture disagree, which
    shows which feature a model reads. ``texture_scale=0`` leaves the texture out and
    changes nothing else (same random draws, same squeeze into ``[a, 1 - a]``).
    """
    cfg = config or SyntheticConfig()
    g = generator
    y = labels.long()
    n = y.numel()
    coords = torch.arange(SIZE, dtype=torch.float32) + 0.5
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    # 1. background
    base = 0.5 + cfg.spread * (2 * torch.rand(n, 3, 1, 1, generator=g) - 1)
    img = base.expand(n, 3, SIZE, SIZE).clone()
    if cfg.background > 0:
        field = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
        img += cfg.background * F.interpolate(field, size=(SIZE, SIZE), mode="bicubic", align_corners=False)
    for _ in range(cfg.clutter):
        cx, cy = (torch.rand(2, n, 1, 1, generator=g) * SIZE).unbind(0)
        rad = 1.5 + 2.5 * torch.rand(n, 1, 1, generator=g)
        colour = torch.rand(n, 3, 1, 1, generator=g)
        m = torch.sigmoid(-2.0 * (torch.sqrt((xx - cx) ** 2 + (yy - cy) ** 2) - rad)).unsqueeze(1)
        img = img * (1 - m) + colour * m
    # 2. the shape (robust feature)
    cx, cy = (SIZE / 2 + (torch.rand(2, n, 1, 1, generator=g) * 2 - 1) * cfg.shift).unbind(0)
    rad = cfg.radius[0] + (cfg.radius[1] - cfg.radius[0]) * torch.rand(n, 1, 1, generator=g)
    u, v = (xx - cx) / rad, (yy - cy) / rad
    sdf = torch.empty(n, SIZE, SIZE)
    for k in range(len(CLASSES)):
        idx = (y == k).nonzero().flatten()
        if idx.numel():
            sdf[idx] = _shape_sdf(k, u[idx], v[idx])
    mask = torch.sigmoid(-cfg.edge * sdf * rad).unsqueeze(1)  # edge about 1.5 / cfg.edge pixels wide
    direction = torch.randn(n, 3, 1, 1, generator=g)
    direction = direction / direction.norm(dim=1, keepdim=True)
    c = cfg.contrast[0] + (cfg.contrast[1] - cfg.contrast[0]) * torch.rand(n, 1, 1, 1, generator=g)
    colour = (base + c * math.sqrt(3) * direction).clamp(0, 1)
    img = img * (1 - mask) + colour * mask
    if cfg.noise > 0:
        img += cfg.noise * torch.randn(n, 3, SIZE, SIZE, generator=g)
    # 3. the texture (non-robust feature), never clipped
    a = cfg.texture
    img = img.clamp(0, 1) * (1 - 2 * a) + a
    if a > 0:
        ty = y if texture_labels is None else texture_labels.long()
        img += (a * texture_scale) * _tile(texture_patterns(cfg)[ty], g)
    return (img.clamp(0, 1) * 255).round().to(torch.uint8)


# --------------------------------------------------------------------------- data sets


def _check_n(name: str, n) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 0:
        raise ConfigError(f"{name} must be an int >= 0 (got {n!r})")


def make_split(
    n: int,
    seed: int = 0,
    split: str = "train",
    config: SyntheticConfig | None = None,
    *,
    texture: str = "match",
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` images of one split: ``(uint8 (n, 3, 32, 32), int64 (n,))``, classes balanced.

    Args:
        n: number of images; labels are ``arange(n) % 10`` in a seeded random order.
        seed: the split's seed; ``(seed, split)`` fixes every pixel.
        split: ``"train"`` or ``"test"`` (separate random streams, so a train and a test
            split never share images even with the same seed).
        texture: ``"match"`` (the data set), ``"none"`` (texture removed: only the shape
            is left) or ``"shifted"`` (each image carries the texture of class ``y + 1``;
            the shape still says ``y``). Shapes and colours are the same in all three.
    """
    _check_n("n", n)
    if split not in _STREAMS:
        raise ConfigError(f"split must be 'train' or 'test' (got {split!r})")
    if texture not in ("match", "none", "shifted"):
        raise ConfigError(f"texture must be 'match', 'none' or 'shifted' (got {texture!r})")
    cfg = config or SyntheticConfig()
    g = torch.Generator().manual_seed(int(seed) * 1_000_003 + _STREAMS[split])
    y = (torch.arange(n) % len(CLASSES))[torch.randperm(n, generator=g)]
    ty = (y + 1) % len(CLASSES) if texture == "shifted" else None
    return render(y, g, cfg, texture_labels=ty, texture_scale=0.0 if texture == "none" else 1.0), y


def make_synthetic(
    n_train: int,
    n_test: int,
    seed: int = 0,
    *,
    test_seed: int | None = None,
    config: SyntheticConfig | None = None,
) -> SyntheticData:
    """Training and test images of the synthetic data set (see the module docstring).

    Args:
        n_train, n_test: sizes (classes balanced: ``n // 10`` each, the rest spread).
        seed: seed of the training images; the same seed gives the same tensors.
        test_seed: seed of the test images (default: ``seed``); :func:`cifs_edu.datasets.load_data`
            fixes it to 0 so that all runs share one test set.
        config: generator settings (default: the calibrated :class:`SyntheticConfig`).

    Returns:
        :class:`SyntheticData` with ``uint8`` images ``(N, 3, 32, 32)`` (divide by 255 for
        [0, 1]) and ``int64`` labels indexing :data:`CLASSES`.
    """
    _check_n("n_train", n_train)
    _check_n("n_test", n_test)
    xtr, ytr = make_split(n_train, seed, "train", config)
    xte, yte = make_split(n_test, seed if test_seed is None else test_seed, "test", config)
    return SyntheticData(xtr, ytr, xte, yte)
