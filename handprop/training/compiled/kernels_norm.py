"""Compiled average pooling and batch normalisation, written once against the slot API
(:mod:`.slots`). The formulas are :mod:`handprop.core.ops.avgpool`'s and
:mod:`handprop.core.ops.batchnorm`'s, in their order of operations.

Average pool: each window's taps summed in row-major order (padding taps skipped: the
reference adds zeros there), divided by the window's divisor
(``scales[op.scales_offset:]``); backward, each window's gradient over its divisor
added to its entries, window by window.

Batch norm (train mode: the engine only trains): per channel over the batch's N*H*W
values, mean, then the biased variance of the centred values, ``xhat`` kept at
``a[op.cache_offset:]`` and 1/sqrt(var + eps) after it; the running statistics (in the
state row ``q``) move by ``momentum`` (``scales[op.scales_offset + 1]``), in the lanes
that take the step (``keep``) only.
"""

from __future__ import annotations

from numba import njit

from ...core.ops.avgpool import AvgPool2d, avg_pool2d_geometry
from ...core.ops.batchnorm import BatchNorm2d
from .capabilities import WIDTH8, OpSpec, UnsupportedError, every_feature, register_op
from .slots import (
    KERNEL,
    add,
    div,
    fill,
    load,
    mul,
    muladd,
    select,
    splat,
    sqrt,
    store,
    sub,
    total,
    zero,
)

AVG, BN = 5, 6


def _describe_avg(builder, row, layer, index) -> None:
    builder.shapes(row, index)
    builder.window(row, layer.kernel_size, layer.stride, layer.padding)
    geometry = avg_pool2d_geometry(tuple(builder.net.shapes[index][1:]), layer.kernel_size,
                                   layer.stride, layer.padding, layer.count_include_pad)
    row["scales_offset"] = builder.add_scales(list(geometry.divisor))  # each window's


def _describe_bn(builder, row, layer, index) -> None:
    """Train mode; running statistics in the state buffer (mean, then variance)."""
    builder.shapes(row, index)
    channels, height, width = builder.net.shapes[index]
    if height * width < 2:  # one value per channel: the reference refuses
        raise UnsupportedError(f"layer {layer.name!r}: batch norm of 1x1 maps")
    state = builder.state(index)
    row["state_offset"] = state["running_mean"][0]
    if state["running_var"][0] != row["state_offset"] + channels:
        raise UnsupportedError(f"layer {layer.name!r}: unexpected state layout")
    # xhat, then 1/sqrt(var + eps) per channel
    row["cache_offset"] = builder.add_arena(builder.batch * channels * height * width + channels)
    row["scales_offset"] = builder.add_scales([layer.eps, layer.momentum])


register_op(OpSpec(AvgPool2d, AVG, _describe_avg, every_feature,
                   "any window, stride and padding, both count_include_pad"))
register_op(OpSpec(BatchNorm2d, BN, _describe_bn, lambda layer, how: frozenset({WIDTH8}),
                   "train mode, running statistics, affine or not (its batch statistics "
                   "couple a batch's samples: not in batch lanes)"))


@njit(**KERNEL)
def _inside(op, window, i, j):
    """The input pixel tap (i, j) of ``window`` reads, or -1 for padding."""
    y = (window // op.out_w) * op.stride_h - op.pad_h + i
    x = (window % op.out_w) * op.stride_w - op.pad_w + j
    if y < 0 or y >= op.in_h or x < 0 or x >= op.in_w:
        return -1
    return y * op.in_w + x


@njit(**KERNEL)
def avg_forward(op, scales, a, nb):
    plane_in, plane_out = op.in_h * op.in_w, op.out_h * op.out_w
    for m in range(nb * op.in_c):
        x0, y0 = op.in_offset + m * plane_in, op.out_offset + m * plane_out
        for window in range(plane_out):
            summed = zero(a)
            for i in range(op.kernel_h):
                for j in range(op.kernel_w):
                    at = _inside(op, window, i, j)
                    if at >= 0:
                        summed = add(summed, load(a, x0 + at))
            divisor = splat(scales[op.scales_offset + window], summed)
            store(a, y0 + window, div(summed, divisor))


@njit(**KERNEL)
def avg_backward(op, scales, ga, nb):
    plane_in, plane_out = op.in_h * op.in_w, op.out_h * op.out_w
    fill(ga, op.in_offset, nb * op.in_c * plane_in)
    for m in range(nb * op.in_c):
        x0, g0 = op.in_offset + m * plane_in, op.out_offset + m * plane_out
        for window in range(plane_out):
            grad = load(ga, g0 + window)
            share = div(grad, splat(scales[op.scales_offset + window], grad))
            for i in range(op.kernel_h):
                for j in range(op.kernel_w):
                    at = _inside(op, window, i, j)
                    if at >= 0:
                        store(ga, x0 + at, add(load(ga, x0 + at), share))


@njit(**KERNEL)
def _channel_moments(op, a, nb, c):
    """The batch mean and biased variance of channel c (the reference's order)."""
    channels, plane = op.in_c, op.in_h * op.in_w
    count = nb * plane
    summed = zero(a)
    for n in range(nb):
        summed = total(a, op.in_offset + (n * channels + c) * plane, plane, summed)
    mean = div(summed, splat(float(count), summed))
    squares = zero(a)
    for n in range(nb):
        x0 = op.in_offset + (n * channels + c) * plane
        for k in range(plane):
            centred = sub(load(a, x0 + k), mean)
            squares = muladd(squares, centred, centred)
    return mean, div(squares, splat(float(count), squares))


@njit(**KERNEL)
def bn_forward(op, scales, p, q, a, nb, keep):
    channels, plane = op.in_c, op.in_h * op.in_w
    count = nb * plane
    eps, momentum = scales[op.scales_offset], scales[op.scales_offset + 1]
    xhat0 = op.cache_offset
    inv0 = xhat0 + nb * channels * plane
    for c in range(channels):
        mean, var = _channel_moments(op, a, nb, c)
        inv_std = div(splat(1.0, var), sqrt(add(var, splat(eps, var))))
        store(a, inv0 + c, inv_std)
        for n in range(nb):
            offset = (n * channels + c) * plane
            for k in range(plane):
                xhat = mul(sub(load(a, op.in_offset + offset + k), mean), inv_std)
                store(a, xhat0 + offset + k, xhat)
                y = mul(xhat, load(p, op.weight_offset + c)) if op.weight_offset >= 0 else xhat
                if op.bias_offset >= 0:
                    y = add(y, load(p, op.bias_offset + c))
                store(a, op.out_offset + offset + k, y)
        s0 = op.state_offset
        rest = splat(1 - momentum, mean)
        old_mean, old_var = load(q, s0 + c), load(q, s0 + channels + c)
        new_mean = muladd(mul(old_mean, rest), splat(momentum, mean), mean)
        unbiased = mul(mul(splat(momentum, var), var), splat(count / (count - 1), var))
        store(q, s0 + c, select(keep, new_mean, old_mean))
        store(q, s0 + channels + c, select(keep, add(mul(old_var, rest), unbiased), old_var))


@njit(**KERNEL)
def bn_backward(op, p, a, ga, gp, nb, need_dx):
    """dgamma = sum(delta * xhat), dbeta = sum(delta); dx = gamma * inv_std * (delta -
    mean(delta) - xhat * mean(delta * xhat))."""
    channels, plane = op.in_c, op.in_h * op.in_w
    count = nb * plane
    xhat0 = op.cache_offset
    inv0 = xhat0 + nb * channels * plane
    for c in range(channels):
        dgamma = dbeta = zero(ga)
        for n in range(nb):
            offset = (n * channels + c) * plane
            for k in range(plane):
                delta = load(ga, op.out_offset + offset + k)
                dgamma = muladd(dgamma, delta, load(a, xhat0 + offset + k))
                dbeta = add(dbeta, delta)
        if op.weight_offset >= 0:
            store(gp, op.weight_offset + c, dgamma)
            store(gp, op.bias_offset + c, dbeta)
        if not need_dx:
            continue
        scale = load(a, inv0 + c)
        if op.weight_offset >= 0:
            scale = mul(scale, load(p, op.weight_offset + c))
        mean_delta = div(dbeta, splat(float(count), dbeta))
        mean_delta_xhat = div(dgamma, splat(float(count), dgamma))
        for n in range(nb):
            offset = (n * channels + c) * plane
            for k in range(plane):
                delta = load(ga, op.out_offset + offset + k)
                xhat = load(a, xhat0 + offset + k)
                centred = sub(sub(delta, mean_delta), mul(xhat, mean_delta_xhat))
                store(ga, op.in_offset + offset + k, mul(scale, centred))
