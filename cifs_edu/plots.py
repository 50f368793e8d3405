"""Plotting helpers shared by the chapters (every figure gets a title, axis labels and a legend)."""
from __future__ import annotations

from typing import Mapping, Sequence

__all__ = [
    "PALETTE",
    "color_for",
    "plot_channel_stats",
    "plot_curves",
    "plot_per_class",
    "plot_imgf",
    "plot_channel_reweighting",
    "interact",
]

#: Fixed colours so that a model family looks the same in every chapter.
PALETTE: dict[str, str] = {
    "vanilla": "#4C72B0",
    "cifs": "#DD8452",
    "cas": "#55A868",
    "standard": "#8C8C8C",
    "natural": "#4C72B0",
    "adversarial": "#C44E52",
    "other": "#8172B3",
}


def color_for(name: str) -> str:
    """The colour of a model family or data kind (``"cifs-softmax"`` -> the CIFS colour)."""
    key = name.lower().split("-")[0].split("_")[0].split(" ")[0]
    return PALETTE.get(key, PALETTE["other"])


def plot_channel_stats(stats, *, title: str, axes=None, class_name: str | None = None):
    """Fig. 1-style panels: activation magnitude, final-layer weight and activated frequency.

    Args:
        stats: a :class:`cifs_edu.analysis.ChannelStats`.
        title: the figure title (say which model, class and profile).
        axes: three matplotlib axes stacked vertically; created when ``None``.
    Returns:
        The matplotlib figure.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(3, 1, figsize=(6.4, 5.6), sharex=True)
    else:
        fig = axes[0].figure
    idx = range(stats.num_channels)
    for kind, mag in stats.magnitude.items():
        axes[0].plot(idx, mag.numpy(), color=PALETTE[kind], label=kind, lw=1)
    axes[0].set_ylabel("mean activation\n(/ max)")
    axes[0].legend(loc="upper right")
    axes[1].bar(idx, stats.weight.numpy(), color=PALETTE["other"], width=1.0)
    axes[1].set_ylabel(f"weight of class\n{class_name or stats.cls}")
    for kind, freq in stats.frequency.items():
        axes[2].plot(idx, freq.numpy(), color=PALETTE[kind], label=kind, lw=1)
    axes[2].set_ylabel("activated\nfrequency")
    axes[2].set_ylim(-0.05, 1.05)
    axes[2].set_xlabel("channel, sorted by the class's final-layer weight (largest first)")
    axes[2].legend(loc="upper right")
    axes[0].set_title(title)
    fig.tight_layout()
    return fig


def plot_curves(curves: Mapping[str, "object"], *, x: str, ys: Sequence[str], title: str, ylabels: Sequence[str]):
    """Training curves (Fig. 4): one panel per quantity in ``ys``, one line per run.

    Args:
        curves: ``{run label: DataFrame (or dict of lists) with column x and the ys}``.
        x: the x column (e.g. ``"epoch"``); ys: columns to plot; ylabels: their axis labels.
    """
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(ys), figsize=(4.2 * len(ys), 3.4), squeeze=False)
    for ax, col, label in zip(axes[0], ys, ylabels):
        for name, frame in curves.items():
            ax.plot(frame[x], frame[col], label=name, color=color_for(name), marker="o", ms=3)
        ax.set_xlabel(x)
        ax.set_ylabel(label)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return fig


def plot_per_class(acc: Mapping[str, Sequence[float]], classes: Sequence[str], *, title: str, ylabel: str):
    """Grouped bars of per-class accuracy (Fig. A.1): ``{model label: accuracy per class}``."""
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(7.5, 3.4))
    width = 0.8 / max(1, len(acc))
    pos = np.arange(len(classes))
    for i, (name, values) in enumerate(acc.items()):
        ax.bar(pos + i * width, list(values), width=width, label=name, color=color_for(name))
    ax.set_xticks(pos + 0.4 - width / 2, classes, rotation=30, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    return fig


def _as_vector(name: str, v) -> "object":
    """A 1-D float tensor (C,) with C >= 2, or a ValueError naming the argument."""
    import torch

    t = torch.as_tensor(v).detach().float().cpu()
    if t.dim() != 1 or t.numel() < 2:
        raise ValueError(f"{name} must be a 1-D vector of at least 2 channels (got shape {tuple(t.shape)})")
    return t


def plot_imgf(
    g,
    *,
    title: str,
    alpha_sigmoid: float = 10.0,
    alpha_softplus: float = 5.0,
    T: float = 1.0,
    axes=None,
):
    r"""The three IMGFs of Sec. 3.2 applied to one relevance vector (step 3 of Fig. 2).

    Four panels share the x-axis, channels sorted by decreasing relevance: the
    relevance :math:`g` itself (bars, positive vs negative), then
    ``sigmoid(alpha_sigmoid g)``, ``softplus_alpha(g) = log(1 + exp(alpha g)) / alpha`` and
    ``softmax(g / T)`` (which sums to 1 over the channels), each computed with
    :func:`cifs_edu.cifs.importance_mask`.

    Args:
        g: relevance of one example, shape (C,) (a tensor or array-like).
        title: the figure title (say where g comes from and the profile).
        alpha_sigmoid, alpha_softplus, T: the IMGFs' parameters (all > 0).
        axes: four matplotlib axes stacked vertically; created when ``None``.
    Returns:
        The matplotlib figure.
    Raises:
        ValueError: g is not a vector of >= 2 channels, or a parameter is not > 0.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    from .cifs import importance_mask

    g = _as_vector("g", g)
    for name, v in (("alpha_sigmoid", alpha_sigmoid), ("alpha_softplus", alpha_softplus), ("T", T)):
        if not (isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v) and v > 0):
            raise ValueError(f"{name} must be a number > 0 (got {v!r})")
    g = g.sort(descending=True).values
    masks = {
        rf"sigmoid, $\alpha$ = {alpha_sigmoid:g}": importance_mask(g[None], "sigmoid", alpha=alpha_sigmoid)[0],
        rf"softplus, $\alpha$ = {alpha_softplus:g}": importance_mask(g[None], "softplus", alpha=alpha_softplus)[0],
        f"softmax, T = {T:g}": importance_mask(g[None], "softmax", T=T)[0],
    }
    if axes is None:
        fig, axes = plt.subplots(4, 1, figsize=(6.4, 6.8), sharex=True)
    else:
        fig = axes[0].figure
    idx = np.arange(g.numel())
    colors = np.where(g.numpy() >= 0, PALETTE["natural"], PALETTE["adversarial"])
    axes[0].bar(idx, g.numpy(), color=colors, width=1.0)
    axes[0].axhline(0, color="black", lw=0.6)
    axes[0].set_ylabel("relevance $g$")
    axes[0].legend(
        handles=[
            plt.Rectangle((0, 0), 1, 1, color=PALETTE["natural"], label="positive (PR)"),
            plt.Rectangle((0, 0), 1, 1, color=PALETTE["adversarial"], label="negative (NR)"),
        ],
        loc="upper right",
    )
    for ax, (label, m), color in zip(axes[1:], masks.items(), (PALETTE["cifs"], PALETTE["cas"], PALETTE["other"])):
        ax.plot(idx, m.numpy(), color=color, lw=1.5, label=label)
        ax.fill_between(idx, 0, m.numpy(), color=color, alpha=0.25)
        ax.set_ylabel("mask $m$")
        ax.set_ylim(bottom=0)
        ax.legend(loc="upper right")
    axes[-1].set_xlabel("channel, sorted by relevance (largest first)")
    axes[0].set_title(title)
    fig.tight_layout()
    return fig


def plot_channel_reweighting(before, after, mask, *, title: str, relevance=None, normalize: bool = True, axes=None):
    r"""Eq. 2 for one example: what multiplying the features by the mask does to each channel.

    Top panel: the mask relative to its mean, ``m / mean(m)`` (1 = what a uniform mask
    would give). Bottom panel: pooled activations before (``pool(z)``) and after
    (``pool(z * m)``) the mask, as bars. With ``normalize`` the "after" values are divided by
    ``mean(m)``, so that the panel shows the re-weighting and not the overall shrinkage (a
    softmax mask sums to 1, so it scales every channel by about 1/C on average).

    Args:
        before, after: pooled activations of one example, shape (C,) each.
        mask: the importance mask m of that example, shape (C,).
        title: the figure title (say which layer, example and profile).
        relevance: optional (C,); if given, channels are sorted by it (largest first),
            else by the mask.
        normalize: divide ``after`` by ``mean(mask)`` (see above).
        axes: two matplotlib axes stacked vertically; created when ``None``.
    Returns:
        The matplotlib figure.
    Raises:
        ValueError: the inputs are not vectors of one common length C >= 2.
    """
    import matplotlib.pyplot as plt
    import numpy as np

    before, after, mask = _as_vector("before", before), _as_vector("after", after), _as_vector("mask", mask)
    key = mask if relevance is None else _as_vector("relevance", relevance)
    if not (before.numel() == after.numel() == mask.numel() == key.numel()):
        raise ValueError(
            "before, after, mask (and relevance) must have the same length "
            f"(got {before.numel()}, {after.numel()}, {mask.numel()}, {key.numel()})"
        )
    order = key.argsort(descending=True)
    mean = float(mask.mean())
    rel_mask = (mask / mean)[order].numpy()
    b = before[order].numpy()
    a = (after / mean if normalize else after)[order].numpy()
    if axes is None:
        fig, axes = plt.subplots(2, 1, figsize=(6.4, 4.6), sharex=True, gridspec_kw={"height_ratios": [1, 1.6]})
    else:
        fig = axes[0].figure
    idx = np.arange(mask.numel())
    axes[0].plot(idx, rel_mask, color=PALETTE["cifs"], lw=1.5, label="mask / mean(mask)")
    axes[0].axhline(1.0, color="black", lw=0.8, ls="--", label="uniform mask")
    axes[0].set_ylabel("relative\nimportance")
    axes[0].legend(loc="upper right")
    axes[1].bar(idx, b, width=1.0, color=PALETTE["standard"], alpha=0.6, label="before: pool(z)")
    after_label = "after: pool(z * m) / mean(m)" if normalize else "after: pool(z * m)"
    axes[1].bar(idx, a, width=0.5, color=PALETTE["cifs"], label=after_label)
    axes[1].set_ylabel("pooled activation")
    sort_by = "mask" if relevance is None else "relevance"
    axes[1].set_xlabel(f"channel, sorted by {sort_by} (largest first)")
    axes[1].legend(loc="upper right")
    axes[0].set_title(title)
    fig.tight_layout()
    return fig


#: Set to ``1`` in the kernels of the book's build (by ``book/_ext/cifs_bookexec.py``): :func:`interact`
#: then draws no live widgets.
BOOK_BUILD_ENV = "CIFS_BOOK_BUILD"


def interact(function, **controls):
    """``ipywidgets.interact(function, **controls)``: live controls that redraw a figure.

    In a running notebook (Jupyter, Colab) this is exactly ``ipywidgets.interact``. In the book's
    build (``CIFS_BOOK_BUILD=1``, set by the book's executor ``book/_ext/cifs_bookexec.py``) it only prints a note and
    returns ``None``: the built page cannot run the controls anyway (it shows the default figure
    drawn by the cell before), and live widgets in a headless kernel client stall it now and
    then (nbclient issue 312; measured here: 4 stalls in 26 runs of chapter 03 with the widget,
    none in 14 without it). ``pytest --nbval`` still runs the widget code.
    """
    import os

    if os.environ.get(BOOK_BUILD_ENV, "").strip() == "1":
        print("(interactive controls: run this notebook to use them)")
        return None
    import ipywidgets as widgets

    return widgets.interact(function, **controls)
