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
def _dot_pair(x, x0, w, w0, w1, count):
    """:func:`dot` of x with two weight rows at once: each row's sum in exactly dot's
    order, but the x loads shared and eight chains of adds in flight instead of four."""
    s0 = s1 = s2 = s3 = 0.0
    t0 = t1 = t2 = t3 = 0.0
    k = 0
    while k + 4 <= count:
        a0, a1 = x[U(x0 + k)], x[U(x0 + k + 1)]
        a2, a3 = x[U(x0 + k + 2)], x[U(x0 + k + 3)]
        s0 += a0 * w[U(w0 + k)]
        s1 += a1 * w[U(w0 + k + 1)]
        s2 += a2 * w[U(w0 + k + 2)]
        s3 += a3 * w[U(w0 + k + 3)]
        t0 += a0 * w[U(w1 + k)]
        t1 += a1 * w[U(w1 + k + 1)]
        t2 += a2 * w[U(w1 + k + 2)]
        t3 += a3 * w[U(w1 + k + 3)]
        k += 4
    while k < count:
        s0 += x[U(x0 + k)] * w[U(w0 + k)]
        t0 += x[U(x0 + k)] * w[U(w1 + k)]
        k += 1
    return (s0 + s1) + (s2 + s3), (t0 + t1) + (t2 + t3)


@njit(cache=True, nogil=True, error_model="numpy")
def dense_forward(op, p, a, nb):
    """out[n, o] = sum_i x[n, i] w[o, i] + b[o] (two outputs per pass over x)."""
    fan_in, fan_out, w0, b0 = op[C], op[O], op[W_OFF], op[B_OFF]
    for n in range(nb):
        x0 = op[IN_OFF] + n * fan_in
        y0 = op[OUT_OFF] + n * fan_out
        o = 0
        while o + 2 <= fan_out:
            first, second = _dot_pair(a, x0, p, w0 + o * fan_in, w0 + (o + 1) * fan_in, fan_in)
            if b0 >= 0:
                first += p[U(b0 + o)]
                second += p[U(b0 + o + 1)]
            a[U(y0 + o)] = first
            a[U(y0 + o + 1)] = second
            o += 2
        if o < fan_out:
            total = dot(a, x0, p, w0 + o * fan_in, fan_in)
            if b0 >= 0:
                total += p[U(b0 + o)]
            a[U(y0 + o)] = total


@njit(cache=True, nogil=True, error_model="numpy")
def dense_backward(op, weights, w0, a, ga, gp, nb, need_dx):
    """dw[o, i] = sum_n delta[n, o] x[n, i]; db[o] = sum_n delta[n, o]; and, if
    ``need_dx``, dx[n, i] = sum_o delta[n, o] B[o, i] with B = ``weights[w0:]`` (W, or a
    rule's feedback weights): one pass over delta for both. The first sample's terms
    are added to 0 as they are written (no separate zeroing pass)."""
    fan_in, fan_out, wp, b0 = op[C], op[O], op[W_OFF], op[B_OFF]
    for n in range(nb):
        x0 = op[IN_OFF] + n * fan_in
        d0 = op[OUT_OFF] + n * fan_out
        if need_dx:
            fill(ga, x0, fan_in)
        for o in range(fan_out):
            d = ga[U(d0 + o)]
            if b0 >= 0:
                gp[U(b0 + o)] = (0.0 if n == 0 else gp[U(b0 + o)]) + d
            if n == 0:
                _scaled_into(gp, wp + o * fan_in, d, a, x0, fan_in)
            else:
                axpy(gp, wp + o * fan_in, d, a, x0, fan_in)
            if need_dx:
                axpy(ga, x0, d, weights, w0 + o * fan_in, fan_in)


@njit(cache=True, nogil=True, error_model="numpy")
def _scaled_into(out, o0, weight, src, s0, count):
    """out[o0 + k] = 0 + weight * src[s0 + k] (what zeroing then :func:`axpy` gives)."""
    for k in range(count):
        out[U(o0 + k)] = 0.0 + weight * src[U(s0 + k)]
