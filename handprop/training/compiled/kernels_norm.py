"""Compiled average pooling and batch normalisation (per replica, see kernels_conv's
conventions). The formulas are :mod:`handprop.core.ops.avgpool`'s and
:mod:`handprop.core.ops.batchnorm`'s, in their order of operations.

Average pool: each window's taps summed in row-major order (padding taps skipped: the
reference adds zeros there), divided by the window's divisor (``scales[op[SCALE]:]``);
backward, each window's gradient over its divisor added to its entries, window by window.

Batch norm (train mode: the engine only trains): per channel over the batch's N*H*W
values, mean, then the biased variance of the centred values, ``xhat`` kept at
``a[op[CACHE_OFF]:]`` and 1/sqrt(var + eps) after it; the running statistics (in the
replica's state row ``q``) move by ``momentum`` (``scales[op[SCALE] + 1]``).
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .plan import (
    B_OFF,
    CACHE_OFF,
    IN_OFF,
    KH,
    KW,
    OH,
    OUT_OFF,
    OW,
    PH,
    PW,
    SCALE,
    SH,
    STATE_OFF,
    SW,
    W_OFF,
    C,
    H,
    W,
)

U = np.uint64
JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


@njit(**JIT)
def _inside(op, window, i, j):
    """The input pixel tap (i, j) of ``window`` reads, or -1 for padding."""
    wout, hin, win = op[OW], op[H], op[W]
    y = (window // wout) * op[SH] - op[PH] + i
    x = (window % wout) * op[SW] - op[PW] + j
    if y < 0 or y >= hin or x < 0 or x >= win:
        return -1
    return y * win + x


@njit(**JIT)
def avg_forward(op, scales, a, nb):
    plane_in, plane_out = op[H] * op[W], op[OH] * op[OW]
    for m in range(nb * op[C]):
        x0, y0 = op[IN_OFF] + m * plane_in, op[OUT_OFF] + m * plane_out
        for window in range(plane_out):
            total = 0.0
            for i in range(op[KH]):
                for j in range(op[KW]):
                    at = _inside(op, window, i, j)
                    if at >= 0:
                        total += a[U(x0 + at)]
            a[U(y0 + window)] = total / scales[op[SCALE] + window]


@njit(**JIT)
def avg_backward(op, scales, ga, nb):
    plane_in, plane_out = op[H] * op[W], op[OH] * op[OW]
    dx0 = op[IN_OFF]
    for k in range(nb * op[C] * plane_in):
        ga[U(dx0 + k)] = 0.0
    for m in range(nb * op[C]):
        x0, g0 = dx0 + m * plane_in, op[OUT_OFF] + m * plane_out
        for window in range(plane_out):
            share = ga[U(g0 + window)] / scales[op[SCALE] + window]
            for i in range(op[KH]):
                for j in range(op[KW]):
                    at = _inside(op, window, i, j)
                    if at >= 0:
                        ga[U(x0 + at)] += share


@njit(**JIT)
def bn_forward(op, scales, p, q, a, nb):
    channels, plane = op[C], op[H] * op[W]
    count = nb * plane
    eps, momentum = scales[op[SCALE]], scales[op[SCALE] + 1]
    xhat0 = op[CACHE_OFF]
    inv0 = xhat0 + nb * channels * plane
    for c in range(channels):
        total = 0.0
        for n in range(nb):
            x0 = op[IN_OFF] + (n * channels + c) * plane
            for k in range(plane):
                total += a[U(x0 + k)]
        mean = total / count
        squares = 0.0
        for n in range(nb):
            x0 = op[IN_OFF] + (n * channels + c) * plane
            for k in range(plane):
                centred = a[U(x0 + k)] - mean
                squares += centred * centred
        var = squares / count
        inv_std = 1.0 / math.sqrt(var + eps)
        a[U(inv0 + c)] = inv_std
        for n in range(nb):
            offset = (n * channels + c) * plane
            for k in range(plane):
                xhat = (a[U(op[IN_OFF] + offset + k)] - mean) * inv_std
                a[U(xhat0 + offset + k)] = xhat
                y = xhat * p[U(op[W_OFF] + c)] if op[W_OFF] >= 0 else xhat
                a[U(op[OUT_OFF] + offset + k)] = y + p[U(op[B_OFF] + c)] if op[B_OFF] >= 0 else y
        s0 = op[STATE_OFF]
        q[U(s0 + c)] = q[U(s0 + c)] * (1 - momentum) + momentum * mean
        unbiased = momentum * var * (count / (count - 1))
        q[U(s0 + channels + c)] = q[U(s0 + channels + c)] * (1 - momentum) + unbiased


@njit(**JIT)
def bn_backward(op, p, a, ga, gp, nb, need_dx):
    """dgamma = sum(delta * xhat), dbeta = sum(delta); dx = gamma * inv_std * (delta -
    mean(delta) - xhat * mean(delta * xhat))."""
    channels, plane = op[C], op[H] * op[W]
    count = nb * plane
    xhat0 = op[CACHE_OFF]
    inv0 = xhat0 + nb * channels * plane
    for c in range(channels):
        dgamma = dbeta = 0.0
        for n in range(nb):
            offset = (n * channels + c) * plane
            for k in range(plane):
                delta = ga[U(op[OUT_OFF] + offset + k)]
                dgamma += delta * a[U(xhat0 + offset + k)]
                dbeta += delta
        if op[W_OFF] >= 0:
            gp[U(op[W_OFF] + c)] = dgamma
            gp[U(op[B_OFF] + c)] = dbeta
        if not need_dx:
            continue
        scale = a[U(inv0 + c)]
        if op[W_OFF] >= 0:
            scale = scale * p[U(op[W_OFF] + c)]
        mean_delta, mean_delta_xhat = dbeta / count, dgamma / count
        for n in range(nb):
            offset = (n * channels + c) * plane
            for k in range(plane):
                delta = ga[U(op[OUT_OFF] + offset + k)]
                xhat = a[U(xhat0 + offset + k)]
                ga[U(op[IN_OFF] + offset + k)] = scale * (delta - mean_delta
                                                          - xhat * mean_delta_xhat)
