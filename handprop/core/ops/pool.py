"""2-D max-pooling and its gradient routing.

Forward: each output pixel is the maximum of its ``kh x kw`` window (no padding;
``out = (in - k) // stride + 1`` like PyTorch).

Backward: the max is piecewise the identity of one input, so the gradient of an
output pixel is *routed* to the input that won its window and nowhere else::

    dL/dx[p] = sum over windows w whose winner is p of dL/dout[w]

Exact routing sends it to **one** winner, the first maximum in row-major window order
(what PyTorch does). The article's code instead marks *every* position equal to its
window's maximum (``ties=True``); with tied maxima that duplicates the gradient. Both
routings are exposed so that learning rules can use either, and so can the helpers
``max_pool2d_mask`` (the routing mask in input layout) and ``max_pool2d_upsample``
(``up(G)``: every window entry receives its window's gradient).
"""

from __future__ import annotations

from functools import lru_cache
from math import prod
from typing import NamedTuple

import numpy as np

from ..errors import ShapeError
from ..layers import Layer, int_pair, pair, register_layer
from .windows import IndexTable, Windows, streams, window_table, window_view


class PoolGeometry(NamedTuple):
    """Window layout of a max-pool over one (H, W) plane.

    entries : IndexTable of shape (out_h*out_w, kh*kw): flat plane position of every
        window entry, row-major inside the window (``index`` is its array).
    in_hw, out_hw, kernel, stride : (int, int)
    inverse : ndarray of int64, shape (H*W,), or None (see :func:`max_pool2d_geometry`)
    covers_all : bool
    windows : Windows, the same table tap-major (see ``windows.py``)
    overlapping : bool, whether some input lies in more than one window
    starts : IndexTable of shape (out_h*out_w,): the flat plane position of each
        window's first entry
    offsets : ndarray of int64, shape (kh*kw,): each tap's offset from the window's
        first entry (``index[l, t] = starts[l] + offsets[t]``)
    """

    entries: IndexTable
    in_hw: tuple[int, int]
    out_hw: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    inverse: np.ndarray | None
    covers_all: bool
    windows: Windows
    overlapping: bool
    starts: IndexTable
    offsets: np.ndarray

    @property
    def index(self) -> np.ndarray:
        return self.entries.index


@lru_cache(maxsize=256)
def max_pool2d_geometry(
    in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int]
) -> PoolGeometry:
    """The (cached) window layout of a max-pool.

    When windows do not overlap (stride >= kernel) every input pixel lies in at most one
    window, so sending values back to the input is a gather: ``inverse`` gives, for
    each pixel, its flat position among the window entries (or one past the end, a zero
    slot, for pixels no window covers; ``covers_all`` says whether there are any).
    Overlapping windows need a scatter-add instead (``inverse`` is None).
    """
    windows = window_table(in_hw, kernel, stride, op="max_pool2d")
    plane = in_hw[0] * in_hw[1]
    entries = IndexTable(windows.index.T, plane)
    index = entries.index
    overlapping = stride[0] < kernel[0] or stride[1] < kernel[1]
    inverse = None
    covers_all = False
    if not overlapping:
        inverse = np.full(in_hw[0] * in_hw[1], index.size, dtype=np.int64)
        inverse[index.ravel()] = np.arange(index.size)
        covers_all = index.size == inverse.size
        inverse.setflags(write=False)
    offsets = index[0].copy()
    offsets.setflags(write=False)
    return PoolGeometry(
        entries, in_hw, windows.out_hw, kernel, stride, inverse, covers_all, windows, overlapping,
        IndexTable(index[:, 0], plane), offsets,
    )


class MaxPool2dCache(NamedTuple):
    """What the backward pass needs from the forward pass.

    windows : ndarray, shape (*lead, C, out_h*out_w, kh*kw)
        Every window's entries, row-major (possibly a view of a tap-major array).
    winner : ndarray of int, shape (*lead, C, out_h*out_w)
        Index in its window of the first maximum.
    geometry : PoolGeometry
    in_shape : shape of the input (with batch and replica axes)
    position : ndarray of int64, shape (winner.size,)
        Flat index in the input of each window's winner (window order).
    best : ndarray, shape (*lead, C, out_h*out_w)
        Each window's maximum (the output, flat).
    """

    windows: np.ndarray
    winner: np.ndarray
    geometry: PoolGeometry
    in_shape: tuple[int, ...]
    position: np.ndarray
    best: np.ndarray


def max_pool2d_forward(
    x: np.ndarray,
    kernel: int | tuple[int, int] = 2,
    stride: int | tuple[int, int] | None = None,
    geometry: PoolGeometry | None = None,
) -> tuple[np.ndarray, MaxPool2dCache]:
    """Max over each window.

    Parameters
    ----------
    x : ndarray, shape (*lead, C, H, W)
    kernel : int or (int, int), window size (default 2x2)
    stride : int or (int, int), default: the kernel size
    geometry : PoolGeometry, optional
        Precomputed by a layer; then ``kernel`` and ``stride`` are ignored.

    Returns
    -------
    out : ndarray, shape (*lead, C, out_h, out_w)
    cache : MaxPool2dCache
    """
    if x.ndim < 3:
        raise ShapeError(f"max_pool2d: input must be (..., C, H, W), got shape {x.shape}")
    if geometry is None:
        kernel = pair(kernel)
        stride = kernel if stride is None else pair(stride)
        geometry = max_pool2d_geometry(x.shape[-2:], kernel, stride)
    lead = x.shape[:-2]
    stream = streams(x.shape)
    if not stream:  # a small sample: one gather, argmax along each window
        windows = x.reshape(*lead, -1).take(geometry.index, axis=-1)  # (*lead, L, T)
        winner = windows.argmax(axis=-1)
    else:  # large: each tap one contiguous slab over all planes, compared slab by slab
        view = window_view(x, geometry.windows)  # (*lead, kh, kw, out_h, out_w)
        n = view.ndim
        tap_major = view.transpose(n - 4, n - 3, *range(n - 4), n - 2, n - 1)
        tap_major = tap_major.reshape(len(geometry.offsets), *lead, -1)  # a copy: (T, *lead, L)
        out = tap_major.max(axis=0)
        winner = _first_max(tap_major, out)
        windows = tap_major.transpose(*range(1, tap_major.ndim), 0)
    # Where each winner sits in the input: its plane's offset plus its window's start
    # (a cached table) plus its tap's offset.
    first = geometry.starts.targets(winner.size // geometry.starts.index.size)
    position = first + geometry.offsets.take(winner.ravel())
    if not stream:
        out = x.ravel()[position]  # argmax's winner, the first NaN if any: the max
    best = out.reshape(winner.shape)
    out = out.reshape(*lead, *geometry.out_hw)
    return out, MaxPool2dCache(windows, winner, geometry, x.shape, position, best)


def _first_max(taps: np.ndarray, best: np.ndarray) -> np.ndarray:
    """What ``argmax`` over the taps gives (the first maximum, or the first NaN), by
    counting each window's leading taps below its maximum ``best``: argmax over a short
    axis is slow.

    taps (T, ...), best (...) -> (...), the smallest unsigned type that holds T
    """
    below = taps[0] < best
    winner = below.astype(np.min_scalar_type(len(taps)))
    for tap in taps[1:-1]:
        below &= tap < best
        winner += below
    nan = np.isnan(best)
    if nan.any():  # nothing is below NaN: find the first NaN instead
        winner[nan] = np.isnan(taps[:, nan]).argmax(axis=0)
    return winner


def max_pool2d_routing(cache: MaxPool2dCache, ties: bool = False) -> np.ndarray:
    """Which window entries receive their window's gradient (1) and which do not (0).

    Returns
    -------
    ndarray, shape (*lead, C, out_h*out_w, kh*kw), dtype of the input.
        ``ties=False``: one-hot at the first maximum (exact, PyTorch's choice).
        ``ties=True``: every entry equal to the window maximum (the article's code).
    """
    windows = cache.windows
    if ties:
        return (windows == cache.best[..., None]).astype(windows.dtype)
    taps = np.arange(windows.shape[-1])
    return (cache.winner[..., None] == taps).astype(windows.dtype)


def max_pool2d_scatter(per_entry: np.ndarray, cache: MaxPool2dCache) -> np.ndarray:
    """Sum per-window-entry values ``(*lead, C, L, kh*kw)`` into the input plane they
    came from, ``(*lead, C, H, W)`` (e.g. ``routing * G`` is the routed gradient)."""
    geometry = cache.geometry
    if geometry.inverse is None:  # overlapping windows: add up
        return geometry.entries.scatter_add(per_entry).reshape(cache.in_shape)
    flat = per_entry.reshape(*per_entry.shape[:-2], -1)
    if not geometry.covers_all:
        flat = np.concatenate([flat, np.zeros((*flat.shape[:-1], 1), flat.dtype)], axis=-1)
    return flat.take(geometry.inverse, axis=-1).reshape(cache.in_shape)


def max_pool2d_backward(
    out_grad: np.ndarray, cache: MaxPool2dCache, ties: bool = False
) -> np.ndarray:
    """dL/dx from dL/dout: each window's gradient routed to its maximum.

    Parameters
    ----------
    out_grad : ndarray, shape (*lead, C, out_h, out_w)
    cache : MaxPool2dCache from the forward pass
    ties : bool
        False (exact): to the first maximum only. True: to every tied maximum, as the
        article's code does.

    Returns
    -------
    ndarray, shape (*lead, C, H, W)
    """
    if ties:
        grad = out_grad.reshape(*out_grad.shape[:-2], -1, 1)
        return max_pool2d_scatter(max_pool2d_routing(cache, ties=True) * grad, cache)
    # One winner per window (found in the forward pass).
    size = prod(cache.in_shape)
    if cache.geometry.overlapping:  # windows share inputs: add up
        grad = np.bincount(cache.position, weights=out_grad.ravel(), minlength=size)
        return grad.reshape(cache.in_shape).astype(out_grad.dtype, copy=False)
    grad = np.zeros(size, out_grad.dtype)
    grad[cache.position] = out_grad.ravel()  # each input in at most one window: assign
    return grad.reshape(cache.in_shape)


def max_pool2d_mask(cache: MaxPool2dCache, ties: bool = False) -> np.ndarray:
    """The routing as a 0/1 map in input layout, ``(*lead, C, H, W)``.

    This is the article's ``mask`` (with ``ties=True``): 1 where an input is its
    window's maximum.
    """
    return max_pool2d_scatter(max_pool2d_routing(cache, ties), cache)


def max_pool2d_upsample(out_grad: np.ndarray, cache: MaxPool2dCache) -> np.ndarray:
    """``up(G)``: every window entry receives its window's gradient, ``(*lead, C, H, W)``.

    For non-overlapping windows this is nearest-neighbour upsampling; inputs outside
    every window get 0, inputs in several windows get the sum.
    """
    grad = out_grad.reshape(*out_grad.shape[:-2], -1, 1)
    per_entry = np.broadcast_to(grad, cache.windows.shape)
    return max_pool2d_scatter(per_entry, cache)


@register_layer
class MaxPool2d(Layer):
    """Max-pooling; exact backward routes each window's gradient to one winner."""

    kind = "max_pool2d"

    def __init__(self, kernel_size: int | tuple[int, int] = 2,
                 stride: int | tuple[int, int] | None = None, name: str | None = None) -> None:
        super().__init__(name)
        self.kernel_size = int_pair(self.name, "kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else int_pair(self.name, "stride", stride)

    def _output_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError(
                f"layer {self.name} (max_pool2d) needs (C, H, W) inputs, got shape {in_shape}"
            )
        channels, height, width = in_shape
        kh, kw = self.kernel_size
        if height < kh or width < kw:
            raise ShapeError(
                f"layer {self.name} (max_pool2d): window {kh}x{kw} does not fit input shape "
                f"{in_shape}"
            )
        self.geometry = max_pool2d_geometry((height, width), self.kernel_size, self.stride)
        return (channels, *self.geometry.out_hw)

    def spec(self):
        return {"type": self.kind, "name": self.name, "kernel_size": list(self.kernel_size),
                "stride": list(self.stride)}

    def workspace(self, need_input_grad=True, itemsize=8):
        """Kept: the output, every window's entries, and two int64 indices per output
        (the winner in its window, its place in the input). Work: the gradients and the
        routed gradient (overlapping windows: summed in float64)."""
        out, wide = prod(self.out_shape), 8 // itemsize
        windows = self.in_shape[0] * prod(self.kernel_size) * prod(self.geometry.out_hw)
        return out + windows + 2 * wide * out, out + wide * out + (1 + wide) * prod(
            self.in_shape)

    def forward(self, params, x, train=True):
        return max_pool2d_forward(x, geometry=self.geometry)

    def backward(self, params, cache, out_grad, need_input_grad=True):
        return max_pool2d_backward(out_grad, cache), {}
