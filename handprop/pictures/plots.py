"""Figures for the studies (matplotlib, Agg backend, written atomically as PNG).

Every figure shows the seeds themselves -- per-seed points on value plots, per-seed traces
(or the median and the interquartile range where traces would be a blur) on curves --
because the studies' outcomes are bimodal: a mean with a t-band hides seeds stuck at
chance. Chance levels are drawn as dashed lines where a metric has one.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..core.io import save_figure

# One color per rule, the same in every figure; told apart also by colour-blind readers
# (Okabe-Ito where it reaches), the article's nets red (broken) and blue (original).
RULE_COLORS = {"exact": "black", "seed-original": "#0072B2", "seed-broken": "#D55E00",
               "broken-upstream": "#009E73", "broken-text": "#CC79A7",
               "broken-mask": "#E69F00", "fa": "#56B4E9", "fa-glorot": "#1F77B4",
               "usf": "#009E73", "frsf": "#E69F00", "brsf": "#8C564B", "dfa": "#CC79A7",
               "dfa-biotorch": "#6A3D9A", "kp": "#7F7F7F"}
CHANCE = {"color": "0.35", "lw": 1.0, "ls": "--"}
EXACT_DEGREES = 1e-3  # an angle below this is the exact gradient up to rounding


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


def _save(plt, fig, path: Path, dpi: int = 100, **margins: float) -> Path:
    """Lay out with fixed margins (``subplots_adjust``; tight_layout costs seconds per
    figure), write the PNG atomically, free the figure."""
    fig.subplots_adjust(**{"left": 0.09, "right": 0.98, "bottom": 0.12, "top": 0.88,
                           "wspace": 0.25, "hspace": 0.45, **margins})
    saved = save_figure(fig, path, dpi=dpi)
    plt.close(fig)
    return saved


def _chance(ax, chance: tuple[float, str] | None, vertical: bool = False) -> None:
    if chance is not None:
        value, label = chance
        (ax.axvline if vertical else ax.axhline)(value, label=label, **CHANCE)


def fitted(title: str, width_inches: float, fontsize: int = 10) -> str:
    """``title`` wrapped to the figure's width (about 11.5 characters of 10 pt text fit in
    an inch), so it is never cut."""
    import textwrap

    return textwrap.fill(title, max(30, int(width_inches * 115 / fontsize)))


def median_band(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per column: the median over rows (runs; NaN ignored) and the interquartile range."""
    matrix = np.asarray(matrix, dtype=np.float64)
    with np.errstate(all="ignore"):
        low, median, high = np.nanpercentile(matrix, [25, 50, 75], axis=0)
    return median, low, high


@quiet
def seed_traces(path: Path, panels: dict[str, np.ndarray], title: str, ylabel: str, *,
                chance: tuple[float, str] | None = None, xlabel: str = "epoch",
                log: bool = False, start: int = 1) -> Path:
    """One panel per rule: a thin line per seed and the median over seeds."""
    plt = pyplot()
    names = [name for name, m in panels.items() if m.size]
    cols = min(len(names), 3) or 1
    rows = -(-len(names) // cols) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 2.7 * rows + 0.5),
                             squeeze=False, sharex=True, sharey=True)
    for k, name in enumerate(names):
        ax, matrix = axes[k // cols][k % cols], panels[name]
        epochs = np.arange(start, start + matrix.shape[1])
        for row in matrix:
            ax.plot(epochs, row, color=color(name, k), lw=0.6, alpha=0.45)
        ax.plot(epochs, median_band(matrix)[0], color=color(name, k), lw=2.0, label="median")
        _chance(ax, chance)
        ax.set_title(f"{name} ({matrix.shape[0]} seeds)", fontsize=9)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        if k % cols == 0:
            ax.set_ylabel(ylabel, fontsize=8)
        if k // cols == rows - 1:
            ax.set_xlabel(xlabel, fontsize=8)
    for k in range(len(names), rows * cols):
        axes[k // cols][k % cols].axis("off")
        if k >= cols:  # the panel above an empty slot shows its epochs
            above = axes[k // cols - 1][k % cols]
            above.tick_params(labelbottom=True)
            above.set_xlabel(xlabel, fontsize=8)
    axes[0][0].legend(fontsize=7, loc="upper right")
    fig.suptitle(fitted(title, fig.get_figwidth()), fontsize=10)
    return _save(plt, fig, path, top=1 - 0.55 / fig.get_figheight(),
                 bottom=0.45 / fig.get_figheight(), hspace=0.35, wspace=0.08)


@quiet
def seed_points(path: Path, groups: Sequence[str], rules: Sequence[str],
                values: dict[tuple[str, str], tuple[np.ndarray, tuple[float, float, float]]],
                title: str, ylabel: str, *, ylim: tuple[float, float] | None = None,
                chance: tuple[float, str] | None = None, percent: bool = True) -> Path:
    """For each group (experiment) and rule: every seed's value as a point (jittered
    sideways) and the mean with its 95% interval. ``values[(group, rule)]`` is (per-seed
    values, (mean, low, high)); ``percent`` prints fractions as %. With one group the
    rules name the x axis (no legend)."""
    plt = pyplot()
    scale = 100.0 if percent else 1.0
    single = len(groups) == 1
    slots = len(rules) if single else len(groups) * max(len(rules), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 0.6 * slots + 2), 4.2))
    width = 0.8 if single else 0.8 / max(len(rules), 1)
    jitter = np.random.default_rng(0)
    for j, rule in enumerate(rules):
        for g, group in enumerate(groups):
            entry = values.get((group, rule))
            if entry is None or not len(entry[0]):
                continue
            seeds, (mean, low, high) = entry
            x = j if single else g - 0.4 + width * (j + 0.5)
            spread = jitter.uniform(-0.3, 0.3, len(seeds)) * width
            ax.scatter(x + spread, np.asarray(seeds) * scale, s=14, color=color(rule, j),
                       alpha=0.6, lw=0, label=None if g or single else rule)
            ax.errorbar([x], [mean * scale], yerr=[[(mean - low) * scale],
                                                   [(high - mean) * scale]],
                        fmt="_", ms=16, mew=2, color=color(rule, j), capsize=4, lw=1.4)
    _chance(ax, None if chance is None else (chance[0] * scale, chance[1]))
    if single:
        ax.set_xticks(range(len(rules)), rules, rotation=20, fontsize=8)
    else:
        ax.set_xticks(range(len(groups)), groups)
        ax.legend(fontsize=7, ncol=min(len(rules) + 1, 6), loc="lower left",
                  framealpha=0.9)
    if ylim:
        ax.set_ylim(ylim[0] * scale, ylim[1] * scale)
    ax.set_title(fitted(title, fig.get_figwidth()), fontsize=10)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, axis="y")
    return _save(plt, fig, path, left=0.1, top=0.88 if "\n" in ax.get_title() else 0.92,
                 bottom=0.16 if single else 0.1)


@quiet
def median_curves(path: Path, series: dict[str, np.ndarray], title: str, ylabel: str, *,
                  log: bool = False, xlabel: str = "epoch", start: int = 1,
                  chance: tuple[float, str] | None = None) -> Path:
    """One line per rule: the median over runs, with the interquartile range as a band."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for i, (rule, matrix) in enumerate(series.items()):
        if matrix.size == 0:
            continue
        median, low, high = median_band(matrix)
        epochs = np.arange(start, start + len(median))
        ax.plot(epochs, median, color=color(rule, i), label=f"{rule} (n={matrix.shape[0]})",
                lw=1.4)
        ax.fill_between(epochs, low, high, color=color(rule, i), alpha=0.15, lw=0)
    _chance(ax, chance)
    if log:
        ax.set_yscale("log")
    ax.set_title(fitted(title, fig.get_figwidth()), fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return _save(plt, fig, path, left=0.1, top=0.92)


@quiet
def alignment_grid(path: Path, layers: Sequence[str],
                   series: dict[str, dict[str, np.ndarray]], title: str,
                   ylabel: str = "angle to exact (degrees)",
                   epochs: Sequence[int] | None = None) -> Path:
    """One panel per layer; in each, one line per rule (median over runs, interquartile
    band), and 90 degrees (orthogonal: no better than chance) dashed. Layers where every
    rule is exact (angle 0 throughout) get no panel; a note names them.
    ``epochs``: the epoch of each column (default 0, 1, 2, ...)."""
    plt = pyplot()
    exact = [layer for layer in layers if all(  # rounding leaves ~1e-6 degrees
        np.nanmax(np.abs(m), initial=0.0) < EXACT_DEGREES for per in series.values()
        if (m := per.get(layer)) is not None and m.size)]
    layers = [layer for layer in layers if layer not in exact] or list(layers)[:1]
    cols = min(len(layers), 3) or 1
    rows = int(np.ceil(len(layers) / cols)) or 1
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols, 3.0 * rows + 0.6), squeeze=False)
    for k, layer in enumerate(layers):
        ax = axes[k // cols][k % cols]
        for i, (rule, per_layer) in enumerate(series.items()):
            matrix = per_layer.get(layer)
            if matrix is None or matrix.size == 0:
                continue
            median, low, high = median_band(matrix)
            xs = np.arange(len(median)) if epochs is None or len(epochs) != len(median) else \
                np.asarray(epochs)
            ax.plot(xs, median, color=color(rule, i), label=rule, lw=1.2)
            ax.fill_between(xs, low, high, color=color(rule, i), alpha=0.15, lw=0)
        ax.axhline(90, **CHANCE)
        ax.set_ylim(0, 180)
        ax.set_title(layer, fontsize=9)
        ax.set_xlabel("epoch", fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        ax.grid(alpha=0.3)
    for k in range(len(layers), rows * cols):
        axes[k // cols][k % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", fontsize=8, ncol=min(len(labels), 8))
    fig.suptitle(fitted(title, fig.get_figwidth()), fontsize=10)
    height = fig.get_figheight()
    if exact:
        fig.text(0.5, 1 - 0.5 / height, "no panel where every rule is exact: " +
                 ", ".join(exact), ha="center", va="center", fontsize=8, color="0.35")
    return _save(plt, fig, path, top=1 - (0.8 if exact else 0.55) / height,
                 bottom=0.9 / height, hspace=0.5, wspace=0.3, left=0.07)


@quiet
def separation(path: Path, runs: dict[str, list[dict]], title: str) -> Path:
    """How nudged runs part from their base run: per rule (rows), the relative weight
    distance per step over the tracked steps (left; dots mark steps with a switch: a
    max-pool routing change or a ReLU sign change) and per epoch over the whole run
    (right). ``runs[rule]``: dicts with "label", "kind", "steps", "switches", "epochs"."""
    plt = pyplot()
    rules = [rule for rule, rows in runs.items() if rows]
    fig, axes = plt.subplots(max(len(rules), 1), 2, figsize=(10, 3.0 * max(len(rules), 1) + 0.5),
                             squeeze=False)
    kinds = {"ulp": "#0072B2", "1e-8": "#D55E00"}
    for r, rule in enumerate(rules):
        left, right = axes[r]
        for run in runs[rule]:
            tint = kinds.get(run["kind"], "0.3")
            steps = np.asarray(run["steps"], dtype=np.float64)
            left.plot(np.arange(len(steps)), np.maximum(steps, 1e-19), color=tint, lw=0.7,
                      alpha=0.7)
            marks = np.asarray(run["switches"], dtype=int)
            if marks.size:
                left.scatter(marks, np.maximum(steps[marks], 1e-19), s=6, color=tint)
            epochs = np.asarray(run["epochs"], dtype=np.float64)
            right.plot(np.arange(1, len(epochs) + 1), np.maximum(epochs, 1e-19), color=tint,
                       lw=0.7, alpha=0.7)
        for ax, xlabel in ((left, "step"), (right, "epoch")):
            ax.set_yscale("log")
            ax.set_ylim(1e-19, 10)
            ax.set_xlabel(xlabel, fontsize=8)
            ax.set_ylabel("|w' - w| / |w|", fontsize=8)
            ax.grid(alpha=0.3)
        left.set_title(f"{rule}: the first steps", fontsize=9)
        right.set_title(f"{rule}: the whole run", fontsize=9)
    for kind, tint in kinds.items():
        axes[0][1].plot([], [], color=tint, label=f"moved by {kind}")
    axes[0][1].legend(fontsize=7, loc="lower right")
    fig.suptitle(fitted(title, fig.get_figwidth()), fontsize=10)
    height = fig.get_figheight()
    return _save(plt, fig, path, top=1 - 0.6 / height, bottom=0.5 / height, hspace=0.45,
                 left=0.08)
