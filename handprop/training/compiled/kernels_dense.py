"""Compiled dense layer: forward, weight/bias gradients, input gradient.

Same conventions as :mod:`.kernels_conv` (one replica's arrays, fixed summation order).
"""

from __future__ import annotations

from numba import njit

from .plan import B_OFF, IN_OFF, OUT_OFF, W_OFF, C, O


@njit(cache=True, nogil=True)
def dense_forward(op, p, a, nb):
    """out[n, o] = sum_i x[n, i] w[o, i] + b[o]."""
    fan_in, fan_out, w0, b0 = op[C], op[O], op[W_OFF], op[B_OFF]
    for n in range(nb):
        x0 = op[IN_OFF] + n * fan_in
        y0 = op[OUT_OFF] + n * fan_out
        for o in range(fan_out):
            wo = w0 + o * fan_in
            total = 0.0
            for i in range(fan_in):
                total += a[x0 + i] * p[wo + i]
            if b0 >= 0:
                total += p[b0 + o]
            a[y0 + o] = total


@njit(cache=True, nogil=True)
def dense_param_grads(op, a, ga, gp, nb):
    """dw[o, i] = sum_n delta[n, o] x[n, i]; db[o] = sum_n delta[n, o]."""
    fan_in, fan_out, w0, b0 = op[C], op[O], op[W_OFF], op[B_OFF]
    gp[w0 : w0 + fan_out * fan_in] = 0.0
    if b0 >= 0:
        gp[b0 : b0 + fan_out] = 0.0
    for n in range(nb):
        x0 = op[IN_OFF] + n * fan_in
        d0 = op[OUT_OFF] + n * fan_out
        for o in range(fan_out):
            d = ga[d0 + o]
            if b0 >= 0:
                gp[b0 + o] += d
            wo = w0 + o * fan_in
            for i in range(fan_in):
                gp[wo + i] += d * a[x0 + i]


@njit(cache=True, nogil=True)
def dense_input_grad(op, weights, w0, ga, nb):
    """dx[n, i] = sum_o delta[n, o] B[o, i], B = ``weights[w0:]`` (W or feedback)."""
    fan_in, fan_out = op[C], op[O]
    for n in range(nb):
        x0 = op[IN_OFF] + n * fan_in
        d0 = op[OUT_OFF] + n * fan_out
        ga[x0 : x0 + fan_in] = 0.0
        for o in range(fan_out):
            d = ga[d0 + o]
            wo = w0 + o * fan_in
            for i in range(fan_in):
                ga[x0 + i] += d * weights[wo + i]
