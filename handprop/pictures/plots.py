"""Figures for the studies (matplotlib, Agg backend, written atomically as PNG)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.io import save_figure

RULE_COLORS = {"seed-broken": "tab:red", "seed-original": "tab:blue", "exact": "black",
               "broken-upstream": "tab:green", "broken-mask": "tab:orange",
               "broken-text": "tab:olive", "fa": "tab:purple", "fa-glorot": "mediumpurple",
               "usf": "tab:cyan", "frsf": "teal", "brsf": "tab:brown", "dfa": "tab:pink",
               "dfa-biotorch": "hotpink", "kp": "tab:gray"}


def pyplot():
    """pyplot on the non-interactive Agg backend (the studies run without a screen)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def quiet(function):
    """Empty or all-NaN series (interrupted or diverged runs) are drawn as gaps, without
    NumPy's "mean of empty slice" and matplotlib's empty-legend warnings."""
    import functools
    import warnings

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.simplefilter("ignore", UserWarning)
            return function(*args, **kwargs)

    return wrapper


def color(rule: str, index: int) -> str:
    return RULE_COLORS.get(rule, f"C{index % 10}")


def _save(plt, fig, path: Path, dpi: int = 110) -> Path:
    """Lay out, write the PNG atomically, free the figure."""
    fig.tight_layout()
    saved = save_figure(fig, path, dpi=dpi)
    plt.close(fig)
    return saved


def mean_band(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column: the mean over rows (runs; NaN rows ignored) and its 95% t-interval
    (``scipy.stats.t``), the same band for every figure. With one run there is no band."""
    from scipy import stats

    matrix = np.asarray(matrix, dtype=np.float64)
    with np.errstate(all="ignore"):
        n = np.sum(np.isfinite(matrix), axis=0)
        mean = np.nanmean(matrix, axis=0)
        half = stats.t.ppf(0.975, np.maximum(n - 1, 1)) * np.nanstd(
            matrix, axis=0, ddof=1) / np.sqrt(n)
    half = np.where(n >= 2, half, np.nan)
    return mean, mean - half, mean + half


@quiet
def curves(path: Path, series: dict[str, np.ndarray], title: str, ylabel: str,
           log: bool = False, xlabel: str = "epoch", start: int = 1) -> Path:
    """One line per rule: the mean over runs with its 95% t-interval band."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (rule, matrix) in enumerate(series.items()):
        if matrix.size == 0:
            continue
        mean, low, high = mean_band(matrix)
        epochs = np.arange(start, start + len(mean))
        ax.plot(epochs, mean, color=color(rule, i), label=f"{rule} (n={matrix.shape[0]})", lw=1.4)
        ax.fill_between(epochs, low, high, color=color(rule, i), alpha=0.18, lw=0)
    if log:
        ax.set_yscale("log")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


@quiet
def grouped_points(path: Path, groups: Sequence[str], rules: Sequence[str],
                   values: dict[tuple[str, str], tuple[float, float, float] | None],
                   title: str, ylabel: str, ylim: tuple[float, float] | None = None) -> Path:
    """For each group (experiment) and rule, a point with a 95% interval."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(groups) * max(len(rules), 1) / 3), 4.2))
    width = 0.8 / max(len(rules), 1)
    for j, rule in enumerate(rules):
        xs, ys, lows, highs = [], [], [], []
        for g, group in enumerate(groups):
            value = values.get((group, rule))
            if value is None or value[0] is None or not np.isfinite(value[0]):
                continue
            mean, low, high = value
            xs.append(g - 0.4 + width * (j + 0.5))
            ys.append(mean)
            lows.append(mean - low)
            highs.append(high - mean)
        if xs:
            ax.errorbar(xs, ys, yerr=[lows, highs], fmt="o", color=color(rule, j), label=rule,
                        capsize=3)
    ax.set_xticks(range(len(groups)), groups)
    if ylim:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


@quiet
def alignment_grid(path: Path, layers: Sequence[str],
                   series: dict[str, dict[str, np.ndarray]], title: str,
                   ylabel: str = "angle to exact gradient (degrees)",
                   epochs: Sequence[int] | None = None) -> Path:
    """One panel per layer; in each, one line per rule (mean over runs, 95% t band).
    ``epochs``: the epoch of each column (default 0, 1, 2, ...)."""
    plt = pyplot()
    cols = min(len(layers), 3) or 1
    rows = int(np.ceil(len(layers) / cols)) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for k, layer in enumerate(layers):
        ax = axes[k // cols][k % cols]
        for i, (rule, per_layer) in enumerate(series.items()):
            matrix = per_layer.get(layer)
            if matrix is None or matrix.size == 0:
                continue
            mean, low, high = mean_band(matrix)
            xs = np.arange(len(mean)) if epochs is None or len(epochs) != len(mean) else \
                np.asarray(epochs)
            ax.plot(xs, mean, color=color(rule, i), label=rule, lw=1.2)
            ax.fill_between(xs, low, high, color=color(rule, i), alpha=0.18, lw=0)
        ax.axhline(90, color="grey", lw=0.8, ls="--")
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    for k in range(len(layers), rows * cols):
        axes[k // cols][k % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper right", fontsize=8)
    fig.suptitle(title)
    return _save(plt, fig, path, dpi=100)
