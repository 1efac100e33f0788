"""Plots as PIL images: CMC curves, histograms of the inter-attention weights mu, and sweep line plots."""

from __future__ import annotations

import io
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image

from reid.names import PART_LABELS


def figure_to_image(fig: Figure, dpi: int = 100) -> Image.Image:
    """Renders a matplotlib figure (Agg, no display) to an RGB PIL image."""
    FigureCanvasAgg(fig)  # attaches an off-screen canvas; figures made with Figure() are not tracked by pyplot
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    buffer.seek(0)
    with Image.open(buffer) as picture:
        return picture.convert("RGB")


def _as_percent(values: np.ndarray, percent: bool | None) -> np.ndarray:
    if percent is None:
        finite = values[np.isfinite(values)]
        percent = bool(finite.size) and float(finite.max()) > 1.0
    return values if percent else 100.0 * values


def cmc_curve_picture(
    curves: Mapping[str, np.ndarray | Sequence[float]],
    max_rank: int = 50,
    *,
    percent: bool | None = None,
    title: str | None = "CMC",
    size: tuple[float, float] = (6.0, 4.5),
) -> Image.Image:
    """Several labelled CMC curves on one plot: rank 1..max_rank on x, matching rate in % on y.

    Args:
        curves: label -> CMC (entry k-1 = rate of a true match within the top k), as
            ``evaluate_rank`` returns it (fractions) or in percent.
        max_rank: last rank drawn (curves shorter than this are drawn to their end).
        percent: whether the curves are already in percent; None guesses it (any value > 1).
        title: the plot title, or None.
        size: figure size in inches (at 100 dpi).

    Returns:
        An RGB image; the legend gives each curve's rank-1 rate.
    """
    if not curves:
        raise ValueError("cmc_curve_picture needs at least one curve")
    if max_rank < 1:
        raise ValueError(f"max_rank must be >= 1, got {max_rank}")
    fig = Figure(figsize=size)
    ax = fig.subplots()
    for label, curve in curves.items():
        values = _as_percent(np.asarray(curve, dtype=np.float64).ravel()[:max_rank], percent)
        if values.size == 0:
            raise ValueError(f"CMC curve {label!r} is empty")
        ranks = np.arange(1, values.size + 1)
        ax.plot(
            ranks,
            values,
            marker="o" if values.size <= 20 else None,
            markersize=3,
            label=f"{label} (R1 {values[0]:.2f}%)",
        )
    ax.set_xlabel("rank")
    ax.set_ylabel("matching rate (%)")
    ax.set_xlim(1, max_rank)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="lower right")
    if title:
        ax.set_title(title)
    return figure_to_image(fig)


def part_weight_histogram(
    mu: np.ndarray,
    part_names: Sequence[str] = PART_LABELS,
    *,
    bins: int = 20,
    value_range: tuple[float, float] | None = None,
    size: tuple[float, float] = (10.0, 2.8),
) -> Image.Image:
    """Histograms of the inter-attention weights mu (Eq. 8), one small panel per part.

    Args:
        mu: (N, P) weights of N images for P parts (sigmoids, so within [0, 1]); torch tensors
            are accepted too.
        part_names: the P panel titles.
        bins: histogram bins.
        value_range: the x range shared by the panels, e.g. (0, 1) to compare models; None takes
            the data's range (trained weights can crowd into a corner of [0, 1]).
        size: figure size in inches (at 100 dpi).

    Returns:
        An RGB image with P panels sharing the x range; each legend gives the part's mean mu.
    """
    mu = _to_numpy(mu).astype(np.float64)
    if mu.ndim != 2 or mu.shape[1] != len(part_names) or mu.shape[0] == 0:
        raise ValueError(f"mu must have shape (N, {len(part_names)}) with N >= 1, got {mu.shape}")
    low, high = value_range if value_range is not None else (float(mu.min()), float(mu.max()))
    if not high > low:  # all weights equal: a narrow window around them
        low, high = low - 0.01, high + 0.01
    fig = Figure(figsize=size, layout="constrained")  # keeps the suptitle clear of the panel titles
    # squeeze=False: always a (1, P) array of Axes, also for one part
    axes = fig.subplots(1, mu.shape[1], sharex=True, sharey=True, squeeze=False)[0]
    for k, (ax, name) in enumerate(zip(axes, part_names, strict=True)):
        ax.hist(mu[:, k], bins=bins, range=(low, high), color=f"C{k}", alpha=0.8)
        mean = float(mu[:, k].mean())
        ax.axvline(mean, color="black", linestyle="--", linewidth=1, label=f"mean {mean:.3f}")
        ax.set_title(name)
        ax.set_xlabel("mu")
        ax.legend(loc="upper left", fontsize="small")
    axes[0].set_ylabel("images")
    fig.suptitle(f"inter-attention weights mu ({mu.shape[0]} images)")
    return figure_to_image(fig)


def line_plot_picture(
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    xlabel: str,
    ylabel: str = "%",
    title: str | None = None,
    errors: Mapping[str, Sequence[float]] | None = None,
    xticklabels: Mapping[float, str] | None = None,
    pair_colours: bool = False,
    size: tuple[float, float] = (6.0, 4.0),
) -> Image.Image:
    """Labelled lines (x, y), with optional error bars, e.g. R1 and mAP against lambda.

    Args:
        series: label -> (xs, ys); a label containing "mAP" is drawn dashed.
        xlabel, ylabel, title: axis labels and title.
        errors: label -> one standard deviation per point (NaN or 0 draws no bar).
        xticklabels: x value -> tick text (e.g. beta as "3/48"); None keeps matplotlib's ticks.
        pair_colours: give series 2k and 2k+1 one colour (R1 and mAP of one setting).
        size: figure size in inches (at 100 dpi).
    """
    if not series:
        raise ValueError("line_plot_picture needs at least one series")
    fig = Figure(figsize=size)
    ax = fig.subplots()
    for k, (label, (xs, ys)) in enumerate(series.items()):
        style = "--" if "mAP" in label else "-"
        yerr = None
        if errors and label in errors:
            yerr = np.nan_to_num(np.asarray(errors[label], dtype=np.float64), nan=0.0)
        ax.errorbar(
            np.asarray(xs, dtype=np.float64),
            np.asarray(ys, dtype=np.float64),
            yerr=yerr,
            linestyle=style,
            marker="o",
            markersize=4,
            capsize=3,
            label=label,
            color=f"C{k // 2 if pair_colours else k}",
        )
    if xticklabels:
        ax.set_xticks(list(xticklabels), [xticklabels[x] for x in xticklabels])
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize="small")
    if title:
        ax.set_title(title)
    return figure_to_image(fig)


def _to_numpy(x: object) -> np.ndarray:
    """A numpy copy of an array or a (possibly CUDA, possibly grad-tracking) torch tensor."""
    if hasattr(x, "detach"):
        return x.detach().float().cpu().numpy()
    return np.asarray(x)
