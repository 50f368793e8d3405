"""Plotting helpers shared by the chapters (every figure gets a title, axis labels and a legend)."""
from __future__ import annotations

from typing import Mapping, Sequence

__all__ = ["PALETTE", "color_for", "plot_channel_stats", "plot_curves", "plot_per_class"]

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
