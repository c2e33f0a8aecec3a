"""Sliding windows shared by convolution and max-pooling.

Both ops read *windows* of each input plane: tap ``t = (i, j)`` of window ``l = (y, x)``
reads pixel ``(y*sh + i, x*sw + j)`` of the plane zero-padded by ``(ph, pw)``.
:func:`gather_windows` lays them out *tap-major*, ``(*lead, C, kh*kw, out_h*out_w)``
(one row per kernel tap), with no Python loop over images or pixels, in one of two ways
chosen by the size of a sample:

* small images (fewer than ``STREAM_MIN`` values per sample, channels x pixels, like
  the article's 8x8 digits): one ``np.take`` through a cached index table, the fewest
  NumPy calls;
* larger images: the ``kh*kw`` taps are strided views of the padded input, copied in
  one go: their rows are long enough that this streams through memory, where a gather
  costs several times more per element.

:func:`scatter_windows` is the transpose (each pixel receives the sum of the window
entries that read it), one ``np.bincount`` through the same table.

Index tables are read-only and built once per geometry (memoised, they are pure
functions of the shapes); an :class:`IndexTable` also keeps, per number of leading
planes, the flattened targets a scatter needs -- the cache lives on the table that owns
it, so there is no global state to lock.

The choice depends only on the shape of one sample, never on the batch size or on
leading replica axes, so a replicated run computes exactly what its single runs do.
"""

from __future__ import annotations

from functools import lru_cache
from math import prod
from typing import NamedTuple

import numpy as np

from ..errors import ShapeError

# Samples with at least this many values (channels x pixels) take the streaming path.
STREAM_MIN = 192


class IndexTable:
    """Flat positions inside planes of ``size`` values, read only.

    ``index`` : ndarray of int64, any shape, entries in [0, size).
    :meth:`targets` gives the same positions offset by ``size`` for each of ``rows``
    leading planes (what ``np.bincount`` needs), built once per ``rows`` and kept here.
    """

    def __init__(self, index: np.ndarray, size: int) -> None:
        index = np.ascontiguousarray(index, dtype=np.int64)
        index.setflags(write=False)
        self.index, self.size = index, int(size)
        self._targets: dict[int, np.ndarray] = {}

    def targets(self, rows: int) -> np.ndarray:
        """``index`` offset by ``size`` for each of ``rows`` leading planes, flattened."""
        found = self._targets.get(rows)
        if found is None:  # two threads may both build it: same values, no harm
            offsets = np.arange(rows, dtype=np.int64).reshape((rows,) + (1,) * self.index.ndim)
            found = (offsets * self.size + self.index).ravel()
            found.setflags(write=False)
            if len(self._targets) >= 16:  # batch sizes vary little; keep the table small
                self._targets.clear()
            self._targets[rows] = found
        return found

    def scatter_add(self, values: np.ndarray) -> np.ndarray:
        """Sum ``values`` into ``size`` slots per leading plane, at positions ``index``.

        values (*lead, *index.shape) -> (*lead, size), dtype of ``values``:
        ``out[m, index[k]] += values[m, k]`` for every leading position m and every k,
        in order of k (accumulated in float64).
        """
        rows = values.size // self.index.size
        out = np.bincount(self.targets(rows), weights=values.ravel(), minlength=rows * self.size)
        lead = values.shape[: values.ndim - self.index.ndim]
        return out.reshape(*lead, self.size).astype(values.dtype, copy=False)


def scatter_values(entries: int, slots: int, itemsize: int) -> int:
    """The memory of :meth:`IndexTable.scatter_add` (``np.bincount``) per sample, in values
    of ``itemsize`` bytes, for the estimate of :mod:`..limits`: for ``entries`` values
    summed into ``slots``, the targets (int64, kept by the table), the values flattened
    and as float64 weights, the float64 sums and the result."""
    wide = 8 // itemsize
    return (2 * wide + 1) * entries + (wide + 1) * slots


class Windows(NamedTuple):
    """Where the windows of a conv or pool sit in one (H, W) plane.

    table : IndexTable of shape (kh*kw, out_h*out_w)
        Flat position of tap t of window l in the zero-padded plane of shape
        ``(H + 2*ph, W + 2*pw)``; taps and windows both in row-major order.
    in_hw, kernel, stride, padding, out_hw : (int, int)
    """

    table: IndexTable
    in_hw: tuple[int, int]
    kernel: tuple[int, int]
    stride: tuple[int, int]
    padding: tuple[int, int]
    out_hw: tuple[int, int]

    @property
    def index(self) -> np.ndarray:
        return self.table.index


@lru_cache(maxsize=256)
def window_table(
    in_hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int] = (0, 0),
    op: str = "conv2d",
) -> Windows:
    """The (cached) windows of a ``kernel`` sliding by ``stride`` over a padded plane.

    ``out = (in + 2*pad - k) // stride + 1`` along each axis (like PyTorch); ``op`` only
    names the operation in the error raised when the kernel does not fit.
    """
    (height, width), (kh, kw), (sh, sw), (ph, pw) = in_hw, kernel, stride, padding
    out_h = (height + 2 * ph - kh) // sh + 1
    out_w = (width + 2 * pw - kw) // sw + 1
    if out_h < 1 or out_w < 1:
        raise ShapeError(
            f"{op}: a {kh}x{kw} window with padding {padding} does not fit a "
            f"{height}x{width} input"
        )
    row = np.arange(out_h)[None, None, :, None] * sh + np.arange(kh)[:, None, None, None]
    col = np.arange(out_w)[None, None, None, :] * sw + np.arange(kw)[None, :, None, None]
    index = (row * (width + 2 * pw) + col).reshape(kh * kw, out_h * out_w)
    table = IndexTable(index, (height + 2 * ph) * (width + 2 * pw))
    return Windows(table, (height, width), (kh, kw), (sh, sw), (ph, pw), (out_h, out_w))


def streams(x_shape: tuple[int, ...]) -> bool:
    """Whether an input of shape (..., C, H, W) takes the streaming path (see the module
    notes)."""
    return prod(x_shape[-3:]) >= STREAM_MIN


def gather_windows(x: np.ndarray, windows: Windows, stream: bool) -> np.ndarray:
    """Every window's entries, tap-major (a new array, zero where a tap reads padding).

    Parameters
    ----------
    x : ndarray, shape (*lead, C, H, W)
    windows : Windows of (H, W)
    stream : bool, ``streams(x.shape)`` (see the module notes)

    Returns
    -------
    ndarray, shape (*lead, C, kh*kw, out_h*out_w), dtype of ``x``
    """
    lead = x.shape[:-2]
    if not stream:  # a small sample: one gather
        padded = _pad(x, windows)
        return padded.reshape(*lead, -1).take(windows.index, axis=-1)
    taps = window_view(x, windows)
    return taps.reshape(*lead, taps.shape[-4] * taps.shape[-3], -1)  # copies all taps


def window_view(x: np.ndarray, windows: Windows) -> np.ndarray:
    """The windows as a strided view of the padded input (no gather): tap (i, j) is
    ``xpad[..., i::sh, j::sw]``. Read it, never write to it.

    x (*lead, C, H, W) -> (*lead, C, kh, kw, out_h, out_w)
    """
    (kh, kw), (sh, sw), (out_h, out_w) = windows.kernel, windows.stride, windows.out_hw
    padded = np.ascontiguousarray(_pad(x, windows))
    *lead_strides, row, col = padded.strides
    shape = (*x.shape[:-2], kh, kw, out_h, out_w)
    return strided(padded, shape, (*lead_strides, row, col, row * sh, col * sw))


def strided(base: np.ndarray, shape: tuple[int, ...], strides: tuple[int, ...],
            offset: int = 0) -> np.ndarray:
    """A view of the C-contiguous ``base`` with any strides (``as_strided`` without its
    Python overhead; NumPy checks that the view stays inside ``base``)."""
    return np.ndarray(shape, base.dtype, buffer=base, offset=offset, strides=strides)


def _pad(x: np.ndarray, windows: Windows) -> np.ndarray:
    """``x`` zero-padded by ``windows.padding`` (``x`` itself without padding)."""
    (height, width), (ph, pw) = windows.in_hw, windows.padding
    if not (ph or pw):
        return x
    padded = np.zeros((*x.shape[:-2], height + 2 * ph, width + 2 * pw), x.dtype)
    padded[..., ph : ph + height, pw : pw + width] = x
    return padded


def scatter_windows(values: np.ndarray, windows: Windows) -> np.ndarray:
    """The transpose of :func:`gather_windows`: each input pixel receives the sum of the
    window entries that read it (entries that read the padding are dropped).

    Parameters
    ----------
    values : ndarray, shape (*lead, C, kh*kw, out_h*out_w)
    windows : Windows

    Returns
    -------
    ndarray, shape (*lead, C, H, W), dtype of ``values`` (summed in float64, in tap
    order; a view into a padded buffer when there is padding)
    """
    (height, width), (ph, pw) = windows.in_hw, windows.padding
    planes = windows.table.scatter_add(values)
    planes = planes.reshape(*values.shape[:-2], height + 2 * ph, width + 2 * pw)
    return planes[..., ph : ph + height, pw : pw + width] if ph or pw else planes
