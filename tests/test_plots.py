"""Plotting helpers: the figures draw exactly the numbers the library computes."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from cifs_edu.cifs import importance_mask  # noqa: E402
from cifs_edu.plots import plot_channel_reweighting, plot_imgf  # noqa: E402


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def _g(c=16, seed=0):
    return torch.randn(c, generator=torch.Generator().manual_seed(seed))


def test_plot_imgf_draws_the_three_masks_of_the_sorted_relevance():
    g = _g()
    fig = plot_imgf(g, title="t", alpha_sigmoid=3.0, alpha_softplus=2.0, T=0.5)
    axes = fig.axes
    assert len(axes) == 4 and axes[0].get_title() == "t"
    assert axes[-1].get_xlabel().startswith("channel")
    bars = [p.get_height() for p in axes[0].patches]
    gs = g.sort(descending=True).values
    assert np.allclose(bars, gs.numpy())
    expected = [
        importance_mask(gs[None], "sigmoid", alpha=3.0)[0],
        importance_mask(gs[None], "softplus", alpha=2.0)[0],
        importance_mask(gs[None], "softmax", T=0.5)[0],
    ]
    for ax, m in zip(axes[1:], expected):
        line = ax.get_lines()[0]
        assert np.allclose(line.get_ydata(), m.numpy())
        assert ax.get_legend() is not None
    assert np.isclose(axes[3].get_lines()[0].get_ydata().sum(), 1.0, atol=1e-6)  # softmax sums to 1
    # sorted relevance -> every IMGF is non-increasing along the x-axis
    for ax in axes[1:]:
        assert np.all(np.diff(ax.get_lines()[0].get_ydata()) <= 1e-7)


@pytest.mark.parametrize("bad", [dict(T=0.0), dict(alpha_sigmoid=-1.0), dict(alpha_softplus=float("nan"))])
def test_plot_imgf_rejects_non_positive_parameters(bad):
    with pytest.raises(ValueError):
        plot_imgf(_g(), title="t", **bad)


def test_plot_imgf_rejects_a_batch():
    with pytest.raises(ValueError, match="1-D"):
        plot_imgf(torch.zeros(2, 5), title="t")


def test_plot_channel_reweighting_sorts_by_relevance_and_normalises():
    c = 12
    before = torch.rand(c, generator=torch.Generator().manual_seed(1))
    rel = _g(c, seed=2)
    mask = torch.softmax(rel, 0)
    after = before * mask
    fig = plot_channel_reweighting(before, after, mask, relevance=rel, title="x")
    top, bottom = fig.axes
    order = rel.argsort(descending=True)
    assert np.allclose(top.get_lines()[0].get_ydata(), (mask / mask.mean())[order].numpy(), atol=1e-6)
    heights = [p.get_height() for p in bottom.patches]
    assert np.allclose(heights[:c], before[order].numpy())
    assert np.allclose(heights[c:], (after / mask.mean())[order].numpy(), atol=1e-6)
    # the relative mask starts at its largest value because relevance and softmax are monotone
    assert top.get_lines()[0].get_ydata()[0] == pytest.approx(float((mask / mask.mean()).max()))
    raw = plot_channel_reweighting(before, after, mask, title="x", normalize=False)
    assert np.allclose([p.get_height() for p in raw.axes[1].patches][c:], after[mask.argsort(descending=True)].numpy())


def test_plot_channel_reweighting_rejects_mismatched_lengths():
    with pytest.raises(ValueError, match="same length"):
        plot_channel_reweighting(torch.rand(5), torch.rand(5), torch.rand(4), title="x")


def test_interact_draws_live_controls_except_in_the_book_build(monkeypatch, capsys):
    import ipywidgets as widgets

    from cifs_edu import plots
    from cifs_edu.plots import BOOK_BUILD_ENV

    calls = []

    def redraw(a=1.0):
        calls.append(a)

    monkeypatch.delenv(BOOK_BUILD_ENV, raising=False)
    assert plots.interact(redraw, a=widgets.FloatSlider(value=2.0)) is not None and calls == [2.0]
    monkeypatch.setenv(BOOK_BUILD_ENV, "1")
    assert plots.interact(redraw, a=widgets.FloatSlider(value=3.0)) is None and calls == [2.0]
    assert "run this notebook" in capsys.readouterr().out
