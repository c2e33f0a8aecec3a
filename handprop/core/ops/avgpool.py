"""2-D average pooling (``torch.nn.functional.avg_pool2d`` with ``ceil_mode=False``).

Forward, for output pixel (y, x) of every plane, reading the plane zero-padded by
``(ph, pw)``::

    out[..., y, x] = (1 / d[y, x]) * sum_{i < kh, j < kw} xpad[..., y*sh + i, x*sw + j]

    out_h = (H + 2*ph - kh) // sh + 1        (likewise out_w; like PyTorch)

The divisor ``d[y, x]`` is the window size ``kh*kw`` (``count_include_pad=True``,
PyTorch's default: padding counts as zeros) or the number of the window's entries that
lie inside the unpadded input (``count_include_pad=False``). As in PyTorch, padding is
at most half the kernel (``2*p <= k``), so every window holds at least one real pixel.

Backward, with ``delta = dL/dout``: the map is linear and each window entry weighs
``1 / d``, so every window's gradient, divided by its divisor, goes to each of its
entries, and a pixel receives the sum over the windows that read it (entries that read
padding are dropped)::

    dL/dx[p] = sum over windows w that contain p of delta[w] / d[w]

Shapes: ``x`` (*rep, N, C, H, W) (optional replica axes, then the batch);
``out``/``delta`` (*rep, N, C, out_h, out_w); ``d`` (out_h*out_w,). The windows are
those of ``windows.py`` (the tables conv and max-pool use): the forward pass is one
gather and a sum over the taps, the backward pass one scatter.
"""

from __future__ import annotations

from functools import lru_cache
from math import prod
from typing import Any, NamedTuple

import numpy as np

from ..errors import ConfigError, ShapeError
from ..layers import Layer, int_pair, pair, register_layer
from .windows import Windows, gather_windows, scatter_values, scatter_windows, streams, window_table


class AvgPoolGeometry(NamedTuple):
    """Where the windows sit and what each is divided by.

    windows : Windows (see ``windows.py``)
    divisor : ndarray of float64, shape (out_h*out_w,), read only
    """

    windows: Windows
    divisor: np.ndarray


@lru_cache(maxsize=256)
def avg_pool2d_geometry(
    in_hw: tuple[int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int] = (0, 0),
    count_include_pad: bool = True,
) -> AvgPoolGeometry:
    """The (cached) windows of an average pool over one (H, W) plane and their divisors."""
    if 2 * padding[0] > kernel[0] or 2 * padding[1] > kernel[1]:
        raise ShapeError(f"avg_pool2d: padding {padding} must be at most half the kernel "
                         f"{kernel} (as in PyTorch)")
    windows = window_table(in_hw, kernel, stride, padding, op="avg_pool2d")
    if count_include_pad:
        divisor = np.full(windows.index.shape[-1], float(kernel[0] * kernel[1]))
    else:  # count the real pixels of each window: pool a plane of ones without dividing
        ones = np.ones((1, *in_hw))
        divisor = gather_windows(ones, windows, stream=False).sum(axis=-2)[0]
    divisor.setflags(write=False)
    return AvgPoolGeometry(windows, divisor)


class AvgPool2dCache(NamedTuple):
    """What the backward pass needs: the geometry (the op is linear, no values)."""

    geometry: AvgPoolGeometry


def avg_pool2d_forward(
    x: np.ndarray,
    kernel: int | tuple[int, int] = 2,
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    count_include_pad: bool = True,
    geometry: AvgPoolGeometry | None = None,
) -> tuple[np.ndarray, AvgPool2dCache]:
    """Mean over each window.

    Parameters
    ----------
    x : ndarray, shape (*lead, C, H, W)
    kernel : int or (int, int)
    stride : int or (int, int), default: the kernel size
    padding : int or (int, int), zero padding, at most half the kernel
    count_include_pad : bool, whether padded entries count in the divisor
    geometry : AvgPoolGeometry, optional
        Precomputed by a layer; then the four arguments above are ignored.

    Returns
    -------
    out : ndarray, shape (*lead, C, out_h, out_w), dtype of ``x``
    cache : AvgPool2dCache
    """
    if x.ndim < 3:
        raise ShapeError(f"avg_pool2d: input must be (..., C, H, W), got shape {x.shape}")
    if geometry is None:
        kernel = pair(kernel)
        stride = kernel if stride is None else pair(stride)
        geometry = avg_pool2d_geometry(x.shape[-2:], kernel, stride, pair(padding),
                                       bool(count_include_pad))
    taps = gather_windows(x, geometry.windows, streams(x.shape))  # (*lead, C, T, L)
    out = taps.sum(axis=-2) / geometry.divisor.astype(x.dtype, copy=False)
    return out.reshape(*x.shape[:-2], *geometry.windows.out_hw), AvgPool2dCache(geometry)


def avg_pool2d_backward(out_grad: np.ndarray, cache: AvgPool2dCache) -> np.ndarray:
    """dL/dx from dL/dout: each window's gradient / its divisor, to each of its entries.

    out_grad (*lead, C, out_h, out_w) -> (*lead, C, H, W)
    """
    geometry = cache.geometry
    share = out_grad.reshape(*out_grad.shape[:-2], 1, -1)
    share = share / geometry.divisor.astype(out_grad.dtype, copy=False)  # (*lead, C, 1, L)
    taps = np.broadcast_to(share, (*share.shape[:-2], *geometry.windows.index.shape))
    return scatter_windows(taps, geometry.windows)


@register_layer
class AvgPool2d(Layer):
    """Average pooling with optional zero padding (PyTorch's ``AvgPool2d``)."""

    kind = "avg_pool2d"

    def __init__(self, kernel_size: int | tuple[int, int] = 2,
                 stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0, count_include_pad: bool = True,
                 name: str | None = None) -> None:
        super().__init__(name)
        self.kernel_size = int_pair(self.name, "kernel_size", kernel_size)
        self.stride = self.kernel_size if stride is None else int_pair(self.name, "stride", stride)
        self.padding = int_pair(self.name, "padding", padding, minimum=0)
        if not isinstance(count_include_pad, bool):
            raise ConfigError(f"layer {self.name}: count_include_pad must be true or false, "
                              f"got {count_include_pad!r}")
        self.count_include_pad = count_include_pad
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if 2 * ph > kh or 2 * pw > kw:
            raise ConfigError(f"layer {self.name}: padding {list(self.padding)} must be at most "
                              f"half the kernel {list(self.kernel_size)} (as in PyTorch)")

    def _output_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError(
                f"layer {self.name} (avg_pool2d) needs (C, H, W) inputs, got shape {in_shape}"
            )
        channels, height, width = in_shape
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if height + 2 * ph < kh or width + 2 * pw < kw:
            raise ShapeError(
                f"layer {self.name} (avg_pool2d): window {kh}x{kw} with padding {ph},{pw} "
                f"does not fit input shape {in_shape}"
            )
        self.geometry = avg_pool2d_geometry((height, width), self.kernel_size, self.stride,
                                            self.padding, self.count_include_pad)
        return (channels, *self.geometry.windows.out_hw)

    def spec(self) -> dict[str, Any]:
        return {"type": self.kind, "name": self.name, "kernel_size": list(self.kernel_size),
                "stride": list(self.stride), "padding": list(self.padding),
                "count_include_pad": self.count_include_pad}

    def workspace(self, need_input_grad=True, itemsize=8):
        """Kept: the output (the cache is the geometry). Work: the gradients, every
        window's share of it, and their scatter into the padded input (in float64)."""
        out, taps = prod(self.out_shape), prod(self.kernel_size) * prod(self.out_shape)
        (ph, pw), (height, width) = self.padding, self.in_shape[1:]
        padded = self.in_shape[0] * (height + 2 * ph) * (width + 2 * pw)
        return out, out + taps + scatter_values(taps, padded, itemsize)

    def forward(self, params, x, train=True):
        return avg_pool2d_forward(x, geometry=self.geometry)

    def backward(self, params, cache, out_grad, need_input_grad=True):
        return avg_pool2d_backward(out_grad, cache), {}
