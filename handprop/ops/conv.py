"""2-D convolution (cross-correlation, like ``torch.nn.functional.conv2d``).

Forward, for output channel o in group g, output pixel (y, x)::

    out[n, o, y, x] = bias[o] + sum_{c in g, i, j} w[o, c, i, j] * xpad[n, c, y*s + i, x*s + j]

Backward, with ``delta = dL/d out``:

* weight gradient ``dL/dw[o, c, i, j] = sum_{n, y, x} delta[n, o, y, x] * xpad[n, c, y*s+i, x*s+j]``
  (the input windows correlated with delta);
* input gradient ``dL/dx`` = every window entry's share ``w[o, c, i, j] * delta[n, o, y, x]``
  added back to the input pixel it was read from (a "full" convolution of delta with
  the kernel, written here as a scatter-add);
* bias gradient ``dL/db[o] = sum_{n, y, x} delta[n, o, y, x]``.

All three are computed with one im2col table (see ``_index.py``), so there is no Python
loop over images, pixels or kernel taps. Arrays may carry leading *replica* axes in
front of the batch axis (independent networks trained in lockstep): ``x`` is
``(*rep, N, C, H, W)`` and ``weight`` is ``(*rep, O, C/groups, kh, kw)``.
"""

from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple

import numpy as np

from ..errors import ShapeError
from ._index import conv_gather_index, scatter_add


def _pair(value: int | tuple[int, int]) -> tuple[int, int]:
    if isinstance(value, tuple | list):
        return int(value[0]), int(value[1])
    return int(value), int(value)


class ConvGeometry(NamedTuple):
    """Everything about a convolution that does not depend on the numbers.

    index : ndarray of int64, shape (groups, out_h*out_w, C/groups*kh*kw)
        The im2col gather table (see ``_index.py``).
    in_shape : (C, H, W) of one sample
    out_hw : (out_h, out_w)
    kernel : (kh, kw)
    groups : int
    """

    index: np.ndarray
    in_shape: tuple[int, int, int]
    out_hw: tuple[int, int]
    kernel: tuple[int, int]
    groups: int


@lru_cache(maxsize=256)
def conv2d_geometry(
    in_shape: tuple[int, int, int],
    kernel: tuple[int, int],
    stride: tuple[int, int] = (1, 1),
    padding: tuple[int, int] = (0, 0),
    groups: int = 1,
) -> ConvGeometry:
    """The (cached) geometry of a convolution over one (C, H, W) sample."""
    index, out_h, out_w = conv_gather_index(in_shape, kernel, stride, padding, groups)
    return ConvGeometry(index, in_shape, (out_h, out_w), kernel, groups)


class Conv2dCache(NamedTuple):
    """What the backward pass needs from the forward pass.

    cols : ndarray, shape (*rep, N, groups, out_h*out_w, C/groups*kh*kw)
        The input windows (im2col), zero where they cover padding.
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
            (channels, height, width), (kh, kw), _pair(stride), _pair(padding), groups
        )
    out_h, out_w = geometry.out_hw
    groups = geometry.groups
    flat = x.reshape(*lead, channels * height * width)
    # Append the zero slot that padded taps read (see _index.py).
    flat = np.concatenate([flat, np.zeros((*lead, 1), dtype=x.dtype)], axis=-1)
    cols = flat.take(geometry.index, axis=-1)  # (*lead, g, L, K)
    w = weight.reshape(*rep, 1, groups, out_channels // groups, -1)
    out = w @ cols.swapaxes(-1, -2)  # (*lead, g, O/g, L)
    out = out.reshape(*lead, out_channels, out_h, out_w)
    if bias is not None:
        out += bias.reshape(*rep, 1, out_channels, 1, 1)
    return out, Conv2dCache(cols, geometry, x.shape)


def _grouped(out_grad: np.ndarray, cache: Conv2dCache) -> np.ndarray:
    """``out_grad`` viewed as (*lead, groups, O/groups, out_h*out_w)."""
    *lead, out_channels, out_h, out_w = out_grad.shape
    g = cache.geometry.groups
    return out_grad.reshape(*lead, g, out_channels // g, out_h * out_w)


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
    delta = _grouped(out_grad, cache)  # (*rep, N, g, O/g, L)
    per_image = delta @ cache.cols  # (*rep, N, g, O/g, K)
    grad = per_image.sum(axis=-4) if per_image.shape[-4] > 1 else per_image[..., 0, :, :, :]
    geometry = cache.geometry
    channels = geometry.in_shape[0]
    return grad.reshape(
        *out_grad.shape[:-4], out_grad.shape[-3], channels // geometry.groups, *geometry.kernel
    )


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
    delta = _grouped(out_grad, cache)  # (*rep, N, g, O/g, L)
    rep = weight.shape[:-4]
    g = cache.geometry.groups
    w = weight.reshape(*rep, 1, g, weight.shape[-4] // g, -1)  # (*rep, 1, g, O/g, K)
    col_grad = delta.swapaxes(-1, -2) @ w  # (*rep, N, g, L, K): each tap's share
    *lead, channels, height, width = cache.in_shape
    size = channels * height * width
    flat = scatter_add(col_grad, cache.geometry.index, size + 1)  # last slot: the padding, dropped
    return flat[..., :size].reshape(cache.in_shape)


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
    input_grad = conv2d_input_grad(out_grad, weight, cache) if need_input_grad else None
    weight_grad = conv2d_weight_grad(out_grad, cache)
    bias_grad = conv2d_bias_grad(out_grad) if has_bias else None
    return input_grad, weight_grad, bias_grad
