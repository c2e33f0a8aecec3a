"""2-D convolution (cross-correlation, like ``torch.nn.functional.conv2d``).

Forward, for output channel o in group g, output pixel (y, x)::

    out[n, o, y, x] = bias[o] + sum_{c in g, i, j} w[o, c, i, j] * xpad[n, c, y*s + i, x*s + j]

Backward, with ``delta = dL/d out``:

* weight gradient ``dL/dw[o, c, i, j] = sum_{n, y, x} delta[n, o, y, x] * xpad[n, c, y*s+i, x*s+j]``
  (the input windows correlated with delta);
* input gradient ``dL/dx`` = every window entry's share ``w[o, c, i, j] * delta[n, o, y, x]``
  added back to the input pixel it was read from (a "full" convolution of delta with
  the kernel): a scatter-add of the shares, or for large samples with stride 1 the full
  correlation itself (:func:`_full_correlation`), which avoids the scatter;
* bias gradient ``dL/db[o] = sum_{n, y, x} delta[n, o, y, x]``.

The forward pass and the weight gradient use one table of the input windows (im2col,
see ``windows.py``), laid out ``cols[n, g, k, l]`` with k = (channel in group, kernel
row, kernel column) and l the output pixel, so that the forward pass is one matmul per
image and group whose result is already NCHW. There is no Python loop over images or
pixels. Arrays may carry leading *replica* axes in front of the batch axis (independent
networks trained in lockstep): ``x`` is ``(*rep, N, C, H, W)`` and ``weight`` is
``(*rep, O, C/groups, kh, kw)``.
"""

from __future__ import annotations

from functools import lru_cache
from math import prod
from typing import NamedTuple

import numpy as np

from ..errors import ShapeError
from ..layers import WeightLayer, int_pair, pair, positive_int, register_layer
from .windows import (
    Windows,
    gather_windows,
    scatter_values,
    scatter_windows,
    streams,
    strided,
    window_table,
)


class ConvGeometry(NamedTuple):
    """Everything about a convolution that does not depend on the numbers.

    windows : Windows
        Where each kernel tap reads in a (padded) input plane (see ``windows.py``).
    in_shape : (C, H, W) of one sample
    out_hw : (out_h, out_w)
    kernel : (kh, kw)
    groups : int
    stream : bool
        Whether a sample is large enough for the streaming paths (see ``windows.py``).
    """

    windows: Windows
    in_shape: tuple[int, int, int]
    out_hw: tuple[int, int]
    kernel: tuple[int, int]
    groups: int
    stream: bool


@lru_cache(maxsize=256)
def conv2d_geometry(
    in_shape: tuple[int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    groups: int = 1,
) -> ConvGeometry:
    """The (cached) geometry of a convolution over one (C, H, W) sample."""
    windows = window_table(in_shape[1:], kernel, stride, padding)
    return ConvGeometry(windows, in_shape, windows.out_hw, kernel, groups, streams(in_shape))


class Conv2dCache(NamedTuple):
    """What the backward pass needs from the forward pass.

    cols : ndarray, shape (*rep, N, groups, C/groups*kh*kw, out_h*out_w)
        The input windows (im2col), zero where they cover padding; axis -2 is ordered
        (channel, kernel row, kernel column), the layout of ``weight.reshape(O, -1)``.
    geometry : ConvGeometry
    in_shape : shape of the input ``x`` (with batch and replica axes)
    """

    cols: np.ndarray
    geometry: ConvGeometry
    in_shape: tuple[int, ...]


def conv2d_forward(
    x: np.ndarray,
    weight: np.ndarray,
    bias: np.ndarray | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    groups: int = 1,
    geometry: ConvGeometry | None = None,
) -> tuple[np.ndarray, Conv2dCache]:
    """Grouped 2-D cross-correlation with zero padding.

    Parameters
    ----------
    x : ndarray, shape (*rep, N, C, H, W)
    weight : ndarray, shape (*rep, O, C/groups, kh, kw)
    bias : ndarray, shape (*rep, O), optional
    stride, padding : int or (int, int)
    groups : int
        C and O must both be divisible by ``groups``.
    geometry : ConvGeometry, optional
        Precomputed by a layer (:func:`conv2d_geometry`); then the four arguments above
        are ignored and shapes are not re-checked.

    Returns
    -------
    out : ndarray, shape (*rep, N, O, out_h, out_w)
        ``out_h = (H + 2*pad_h - kh) // stride_h + 1`` (likewise ``out_w``).
    cache : Conv2dCache
    """
    if x.ndim < 4 or weight.ndim != x.ndim:
        raise ShapeError(
            f"conv2d: input must be (*rep, N, C, H, W) and weight (*rep, O, C/groups, kh, kw); "
            f"got input {x.shape} and weight {weight.shape}"
        )
    *lead, channels, height, width = x.shape
    out_channels, in_per_group, kh, kw = weight.shape[-4:]
    rep = weight.shape[:-4]
    if geometry is None:
        if (
            tuple(lead[:-1]) != rep
            or channels % groups
            or out_channels % groups
            or in_per_group * groups != channels
        ):
            raise ShapeError(
                f"conv2d: input {x.shape} does not fit weight {weight.shape} with groups={groups}"
            )
        geometry = conv2d_geometry(
            (channels, height, width), (kh, kw), pair(stride), pair(padding), groups
        )
    groups = geometry.groups
    # (*lead, C, kh*kw, L) is (*lead, g, C/g*kh*kw, L) in memory: the channels of a
    # group are consecutive.
    cols = gather_windows(x, geometry.windows, geometry.stream)
    cols = cols.reshape(*lead, groups, -1, cols.shape[-1])
    w = weight.reshape(*rep, 1, groups, out_channels // groups, -1)
    out = (w @ cols).reshape(*lead, out_channels, *geometry.out_hw)  # already NCHW
    if bias is not None:
        out += bias.reshape(*rep, 1, out_channels, 1, 1)
    return out, Conv2dCache(cols, geometry, x.shape)


def _grouped(out_grad: np.ndarray, cache: Conv2dCache) -> np.ndarray:
    """``out_grad`` viewed as (*lead, groups, O/groups, out_h*out_w)."""
    shape = out_grad.shape
    g = cache.geometry.groups
    return out_grad.reshape(*shape[:-3], g, shape[-3] // g, shape[-2] * shape[-1])


def conv2d_weight_grad(out_grad: np.ndarray, cache: Conv2dCache) -> np.ndarray:
    """dL/dweight from dL/dout: input windows correlated with ``out_grad``.

    Parameters
    ----------
    out_grad : ndarray, shape (*rep, N, O, out_h, out_w)
    cache : Conv2dCache from the forward pass

    Returns
    -------
    ndarray, shape (*rep, O, C/groups, kh, kw)
    """
    return _weight_grad(_grouped(out_grad, cache), cache)


def _weight_grad(delta: np.ndarray, cache: Conv2dCache) -> np.ndarray:
    """:func:`conv2d_weight_grad` of delta (*rep, N, g, O/g, L)."""
    geometry = cache.geometry
    if geometry.stream:  # big tables: (K, L) @ (L, O/g) is the faster BLAS order
        per_image = (cache.cols @ delta.swapaxes(-1, -2)).swapaxes(-1, -2)
    else:  # small ones: no transposed result to copy
        per_image = delta @ cache.cols.swapaxes(-1, -2)  # (*rep, N, g, O/g, K)
    grad = per_image.sum(axis=-4) if per_image.shape[-4] > 1 else per_image[..., 0, :, :, :]
    channels = geometry.in_shape[0]
    return grad.reshape(*grad.shape[:-3], -1, channels // geometry.groups, *geometry.kernel)


def conv2d_input_grad(
    out_grad: np.ndarray, weight: np.ndarray, cache: Conv2dCache
) -> np.ndarray:
    """dL/dx from dL/dout, sent back through ``weight``.

    ``weight`` is an argument (not taken from the cache) so that a learning rule can
    send the gradient back through other matrices, e.g. feedback alignment's fixed
    random kernels.

    Parameters
    ----------
    out_grad : ndarray, shape (*rep, N, O, out_h, out_w)
    weight : ndarray, shape (*rep, O, C/groups, kh, kw)
    cache : Conv2dCache from the forward pass

    Returns
    -------
    ndarray, shape (*rep, N, C, H, W)
    """
    return _input_grad(_grouped(out_grad, cache), weight, cache)


def _input_grad(delta: np.ndarray, weight: np.ndarray, cache: Conv2dCache) -> np.ndarray:
    """:func:`conv2d_input_grad` of delta (*rep, N, g, O/g, L)."""
    geometry = cache.geometry
    if geometry.stream and geometry.windows.stride == (1, 1):
        # Large samples: a scatter of every tap's share costs several times the matmul.
        return _full_correlation(delta, weight, geometry)
    rep = weight.shape[:-4]
    g = geometry.groups
    w = weight.reshape(*rep, 1, g, weight.shape[-4] // g, -1)  # (*rep, 1, g, O/g, K)
    col_grad = w.swapaxes(-1, -2) @ delta  # (*rep, N, g, K, L): each tap's share
    taps = col_grad.reshape(*cache.in_shape[:-2], -1, col_grad.shape[-1])  # (.., C, T, L)
    return scatter_windows(taps, geometry.windows)  # each share added to its pixel


def _full_correlation(
    delta: np.ndarray, weight: np.ndarray, geometry: ConvGeometry
) -> np.ndarray:
    """The input gradient of a stride-1 convolution as a full correlation of ``delta``
    with the kernel, with long contiguous runs instead of a scatter::

        dxpad[n, c, Y, X] = sum_{o, i, j} w[o, c, i, j] * delta[n, o, Y - i, X - j]

    Rows of delta are widened with zeros to the padded width Wp and laid end to end, so
    ``delta[n, o, y, X - j]`` for every X in [0, Wp) is one shifted run of that line.
    The kernel columns j go into one matmul over (o, j), giving for each kernel row i
    the whole padded rows ``y + i``; the kernel rows are then kh shifted adds.

    delta (*rep, N, g, O/g, L) -> (*rep, N, C, H, W)
    """
    windows = geometry.windows
    (height, width), (ph, pw), (kh, kw) = windows.in_hw, windows.padding, windows.kernel
    out_h, out_w = windows.out_hw
    wide = width + 2 * pw  # the padded width; out_w = wide - kw + 1
    run = out_h * wide
    *lead, groups, per_group, _ = delta.shape
    # line[..., kw - 1 + y*wide + x] = delta[..., y, x] (x < out_w), zero elsewhere.
    line = np.zeros((*lead, groups, per_group, kw - 1 + run), delta.dtype)
    rows = line[..., kw - 1 :].reshape(*lead, groups, per_group, out_h, wide)
    rows[..., :out_w] = delta.reshape(*lead, groups, per_group, out_h, out_w)
    # shifted[..., o, j, q] = line[..., kw - 1 + q - j]: delta[y, X - j] at q = y*wide + X.
    *strides, step = line.strides
    shifted = strided(
        line, (*lead, groups, per_group, kw, run), (*strides, -step, step), (kw - 1) * step
    ).reshape(*lead, groups, per_group * kw, run)
    # kernel[g, (c, i), (o, j)] = weight[g*O/g + o, c, i, j]
    rep = weight.shape[:-4]
    kernel = weight.reshape(*rep, groups, per_group, -1, kh, kw)
    n = kernel.ndim
    kernel = kernel.transpose(*range(n - 4), n - 3, n - 2, n - 4, n - 1)
    kernel = kernel.reshape(*rep, 1, groups, -1, per_group * kw)
    by_row = (kernel @ shifted).reshape(*lead, -1, kh, run)  # (*rep, N, C, kh, run)
    padded = np.zeros((*by_row.shape[:-2], (height + 2 * ph) * wide), delta.dtype)
    for i in range(kh):  # kernel row i adds to padded rows y + i
        padded[..., i * wide : i * wide + run] += by_row[..., i, :]
    padded = padded.reshape(*padded.shape[:-1], height + 2 * ph, wide)
    return padded[..., ph : ph + height, pw : pw + width]


def conv2d_bias_grad(out_grad: np.ndarray) -> np.ndarray:
    """dL/dbias: ``out_grad`` summed over batch and pixels.

    out_grad (*rep, N, O, out_h, out_w) -> (*rep, O)
    """
    return out_grad.sum(axis=(-4, -2, -1))


def conv2d_backward(
    out_grad: np.ndarray,
    weight: np.ndarray,
    cache: Conv2dCache,
    has_bias: bool = False,
    need_input_grad: bool = True,
) -> tuple[np.ndarray | None, np.ndarray, np.ndarray | None]:
    """Exact backward pass of :func:`conv2d_forward`.

    Returns
    -------
    input_grad : ndarray (*rep, N, C, H, W), or None if not ``need_input_grad``
    weight_grad : ndarray (*rep, O, C/groups, kh, kw)
    bias_grad : ndarray (*rep, O), or None if not ``has_bias``
    """
    delta = _grouped(out_grad, cache)
    input_grad = _input_grad(delta, weight, cache) if need_input_grad else None
    weight_grad = _weight_grad(delta, cache)
    bias_grad = conv2d_bias_grad(out_grad) if has_bias else None
    return input_grad, weight_grad, bias_grad


@register_layer
class Conv2d(WeightLayer):
    """2-D convolution (cross-correlation), weight ``(out, in/groups, kh, kw)``."""

    kind = "conv2d"

    def __init__(
        self,
        out_channels: int,
        kernel_size: int | tuple[int, int] = 3,
        stride: int | tuple[int, int] = 1,
        padding: int | tuple[int, int] = 0,
        groups: int = 1,
        bias: bool = True,
        in_channels: int | None = None,
        name: str | None = None,
    ) -> None:
        super().__init__(name)
        self.out_channels = positive_int(self.name, "out_channels", out_channels)
        self.kernel_size = int_pair(self.name, "kernel_size", kernel_size)
        self.stride = int_pair(self.name, "stride", stride)
        self.padding = int_pair(self.name, "padding", padding, minimum=0)
        self.groups = positive_int(self.name, "groups", groups)
        self.bias = bool(bias)
        self.in_channels = in_channels

    def _output_shape(self, in_shape):
        if len(in_shape) != 3:
            raise ShapeError(
                f"layer {self.name} (conv2d) needs (C, H, W) inputs, got shape {in_shape}"
            )
        channels, height, width = in_shape
        if self.in_channels is not None and self.in_channels != channels:
            raise ShapeError(
                f"layer {self.name} (conv2d) expects {self.in_channels} input channels, "
                f"the layer below gives shape {in_shape}"
            )
        if channels % self.groups or self.out_channels % self.groups:
            raise ShapeError(
                f"layer {self.name} (conv2d): groups={self.groups} must divide input channels "
                f"{channels} (input shape {in_shape}) and output channels {self.out_channels}"
            )
        (kh, kw), (ph, pw) = self.kernel_size, self.padding
        if height + 2 * ph < kh or width + 2 * pw < kw:
            raise ShapeError(
                f"layer {self.name} (conv2d): kernel {kh}x{kw} with padding {ph},{pw} does not "
                f"fit input shape {in_shape}"
            )
        self.in_channels = channels
        self.geometry = conv2d_geometry(
            (channels, height, width), self.kernel_size, self.stride, self.padding, self.groups
        )
        return (self.out_channels, *self.geometry.out_hw)

    def param_shapes(self):
        shapes = {
            "weight": (self.out_channels, self.in_shape[0] // self.groups, *self.kernel_size)
        }
        if self.bias:
            shapes["bias"] = (self.out_channels,)
        return shapes

    def fan_in(self) -> int:
        return self.in_shape[0] // self.groups * prod(self.kernel_size)

    def fan_out(self) -> int:
        # PyTorch's convention (torch.nn.init): out_channels * kernel area, groups ignored.
        return self.out_channels * prod(self.kernel_size)

    def spec(self):
        return {"type": self.kind, "name": self.name, "out_channels": self.out_channels,
                "kernel_size": list(self.kernel_size), "stride": list(self.stride),
                "padding": list(self.padding), "groups": self.groups, "bias": self.bias}

    def workspace(self, need_input_grad=True, itemsize=8):
        """Kept: the output and the input windows (im2col: C*kh*kw values per output
        pixel). Work: the gradients, the per-image weight gradients, and for the input
        gradient either each tap's share (as big as the windows) plus the padded input
        (the scatter), or the full correlation's widened, shifted and per-row arrays."""
        out, windows = prod(self.out_shape), self._windows_per_sample()
        channels, taps = self.in_shape[0], prod(self.kernel_size)
        work = out + self.out_channels * channels // self.groups * taps
        if need_input_grad:
            w = self.geometry.windows
            (height, width), (ph, pw), (kh, kw) = w.in_hw, w.padding, w.kernel
            padded = channels * (height + 2 * ph) * (width + 2 * pw)
            run = w.out_hw[0] * (width + 2 * pw)
            full = (self.out_channels * (kw + run) + self.out_channels * kw * run
                    + channels * kh * run + padded)
            streaming = self.geometry.stream and w.stride == (1, 1)
            scatter = windows + scatter_values(windows, padded, itemsize)
            work += prod(self.in_shape) + (full if streaming else scatter)
        return out + windows, work

    def _windows_per_sample(self) -> int:
        return self.in_shape[0] * prod(self.kernel_size) * prod(self.geometry.out_hw)

    def forward(self, params, x, train=True):
        return conv2d_forward(x, params["weight"], params.get("bias"), geometry=self.geometry)

    def input_grad(self, out_grad, weight, cache):
        return conv2d_input_grad(out_grad, weight, cache)

    def weight_grad(self, out_grad, cache):
        return conv2d_weight_grad(out_grad, cache)

    def bias_grad(self, out_grad):
        return conv2d_bias_grad(out_grad)
