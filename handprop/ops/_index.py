"""Gather/scatter index tables shared by convolution and max-pooling.

Both ops read *windows* of an input map. Instead of looping over output pixels we
build, once per geometry, an integer table that says which flat input element each
window entry reads. A forward pass is then one ``np.take`` (gather) and a backward
pass one ``np.bincount`` (scatter-add), for any batch size, stride or padding.

Zero padding is handled with a *zero slot*: index ``C*H*W`` points one past the
last input element, where the caller appends a zero. Window entries that fall in
the padding read it, and gradients sent there are dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from functools import lru_cache
from math import prod

import numpy as np

from ..errors import ShapeError


@lru_cache(maxsize=256)
def conv_gather_index(
    in_shape: tuple[int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    groups: int,
) -> tuple[np.ndarray, int, int]:
    """Index table of a (grouped) convolution's im2col.

    Returns
    -------
    index : ndarray of int64, shape (groups, out_h * out_w, C/groups * kh * kw)
        Flat index into an input of shape (C, H, W) flattened, or ``C*H*W`` (the zero
        slot) for taps that fall in the zero padding. The last axis is ordered
        (channel, kernel row, kernel column), the layout of ``weight.reshape(O, -1)``.
    out_h, out_w : int
    """
    channels, height, width = in_shape
    kh, kw = kernel
    sh, sw = stride
    ph, pw = padding
    out_h = (height + 2 * ph - kh) // sh + 1
    out_w = (width + 2 * pw - kw) // sw + 1
    if out_h < 1 or out_w < 1:
        raise ShapeError(
            f"conv2d: a {kh}x{kw} kernel with padding {padding} does not fit a "
            f"{height}x{width} input"
        )
    cg = channels // groups
    g = np.arange(groups)[:, None, None, None, None, None, None]
    oh = np.arange(out_h)[None, :, None, None, None, None, None]
    ow = np.arange(out_w)[None, None, :, None, None, None, None]
    c = np.arange(cg)[None, None, None, :, None, None, None]
    i = np.arange(kh)[None, None, None, None, :, None, None]
    j = np.arange(kw)[None, None, None, None, None, :, None]
    row = oh * sh + i - ph
    col = ow * sw + j - pw
    inside = (row >= 0) & (row < height) & (col >= 0) & (col < width)
    flat = (g * cg + c) * (height * width) + row * width + col
    index = np.where(inside, flat, channels * height * width)
    index = index.reshape(groups, out_h * out_w, cg * kh * kw).astype(np.int64)
    index.setflags(write=False)
    return index, out_h, out_w


@lru_cache(maxsize=256)
def pool_gather_index(
    in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int]
) -> tuple[np.ndarray, int, int]:
    """Index table of max-pool windows on one (H, W) plane.

    Returns
    -------
    index : ndarray of int64, shape (out_h * out_w, kh * kw)
        Flat index into the plane, window entries in row-major order (the order in
        which PyTorch scans a window, so ``argmax`` picks the same winner).
    out_h, out_w : int
    """
    height, width = in_hw
    kh, kw = kernel
    sh, sw = stride
    out_h = (height - kh) // sh + 1
    out_w = (width - kw) // sw + 1
    if out_h < 1 or out_w < 1:
        raise ShapeError(f"max_pool2d: a {kh}x{kw} window does not fit a {height}x{width} input")
    oh = np.arange(out_h)[:, None, None, None]
    ow = np.arange(out_w)[None, :, None, None]
    i = np.arange(kh)[None, None, :, None]
    j = np.arange(kw)[None, None, None, :]
    index = (oh * sh + i) * width + (ow * sw + j)
    index = index.reshape(out_h * out_w, kh * kw).astype(np.int64)
    index.setflags(write=False)
    return index, out_h, out_w


_TARGETS: OrderedDict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = OrderedDict()


def _scatter_targets(index: np.ndarray, rows: int, size: int) -> np.ndarray:
    """``index`` offset by ``size`` for each of ``rows`` leading rows, flattened (cached).

    Keyed by the identity of ``index`` (the cached, read-only tables above); the entry
    keeps a reference to it so that the id cannot be reused while the entry lives.
    """
    key = (id(index), rows, size)
    hit = _TARGETS.get(key)
    if hit is not None and hit[0] is index:
        _TARGETS.move_to_end(key)
        return hit[1]
    offsets = np.arange(rows, dtype=np.int64).reshape((rows,) + (1,) * index.ndim) * size
    targets = (offsets + index).ravel()
    _TARGETS[key] = (index, targets)
    if len(_TARGETS) > 64:
        _TARGETS.popitem(last=False)
    return targets


def scatter_add(values: np.ndarray, index: np.ndarray, size: int) -> np.ndarray:
    """Sum ``values`` into ``size`` slots per leading row, at positions ``index``.

    Parameters
    ----------
    values : ndarray, shape (*lead, *index.shape)
    index : ndarray of int, entries in [0, size)
    size : int

    Returns
    -------
    ndarray, shape (*lead, size), dtype of ``values``.
        ``out[m, index[k]] += values[m, k]`` for every leading position m and every k.
    """
    lead = values.shape[: values.ndim - index.ndim]
    rows = prod(lead)
    targets = _scatter_targets(index, rows, size)
    out = np.bincount(targets, weights=values.ravel(), minlength=rows * size)
    return out.reshape(lead + (size,)).astype(values.dtype, copy=False)
