"""Compiled dense layer: forward, weight/bias gradients, input gradient.

Same conventions as :mod:`.kernels_conv` (one replica's arrays, fixed summation order,
unsigned indices in inner loops).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .plan import B_OFF, IN_OFF, OUT_OFF, W_OFF, C, O

U = np.uint64


@njit(cache=True, nogil=True, error_model="numpy")
def fill(out, o0, count):
    """out[o0 : o0 + count] = 0 (a loop: Numba's slice assignment costs tens of ns of
    set-up, as much as the work on the article's small maps)."""
    for k in range(count):
        out[U(o0 + k)] = 0.0


@njit(cache=True, nogil=True, error_model="numpy")
def copy(out, o0, src, s0, count):
    """out[o0 : o0 + count] = src[s0 : s0 + count] (a loop, see :func:`fill`)."""
    for k in range(count):
        out[U(o0 + k)] = src[U(s0 + k)]


@njit(cache=True, nogil=True, error_model="numpy")
def dot(u, u0, v, v0, count):
    """sum_k u[u0 + k] v[v0 + k] in four interleaved partial sums (four independent
    chains of adds instead of one; a fixed order all the same)."""
    s0 = s1 = s2 = s3 = 0.0
    k = 0
    while k + 4 <= count:
        s0 += u[U(u0 + k)] * v[U(v0 + k)]
        s1 += u[U(u0 + k + 1)] * v[U(v0 + k + 1)]
        s2 += u[U(u0 + k + 2)] * v[U(v0 + k + 2)]
        s3 += u[U(u0 + k + 3)] * v[U(v0 + k + 3)]
        k += 4
    while k < count:
        s0 += u[U(u0 + k)] * v[U(v0 + k)]
        k += 1
    return (s0 + s1) + (s2 + s3)


@njit(cache=True, nogil=True, error_model="numpy")
def axpy(out, o0, weight, src, s0, count):
    """out[o0 + k] += weight * src[s0 + k] for k < count (vectorized)."""
    for k in range(count):
        out[U(o0 + k)] += weight * src[U(s0 + k)]


@njit(cache=True, nogil=True, error_model="numpy")
def dense_forward(op, p, a, nb):
    """out[n, o] = sum_i x[n, i] w[o, i] + b[o]."""
    fan_in, fan_out, w0, b0 = op[C], op[O], op[W_OFF], op[B_OFF]
    for n in range(nb):
        x0 = op[IN_OFF] + n * fan_in
        y0 = op[OUT_OFF] + n * fan_out
        for o in range(fan_out):
            total = dot(a, x0, p, w0 + o * fan_in, fan_in)
            if b0 >= 0:
                total += p[U(b0 + o)]
            a[U(y0 + o)] = total


@njit(cache=True, nogil=True, error_model="numpy")
def dense_param_grads(op, a, ga, gp, nb):
    """dw[o, i] = sum_n delta[n, o] x[n, i]; db[o] = sum_n delta[n, o]."""
    fan_in, fan_out, w0, b0 = op[C], op[O], op[W_OFF], op[B_OFF]
    fill(gp, w0, fan_out * fan_in)
    if b0 >= 0:
        fill(gp, b0, fan_out)
    for n in range(nb):
        x0 = op[IN_OFF] + n * fan_in
        d0 = op[OUT_OFF] + n * fan_out
        for o in range(fan_out):
            d = ga[U(d0 + o)]
            if b0 >= 0:
                gp[U(b0 + o)] += d
            axpy(gp, w0 + o * fan_in, d, a, x0, fan_in)


@njit(cache=True, nogil=True, error_model="numpy")
def dense_input_grad(op, weights, w0, ga, nb):
    """dx[n, i] = sum_o delta[n, o] B[o, i], B = ``weights[w0:]`` (W or feedback)."""
    fan_in, fan_out = op[C], op[O]
    for n in range(nb):
        x0 = op[IN_OFF] + n * fan_in
        d0 = op[OUT_OFF] + n * fan_out
        fill(ga, x0, fan_in)
        for o in range(fan_out):
            axpy(ga, x0, ga[U(d0 + o)], weights, w0 + o * fan_in, fan_in)
