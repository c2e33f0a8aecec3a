"""Pictures of a trained network: its kernels, its feature maps, its mistakes, its cost.

Every function takes a network with parameters (``net.init`` called, no replicas),
checks its arguments *before* drawing anything, and writes one PNG atomically with
:func:`handprop.core.io.save_figure`: a wrong argument raises a
:class:`~handprop.core.errors.HandpropError` and leaves no file behind.

    from handprop import show
    show.kernels(net, "kernels.png")
    show.feature_maps(net, data.x_test[0], "maps.png")
    show.misclassified(net, data.x_test, data.y_test, data.classes, "wrong.png")
    show.cost_curve(history.cost, "cost.png")

Figures are drawn with matplotlib's object API (``matplotlib.figure.Figure``), not
pyplot: nothing here changes the global backend, so the functions are safe to call
from a notebook that shows its own plots inline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from math import ceil, sqrt
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError, DataError, ShapeError
from ..core.io import save_figure
from ..core.network import Network
from ..core.ops import Conv2d, Dense, Flatten

# Layers whose outputs feature_maps() leaves out: a dense layer's (its activation's
# output is drawn) and flatten's (the maps above it, laid end to end).
NOT_DRAWN = (Dense, Flatten)

DIVERGING = "RdBu_r"  # red positive, blue negative, white 0
IMAGE_CMAP = "gray_r"  # digits: ink dark on white
DPI = 110


# -- helpers ---------------------------------------------------------------------------

def _figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def _save(fig: Any, path: str | Path) -> Path:
    return save_figure(fig, path, dpi=DPI)


def _check_net(net: Any, what: str) -> Network:
    if not isinstance(net, Network):
        raise ConfigError(f"{what}: expected a handprop Network, got {type(net).__name__}")
    if net.flat is None:
        raise ConfigError(f"{what}: network {net.name!r} has no parameters yet: call init() first")
    if net.rep_shape:
        raise ConfigError(
            f"{what}: network {net.name!r} holds {net.rep_shape} replicas; pictures take a "
            "single network (build one and copy a replica's parameters in with set_params)"
        )
    return net


def _check_images(net: Network, x: Any, what: str) -> np.ndarray:
    """(N, *input_shape) real, finite -> float array of the network's dtype."""
    shape = getattr(x, "shape", None)
    if (
        not isinstance(x, np.ndarray)
        or x.ndim != 1 + len(net.input_shape)
        or x.shape[1:] != net.input_shape
        or x.shape[0] == 0
    ):
        want = ("N", *net.input_shape)
        raise ShapeError(
            f"{what}: network {net.name!r} takes images of shape {want} (N >= 1), "
            f"got {shape if shape is not None else type(x).__name__}"
        )
    if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
        raise ShapeError(f"{what}: images must be real numbers, got dtype {x.dtype}")
    if not np.all(np.isfinite(x)):
        raise DataError(f"{what}: images contain NaN or inf")
    return x.astype(net.dtype, copy=False)


def _no_ticks(ax: Any) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _symmetric(values: np.ndarray) -> float:
    top = float(np.abs(values).max(initial=0.0))
    return top if top > 0 else 1.0


def _picture(image: np.ndarray) -> np.ndarray:
    """(C, H, W) -> something imshow draws: one channel, or RGB for three."""
    if image.ndim == 2:
        return image
    if image.shape[0] == 1:
        return image[0]
    if image.shape[0] == 3:
        low, high = float(image.min()), float(image.max())
        return np.moveaxis((image - low) / (high - low if high > low else 1.0), 0, -1)
    return image.mean(axis=0)


def _cmap(name: str) -> Any:
    """A colormap whose NaN cells (the gaps between tiles) are light grey."""
    import matplotlib

    return matplotlib.colormaps[name].with_extremes(bad="0.82")


def _zoom(size: int, minimum: int) -> int:
    """How many screen pixels per value, so a tile is at least ``minimum`` pixels."""
    return max(1, -(-minimum // size))


def _mosaic(tiles: list[list[np.ndarray | None]], zoom: int = 1, gap: int = 1) -> np.ndarray:
    """Equal-sized (h, w) tiles in a grid, each value repeated ``zoom`` x ``zoom`` times;
    NaN between tiles (``gap`` pixels) and where a tile is None."""
    tiles = [[None if t is None else np.repeat(np.repeat(t, zoom, axis=0), zoom, axis=1)
              for t in row] for row in tiles]
    rows, cols = len(tiles), max(len(row) for row in tiles)
    h, w = next(t for row in tiles for t in row if t is not None).shape
    out = np.full((rows * (h + gap) - gap, cols * (w + gap) - gap), np.nan)
    for r, row in enumerate(tiles):
        for c, tile in enumerate(row):
            if tile is not None:
                out[r * (h + gap): r * (h + gap) + h, c * (w + gap): c * (w + gap) + w] = tile
    return out


def _centres(count: int, size: int, zoom: int = 1, gap: int = 1) -> np.ndarray:
    """Where the middle of each tile of ``size`` values falls in a :func:`_mosaic` row."""
    return np.arange(count) * (size * zoom + gap) + (size * zoom - 1) / 2


def _map_row(ax: Any, maps: np.ndarray, grey: bool) -> None:
    """Channels (C, H, W) side by side, each on its own scale (range written under it)."""
    tiles = []
    for values in maps:
        low, high = float(values.min()), float(values.max())
        if grey:
            tiles.append((values - low) / (high - low) if high > low else np.zeros_like(values))
        else:
            tiles.append(values / _symmetric(values))
    zoom = _zoom(min(maps.shape[-2:]), 12)
    ax.imshow(_mosaic([tiles], zoom, gap=3), cmap=_cmap(IMAGE_CMAP if grey else DIVERGING),
              vmin=0 if grey else -1, vmax=1, interpolation="nearest")
    ax.set_anchor("W")
    ax.set_yticks([])
    ax.set_xticks(_centres(len(maps), maps.shape[-1], zoom, gap=3),
                  [f"ch {c}\n{v.min():.3g} .. {v.max():.3g}" for c, v in enumerate(maps)])
    ax.tick_params(axis="x", labelsize=6, length=0, pad=2)
    for spine in ax.spines.values():
        spine.set_visible(False)


def _draw_strip(ax: Any, values: np.ndarray) -> None:
    """A vector as one row of cells (its own symmetric scale); short ones get numbers."""
    top = _symmetric(values)
    ax.imshow(values[None], cmap=DIVERGING, vmin=-top, vmax=top, aspect="auto")
    ax.set_yticks([])
    step = max(1, int(ceil(len(values) / 12)))
    ax.set_xticks(np.arange(0, len(values), step))
    ax.tick_params(axis="x", labelsize=6, length=2, pad=1)
    if len(values) <= 12:
        for i, v in enumerate(values):
            ax.text(i, 0, f"{v:.3g}", ha="center", va="center", fontsize=7,
                    color="white" if abs(v) > 0.6 * top else "black")
    ax.set_xlabel(f"{float(values.min()):.3g} .. {float(values.max()):.3g}", fontsize=6,
                  labelpad=1)


# -- intermediate values ---------------------------------------------------------------

def layer_outputs(net: Network, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
    """Run the layers one by one and keep every output.

    Parameters
    ----------
    net : Network
        With parameters, without replicas.
    x : ndarray, shape (N, *input_shape) or (*input_shape)
        A batch of images, or one image (then the outputs have no batch axis either).

    Returns
    -------
    list of (str, ndarray)
        ``("input", x)`` then ``(layer.name, output)`` for every layer, in order; each
        output has shape ``(N, *net.shapes[i + 1])`` (or ``net.shapes[i + 1]`` for one
        image). The layers run in evaluation mode (batch norm with its running
        statistics, which stay as they are): the last output equals ``net.predict(x)``.

    Raises
    ------
    ShapeError
        If ``x`` does not have the network's input shape.
    """
    net = _check_net(net, "layer_outputs")
    single = isinstance(x, np.ndarray) and x.shape == net.input_shape
    batch = _check_images(net, x[None] if single else x, "layer_outputs")
    outputs = [("input", batch), *net.trace(batch)]
    if single:
        return [(name, value[0]) for name, value in outputs]
    return outputs


# -- kernels ---------------------------------------------------------------------------

KERNEL_PANEL, CHAR = 0.55, 0.07  # inches per kernel, and per character of 7-9 pt text


@dataclass
class _KernelBlock:
    """One conv layer's panel: its kernels, labels and the width its text needs."""

    weight: np.ndarray
    shown: int
    ylabels: list[str]
    xlabels: list[str]
    title: list[str]
    width: float


def _kernel_block(layer: Conv2d, weight: np.ndarray, max_out: int) -> _KernelBlock:
    out_channels, per_group, kh, kw = weight.shape
    shown = min(out_channels, max_out)
    per_out_group = out_channels // layer.groups
    if layer.groups == 1:
        ylabels = [f"out {o}" for o in range(shown)]
        xlabels = [f"in {c}" for c in range(per_group)]
    else:  # name the input channels each output reads
        starts = [(o // per_out_group) * per_group for o in range(shown)]
        ylabels = [f"out {o} <- in {f}" if per_group == 1 else
                   f"out {o} <- in {f}..{f + per_group - 1}"
                   for o, f in zip(range(shown), starts, strict=True)]
        xlabels = [f"#{c} of group" for c in range(per_group)]
    notes = ([f"groups={layer.groups}"] if layer.groups > 1 else []) + (
        [f"first {shown} of {out_channels} outputs"] if shown < out_channels else [])
    title = [f"{layer.name}: weight {tuple(weight.shape)}"] + ([", ".join(notes)] if notes else [])
    # The image sits against its colour bar on the right; labels and title extend left.
    width = max(CHAR * max(map(len, ylabels)) + KERNEL_PANEL * per_group * kw / kh,
                CHAR * 1.1 * max(map(len, title)))
    return _KernelBlock(weight, shown, ylabels, xlabels, title, width)


def _draw_kernel_block(fig: Any, ax: Any, block: _KernelBlock) -> None:
    weight, shown = block.weight, block.shown
    per_group, kh, kw = weight.shape[1:]
    scale = _symmetric(weight[:shown])
    zoom = _zoom(min(kh, kw), 6)
    tiles = [[weight[o, c] for c in range(per_group)] for o in range(shown)]
    image = ax.imshow(_mosaic(tiles, zoom), cmap=_cmap(DIVERGING), vmin=-scale, vmax=scale,
                      interpolation="nearest")
    ax.set_yticks(_centres(shown, kh, zoom), block.ylabels)
    ax.set_xticks(_centres(per_group, kw, zoom), block.xlabels)
    ax.tick_params(labelsize=7, length=0)
    ax.xaxis.tick_top()
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.set_title("\n".join(block.title), fontsize=9, loc="right")
    fig.colorbar(image, ax=ax, shrink=0.9 if shown <= 4 else max(0.3, 3.6 / shown),
                 aspect=12, pad=0.03)
    ax.set_anchor("E")  # against the colour bar


def kernels(net: Network, path: str | Path, max_out: int = 64) -> Path:
    """Every convolution layer's learned kernels, one small image each.

    One block per conv layer, titled with its name and weight shape; in a block, row
    ``o`` is output channel ``o`` and column ``c`` the ``c``-th input channel of its
    group (for grouped convolutions each panel names the input channel it reads).
    Colours: a diverging map centred at 0 (red positive, blue negative), one symmetric
    scale per layer, shown by the layer's colour bar. Biases are not drawn.

    Parameters
    ----------
    net : Network
        With parameters, without replicas, with at least one conv2d layer. Each weight
        has shape ``(O, C/groups, kh, kw)``.
    path : str or Path
        Where to write the PNG (parent folders are created).
    max_out : int
        Draw at most this many output channels per layer (the title says so).

    Returns
    -------
    Path
        ``path``, written atomically.

    Raises
    ------
    ConfigError
        If the network has no conv2d layer, no parameters, or replicas.
    """
    net = _check_net(net, "kernels")
    if isinstance(max_out, bool) or not isinstance(max_out, int | np.integer) or max_out < 1:
        raise ConfigError(f"kernels: max_out must be a positive integer, got {max_out!r}")
    convs = [(layer, net.params[f"{layer.name}.weight"])
             for layer in net.layers if isinstance(layer, Conv2d)]
    if not convs:
        kinds = ", ".join(f"{layer.name} ({layer.kind})" for layer in net.layers)
        raise ConfigError(f"kernels: network {net.name!r} has no conv2d layer (it has {kinds})")
    blocks = [_kernel_block(layer, weight, max_out) for layer, weight in convs]
    heights = [KERNEL_PANEL * b.shown + 0.35 * len(b.title) + 0.45 for b in blocks]
    fig = _figure(max(b.width for b in blocks) + 1.1, sum(heights))
    grid = fig.add_gridspec(len(blocks), 1, height_ratios=heights)
    for k, block in enumerate(blocks):
        _draw_kernel_block(fig, fig.add_subplot(grid[k]), block)
    return _save(fig, path)


# -- feature maps ----------------------------------------------------------------------

def feature_maps(net: Network, image: np.ndarray, path: str | Path,
                 max_channels: int = 16, label: int | None = None,
                 classes: Sequence[Any] | None = None) -> Path:
    """One image's way through the network: the input, then every conv, activation and
    pool layer's output.

    One row per layer, labelled with its name and output shape; maps ``(C, H, W)`` get
    one panel per channel, vectors ``(F,)`` (activations after dense layers) one strip.
    The last row is always the network's output (e.g. the logits of a softmax net,
    whose last layer is dense).
    The input is drawn in grey; every other panel with a diverging map centred at 0
    (red positive, blue negative) on its own symmetric scale, its range written under
    it -- so a channel of small values (arctan, tanh) is as visible as one of large
    values (ReLU) beside it. Vectors of up to 12 values also show the numbers.

    Parameters
    ----------
    net : Network
        With parameters, without replicas.
    image : ndarray, shape net.input_shape, e.g. (1, 8, 8)
        One image (a batch of one, ``(1, *input_shape)``, is accepted too).
    path : str or Path
        Where to write the PNG.
    max_channels : int
        Draw at most this many channels per row.
    label : int, optional
        The image's true class (an index into ``classes``); the title then gives it
        beside the network's prediction.
    classes : sequence, optional
        The name of each class index (default: the indices themselves).

    Returns
    -------
    Path

    Raises
    ------
    ShapeError
        If ``image`` is not one image of the network's input shape.
    """
    net = _check_net(net, "feature_maps")
    if isinstance(max_channels, bool) or not isinstance(max_channels, int | np.integer) \
            or max_channels < 1:
        raise ConfigError(
            f"feature_maps: max_channels must be a positive integer, got {max_channels!r}"
        )
    shape = getattr(image, "shape", None)
    if isinstance(image, np.ndarray) and shape == (1, *net.input_shape):
        image = image[0]
    if not isinstance(image, np.ndarray) or image.shape != net.input_shape:
        raise ShapeError(
            f"feature_maps: network {net.name!r} takes one image of shape {net.input_shape}, "
            f"got {shape if shape is not None else type(image).__name__} "
            "(to pick image i of a batch x, pass x[i])"
        )
    outputs = layer_outputs(net, image)
    verdict = _verdict(outputs[-1][1].reshape(-1), label, classes)
    skipped = {layer.name for layer in net.layers if isinstance(layer, NOT_DRAWN)}
    rows = [(name, value) for name, value in outputs if name not in skipped]
    if rows[-1][0] != outputs[-1][0]:  # always end with the network's answer
        rows.append(outputs[-1])
    cols = max(3, min(max(value.shape[0] if value.ndim == 3 else 1 for _, value in rows),
                      max_channels))
    panel = 0.95
    fig = _figure(1.4 + panel * cols, 0.6 + (panel + 0.25) * len(rows))
    grid = fig.add_gridspec(len(rows), 1)
    for r, (name, value) in enumerate(rows):
        label = f"{name}\n{tuple(value.shape)}"
        ax = fig.add_subplot(grid[r])
        if value.ndim == 3 and name == "input" and value.shape[0] == 3:  # an RGB input
            ax.imshow(_picture(value))
            ax.set_anchor("W")
            _no_ticks(ax)
        elif value.ndim == 3:
            shown = min(value.shape[0], max_channels)
            _map_row(ax, value[:shown], grey=name == "input")
            if shown < value.shape[0]:
                label += f"\n(first {shown})"
        else:  # a vector (activations after a dense layer): one strip across the row
            _draw_strip(ax, value.reshape(-1))
        ax.set_ylabel(label, fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"{net.name} net: one image through the layers{verdict}\n"
                 "(each map on its own scale, its range under it; red > 0 > blue)", fontsize=9)
    return _save(fig, path)


def _verdict(output: np.ndarray, label: int | None, classes: Sequence[Any] | None) -> str:
    """``": true class 1, predicted 0"`` for a title (the prediction as ``evaluate``
    rounds it: one output at 0.5, else the largest)."""
    predicted = int(output[0] >= 0.5) if output.size == 1 else int(np.argmax(output))
    names = list(classes) if classes is not None else None

    def name(index: int) -> Any:
        return names[index] if names is not None and 0 <= index < len(names) else index

    if label is None:
        return f": predicted {name(predicted)}"
    if isinstance(label, bool) or not isinstance(label, int | np.integer):
        raise ConfigError(f"feature_maps: label must be a class index, got {label!r}")
    mark = "right" if predicted == label else "wrong"
    return f": true class {name(int(label))}, predicted {name(predicted)} ({mark})"


# -- misclassified images --------------------------------------------------------------

def misclassified(net: Network, x: np.ndarray, labels: np.ndarray, classes: Sequence[Any],
                  path: str | Path, limit: int = 36) -> Path:
    """The images the network gets wrong, each with its true and predicted class and the
    network's raw output.

    Prediction is :func:`handprop.training.loop.evaluate`'s: one output is rounded at 0.5 (the
    article's sigmoid), several take the arg-max. Above each image: ``#i`` its index in
    ``x``, ``true`` and ``pred`` (as in ``classes``) and the raw output (binary: the output itself;
    softmax nets: the probability of the predicted class; others: the largest output).
    If every image is right, the figure says so.

    Parameters
    ----------
    net : Network
        With parameters, without replicas.
    x : ndarray, shape (N, *net.input_shape)
    labels : ndarray of int, shape (N,)
        Class indices into ``classes``.
    classes : sequence, length 2 for a one-output network, else the number of outputs
        The name (original label) of each class index, e.g. ``(0, 1)``.
    path : str or Path
    limit : int
        Draw at most this many images (the title gives the total).

    Returns
    -------
    Path

    Raises
    ------
    ShapeError
        On images or labels of the wrong shape.
    DataError
        On labels outside ``classes`` or non-finite pixels.
    ConfigError
        If ``classes`` does not fit the network's output, or ``limit`` < 1.
    """
    from ..training.loop import evaluate

    net = _check_net(net, "misclassified")
    x = _check_images(net, x, "misclassified")
    if isinstance(limit, bool) or not isinstance(limit, int | np.integer) or limit < 1:
        raise ConfigError(f"misclassified: limit must be a positive integer, got {limit!r}")
    labels, classes = _check_labels(net, x, labels, classes)
    evaluation = evaluate(net, x, labels)
    wrong = np.flatnonzero(evaluation.predicted != labels)
    if len(wrong) == 0:
        fig = _figure(5.0, 1.8)
        fig.text(0.5, 0.5, f"no misclassified images:\nall {len(x)} classified correctly",
                 ha="center", va="center", fontsize=12)
        return _save(fig, path)
    shown = wrong[:limit]
    cols = min(len(shown), max(1, ceil(sqrt(len(shown)))), 8)
    rows = ceil(len(shown) / cols)
    fig = _figure(max(1.45 * cols, 3.8), 1.65 * rows + 0.5)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False)).ravel()
    for ax, index in zip(axes, shown, strict=False):
        truth, predicted = labels[index], evaluation.predicted[index]
        ax.imshow(_picture(x[index]), cmap=IMAGE_CMAP)
        _no_ticks(ax)
        ax.set_title(f"#{index} true {classes[truth]}\npred {classes[predicted]} "
                     f"({_score(net, evaluation.raw[index], predicted)})", fontsize=7)
    for ax in axes[len(shown):]:
        ax.axis("off")
    title = f"{len(wrong)} of {len(x)} images misclassified"
    if len(shown) < len(wrong):
        title += f" (first {len(shown)} shown)"
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _check_labels(net: Network, x: np.ndarray, labels: Any, classes: Sequence[Any]
                  ) -> tuple[np.ndarray, tuple]:
    """Labels as class indices that fit ``x`` and ``classes``, and ``classes`` that fit
    the network's output."""
    labels = np.asarray(labels)
    if labels.shape != (len(x),):
        raise ShapeError(f"misclassified: {len(x)} images need labels of shape ({len(x)},), "
                         f"got {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ShapeError(
            f"misclassified: labels must be integer class indices, got dtype {labels.dtype}")
    classes = tuple(classes)
    outputs = net.output_shape[-1] if len(net.output_shape) == 1 else None
    expected = 2 if outputs == 1 else outputs
    if expected is None:
        raise ShapeError(f"misclassified: network {net.name!r} must output one vector per "
                         f"image, its output shape is {net.output_shape}")
    if len(classes) != expected:
        raise ConfigError(f"misclassified: network {net.name!r} has {outputs} output(s), so it "
                          f"needs {expected} class names; got {len(classes)}: {classes}")
    if labels.min() < 0 or labels.max() >= len(classes):
        bad = labels[(labels < 0) | (labels >= len(classes))][0]
        raise DataError(f"misclassified: label index {bad} is outside the {len(classes)} "
                        f"classes {classes}")
    return labels, classes


def _score(net: Network, raw: np.ndarray, predicted: int) -> str:
    """The raw output behind a prediction: the output of a one-output net, the predicted
    class's probability for a softmax net, else the largest output."""
    if raw.shape[-1] == 1:
        return f"out {raw[0]:.3f}"
    if net.loss == "softmax_ce":
        logits = raw - raw.max()
        return f"p {(np.exp(logits) / np.exp(logits).sum())[predicted]:.3f}"
    return f"out {raw[predicted]:.3f}"


# -- cost ------------------------------------------------------------------------------

def cost_curve(history_cost: Any, path: str | Path, title: str = "cost per epoch") -> Path:
    """The cost of every epoch, on a log scale.

    Parameters
    ----------
    history_cost : array-like, shape (epochs,) or (epochs, R), or a History
        ``History.cost`` from :func:`handprop.training.loop.fit` (the summed cost of each epoch;
        one column per replica). NaN (a diverged run) and values <= 0 are left out of
        the log plot; if nothing positive is left, the y axis is linear.
    path : str or Path
    title : str

    Returns
    -------
    Path

    Raises
    ------
    ShapeError
        If the history is empty, has more than two axes, or is not numbers.
    """
    values = getattr(history_cost, "cost", history_cost)
    try:
        cost = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise ShapeError(
            f"cost_curve: expected per-epoch costs (numbers), got {type(values).__name__}"
        ) from None
    if cost.ndim not in (1, 2) or cost.shape[0] == 0 or cost.size == 0:
        raise ShapeError(
            f"cost_curve: expected shape (epochs,) or (epochs, runs) with at least one epoch, "
            f"got {cost.shape}"
        )
    columns = cost.reshape(len(cost), -1)
    positive = np.isfinite(columns) & (columns > 0)
    log = bool(positive.any())
    epochs = np.arange(1, len(cost) + 1)
    fig = _figure(6.4, 3.8)
    ax = fig.add_subplot()
    for r in range(columns.shape[1]):
        keep = positive[:, r] if log else np.isfinite(columns[:, r])
        label = f"run {r}" if columns.shape[1] > 1 else None
        ax.plot(epochs[keep], columns[keep, r], lw=1.3, label=label,
                marker="." if len(cost) <= 30 else None)
    if log:
        ax.set_yscale("log")
    if columns.shape[1] > 1:
        ax.legend(fontsize=7)
    ax.set_xlabel("epoch")
    ax.set_ylabel("cost (sum over the epoch's steps)")
    ax.set_title(title)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


__all__ = ["cost_curve", "feature_maps", "kernels", "layer_outputs", "misclassified"]
