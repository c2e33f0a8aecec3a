"""Compiled conv2d: forward, weight/bias gradients, input gradient (explicit loops).

Arrays are one replica's: ``p`` its flat parameters, ``a``/``ga`` its activation and
gradient arenas (NCHW batches at the offsets of the plan's ``ops`` row), ``gp`` its
parameter gradient. Each sum runs in one fixed order, so results never depend on
threads or on how many replicas share a call. Padding taps are skipped (the reference
multiplies them by zero): the same sums, in another order.

Indices into the arenas are cast to unsigned (``U``) where they are used: Numba
guards every signed index against Python's negative indexing, and that branch keeps
the compiler from vectorizing the inner loops (measured: 8x slower row updates).
Every kernel uses NumPy's error model: a division by zero gives inf or NaN, as in the
reference, instead of a Python exception (and a branch before every division).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .kernels_dense import axpy, copy, dot, fill
from .plan import (
    B_OFF,
    FW_OFF,
    GROUPS,
    IN_OFF,
    KH,
    KW,
    OH,
    OUT_OFF,
    OW,
    PH,
    PW,
    ROT_DX,
    ROT_W,
    SH,
    SW,
    W_OFF,
    W_OSTRIDE,
    C,
    H,
    O,
    W,
)

U = np.uint64


@njit(cache=True, nogil=True, error_model="numpy")
def _span(size_out, stride, pad, tap, size_in):
    """The output positions whose window tap ``tap`` reads inside the input (not padding):
    ``lo <= y < hi`` with ``0 <= y*stride - pad + tap < size_in``."""
    lo = 0
    while lo < size_out and lo * stride - pad + tap < 0:
        lo += 1
    hi = size_out
    while hi > lo and (hi - 1) * stride - pad + tap >= size_in:
        hi -= 1
    return lo, hi


@njit(cache=True, nogil=True, error_model="numpy")
def _add_row(out, o0, src, s0, stride, weight, count):
    """out[o0 + k] += weight * src[s0 + k*stride] for k < count."""
    for k in range(count):
        out[U(o0 + k)] += weight * src[U(s0 + k * stride)]


@njit(cache=True, nogil=True, error_model="numpy")
def _forward_strided(op, p, a, nb):
    """conv_forward for any stride: tap by tap, ``w * (input row)`` added to each output
    row, skipping the padding."""
    cin, hin, win = op[C], op[H], op[W]
    cout, hout, wout = op[O], op[OH], op[OW]
    kh, kw, sh, sw, ph, pw = op[KH], op[KW], op[SH], op[SW], op[PH], op[PW]
    per_in, per_out = cin // op[GROUPS], cout // op[GROUPS]
    w0, b0, ostride = op[FW_OFF], op[B_OFF], op[W_OSTRIDE]
    plane_in, plane_out = hin * win, hout * wout
    for n in range(nb):
        x0 = op[IN_OFF] + n * cin * plane_in
        for o in range(cout):
            y0 = op[OUT_OFF] + (n * cout + o) * plane_out
            fill(a, y0, plane_out)
            first = (o // per_out) * per_in
            for c in range(per_in):
                xc = x0 + (first + c) * plane_in
                for i in range(kh):
                    oy_lo, oy_hi = _span(hout, sh, ph, i, hin)
                    for j in range(kw):
                        ox_lo, ox_hi = _span(wout, sw, pw, j, win)
                        w = p[U(w0 + o * ostride + (c * kh + i) * kw + j)]
                        for oy in range(oy_lo, oy_hi):
                            row_in = xc + (oy * sh - ph + i) * win + ox_lo * sw - pw + j
                            _add_row(a, y0 + oy * wout + ox_lo, a, row_in, sw, w,
                                     ox_hi - ox_lo)
            if b0 >= 0:
                bias = p[U(b0 + o)]
                for k in range(plane_out):
                    a[U(y0 + k)] += bias


@njit(cache=True, nogil=True, error_model="numpy")
def _rotate_maps(ga, start, maps, plane):
    """Rotate ``maps`` consecutive maps of ``plane`` values by 180 degrees, in place."""
    for m in range(maps):
        base = start + m * plane
        for k in range(plane // 2):
            last = base + plane - 1 - k
            ga[base + k], ga[last] = ga[last], ga[base + k]


@njit(cache=True, nogil=True, error_model="numpy")
def _row_dot(u, u0, v, v0, stride, count):
    """sum_k u[u0 + k] v[v0 + k*stride], in two interleaved partial sums."""
    even = odd = 0.0
    k = 0
    while k + 2 <= count:
        even += u[U(u0 + k)] * v[U(v0 + k * stride)]
        odd += u[U(u0 + k + 1)] * v[U(v0 + (k + 1) * stride)]
        k += 2
    if k < count:
        even += u[U(u0 + k)] * v[U(v0 + k * stride)]
    return even + odd


@njit(cache=True, nogil=True, error_model="numpy")
def _param_grads_strided(op, a, ga, gp, nb):
    """conv_param_grads for any stride: one dot product per tap and output row."""
    cin, hin, win = op[C], op[H], op[W]
    cout, hout, wout = op[O], op[OH], op[OW]
    kh, kw, sh, sw, ph, pw = op[KH], op[KW], op[SH], op[SW], op[PH], op[PW]
    per_in, per_out = cin // op[GROUPS], cout // op[GROUPS]
    w0 = op[W_OFF]
    plane_in, plane_out = hin * win, hout * wout
    for o in range(cout):
        first = (o // per_out) * per_in
        for c in range(per_in):
            for i in range(kh):
                oy_lo, oy_hi = _span(hout, sh, ph, i, hin)
                for j in range(kw):
                    ox_lo, ox_hi = _span(wout, sw, pw, j, win)
                    total = 0.0
                    for n in range(nb):
                        d0 = op[OUT_OFF] + (n * cout + o) * plane_out
                        xc = op[IN_OFF] + (n * cin + first + c) * plane_in
                        for oy in range(oy_lo, oy_hi):
                            row_in = xc + (oy * sh - ph + i) * win + ox_lo * sw - pw + j
                            total += _row_dot(ga, d0 + oy * wout + ox_lo, a, row_in, sw,
                                              ox_hi - ox_lo)
                    gp[U(w0 + ((o * per_in + c) * kh + i) * kw + j)] = total


@njit(cache=True, nogil=True, error_model="numpy")
def _input_grad_strided(op, weights, w0, wstride, ga, nb):
    """conv_input_grad for any stride: each tap's shares added back row by row."""
    cin, hin, win = op[C], op[H], op[W]
    cout, hout, wout = op[O], op[OH], op[OW]
    kh, kw, sh, sw, ph, pw = op[KH], op[KW], op[SH], op[SW], op[PH], op[PW]
    per_in, per_out = cin // op[GROUPS], cout // op[GROUPS]
    plane_in, plane_out = hin * win, hout * wout
    dx0 = op[IN_OFF]
    fill(ga, dx0, nb * cin * plane_in)
    for n in range(nb):
        x0 = dx0 + n * cin * plane_in
        for o in range(cout):
            d0 = op[OUT_OFF] + (n * cout + o) * plane_out
            first = (o // per_out) * per_in
            for c in range(per_in):
                xc = x0 + (first + c) * plane_in
                for i in range(kh):
                    oy_lo, oy_hi = _span(hout, sh, ph, i, hin)
                    for j in range(kw):
                        ox_lo, ox_hi = _span(wout, sw, pw, j, win)
                        w = weights[U(w0 + o * wstride + (c * kh + i) * kw + j)]
                        for oy in range(oy_lo, oy_hi):
                            row_in = xc + (oy * sh - ph + i) * win + ox_lo * sw - pw + j
                            _scatter_row(ga, row_in, sw, ga, d0 + oy * wout + ox_lo, w,
                                         ox_hi - ox_lo)


@njit(cache=True, nogil=True, error_model="numpy")
def _scatter_row(out, o0, stride, src, s0, weight, count):
    """out[o0 + k*stride] += weight * src[s0 + k] for k < count."""
    for k in range(count):
        out[U(o0 + k * stride)] += weight * src[U(s0 + k)]


# -- stride 1: whole padded planes as one run ---------------------------------------
# With the input zero-padded to width Wp and delta widened to Wp columns (zeros past
# its last column), tap (i, j) of every output pixel of a plane is one contiguous run:
# out_wide[k] += w * xpad[i*Wp + j + k] for k < (out_h - 1)*Wp + out_w. Long runs the
# compiler vectorizes, instead of short rows; the extra columns are dropped.


@njit(cache=True, nogil=True, error_model="numpy")
def _padded(op, src, x0, a, work):
    """Sample's input planes zero-padded into ``a[work:]``, or the input itself when
    there is no padding; returns (array, offset, padded width, padded plane)."""
    cin, hin, win, ph, pw = op[C], op[H], op[W], op[PH], op[PW]
    wide, tall = win + 2 * pw, hin + 2 * ph
    if ph == 0 and pw == 0:
        return src, x0, win, hin * win
    fill(a, work, cin * tall * wide)
    for c in range(cin):
        for y in range(hin):
            row = work + (c * tall + y + ph) * wide + pw
            copy(a, row, src, x0 + (c * hin + y) * win, win)
    return a, work, wide, tall * wide


@njit(cache=True, nogil=True, error_model="numpy")
def _widen(op, ga, d0, a, out0, wide):
    """Delta plane (out_h x out_w) laid out in rows of ``wide`` at ``a[out0:]``."""
    hout, wout = op[OH], op[OW]
    fill(a, out0, hout * wide)
    for y in range(hout):
        copy(a, out0 + y * wide, ga, d0 + y * wout, wout)


@njit(cache=True, nogil=True, error_model="numpy")
def _forward_wide(op, p, a, nb, work):
    cin, cout, hout, wout = op[C], op[O], op[OH], op[OW]
    kh, kw = op[KH], op[KW]
    per_in, per_out = cin // op[GROUPS], cout // op[GROUPS]
    w0, b0, ostride = op[FW_OFF], op[B_OFF], op[W_OSTRIDE]
    plane_out = hout * wout
    for n in range(nb):
        src, x0, wide, plane = _padded(op, a, op[IN_OFF] + n * cin * op[H] * op[W], a, work)
        out_wide = work + cin * plane
        run = (hout - 1) * wide + wout
        for o in range(cout):
            first = (o // per_out) * per_in
            fill(a, out_wide, run)
            for c in range(per_in):
                for i in range(kh):
                    for j in range(kw):
                        w = p[U(w0 + o * ostride + (c * kh + i) * kw + j)]
                        axpy(a, out_wide, w, src, x0 + (first + c) * plane + i * wide + j, run)
            y0 = op[OUT_OFF] + (n * cout + o) * plane_out
            for y in range(hout):
                copy(a, y0 + y * wout, a, out_wide + y * wide, wout)
            if b0 >= 0:
                bias = p[U(b0 + o)]
                for k in range(plane_out):
                    a[U(y0 + k)] += bias


@njit(cache=True, nogil=True, error_model="numpy")
def _param_grads_wide(op, a, ga, gp, nb, work):
    cin, cout, hout, wout = op[C], op[O], op[OH], op[OW]
    kh, kw = op[KH], op[KW]
    per_in, per_out = cin // op[GROUPS], cout // op[GROUPS]
    w0 = op[W_OFF]
    fill(gp, w0, cout * per_in * kh * kw)
    for n in range(nb):
        src, x0, wide, plane = _padded(op, a, op[IN_OFF] + n * cin * op[H] * op[W], a, work)
        delta = work + cin * plane
        run = (hout - 1) * wide + wout
        for o in range(cout):
            _widen(op, ga, op[OUT_OFF] + (n * cout + o) * hout * wout, a, delta, wide)
            first = (o // per_out) * per_in
            for c in range(per_in):
                for i in range(kh):
                    for j in range(kw):
                        tap = w0 + ((o * per_in + c) * kh + i) * kw + j
                        gp[U(tap)] += dot(a, delta, src, x0 + (first + c) * plane + i * wide + j,
                                          run)


@njit(cache=True, nogil=True, error_model="numpy")
def _input_grad_wide(op, weights, w0, wstride, a, ga, nb, work):
    cin, hin, win, cout, hout, wout = op[C], op[H], op[W], op[O], op[OH], op[OW]
    kh, kw, ph, pw = op[KH], op[KW], op[PH], op[PW]
    per_in, per_out = cin // op[GROUPS], cout // op[GROUPS]
    wide, tall = win + 2 * pw, hin + 2 * ph
    plane = tall * wide
    grad, delta = work, work + cin * plane
    run = (hout - 1) * wide + wout
    for n in range(nb):
        fill(a, grad, cin * plane)
        for o in range(cout):
            _widen(op, ga, op[OUT_OFF] + (n * cout + o) * hout * wout, a, delta, wide)
            first = (o // per_out) * per_in
            for c in range(per_in):
                for i in range(kh):
                    for j in range(kw):
                        w = weights[U(w0 + o * wstride + (c * kh + i) * kw + j)]
                        axpy(a, grad + (first + c) * plane + i * wide + j, w, a, delta, run)
        dx0 = op[IN_OFF] + n * cin * hin * win
        for c in range(cin):
            for y in range(hin):
                row = grad + (c * tall + y + ph) * wide + pw
                copy(ga, dx0 + (c * hin + y) * win, a, row, win)


@njit(cache=True, nogil=True, error_model="numpy")
def _backward_wide(op, weights, w0, wstride, a, ga, gp, nb, work, need_dx):
    """:func:`_param_grads_wide` and (if ``need_dx``) :func:`_input_grad_wide` in one
    pass: each widened delta plane serves both (the same sums in the same order)."""
    cin, hin, win, cout, hout, wout = op[C], op[H], op[W], op[O], op[OH], op[OW]
    kh, kw, ph, pw = op[KH], op[KW], op[PH], op[PW]
    per_in, per_out = cin // op[GROUPS], cout // op[GROUPS]
    wp = op[W_OFF]
    wide, tall = win + 2 * pw, hin + 2 * ph
    run = (hout - 1) * wide + wout
    fill(gp, wp, cout * per_in * kh * kw)
    for n in range(nb):
        src, x0, _, plane = _padded(op, a, op[IN_OFF] + n * cin * hin * win, a, work)
        delta = work + cin * tall * wide
        grad = delta + hout * wide
        if need_dx:
            fill(a, grad, cin * tall * wide)
        for o in range(cout):
            _widen(op, ga, op[OUT_OFF] + (n * cout + o) * hout * wout, a, delta, wide)
            first = (o // per_out) * per_in
            for c in range(per_in):
                for i in range(kh):
                    for j in range(kw):
                        tap = (c * kh + i) * kw + j
                        shift = (first + c) * plane + i * wide + j
                        gp[U(wp + o * per_in * kh * kw + tap)] += dot(a, delta, src, x0 + shift,
                                                                      run)
                        if need_dx:
                            axpy(a, grad + (first + c) * tall * wide + i * wide + j,
                                 weights[U(w0 + o * wstride + tap)], a, delta, run)
        if need_dx:
            dx0 = op[IN_OFF] + n * cin * hin * win
            for c in range(cin):
                for y in range(hin):
                    row = grad + (c * tall + y + ph) * wide + pw
                    copy(ga, dx0 + (c * hin + y) * win, a, row, win)


# -- the op ---------------------------------------------------------------------------


@njit(cache=True, nogil=True, error_model="numpy")
def conv_forward(op, p, a, nb, work):
    """out[n, o, y, x] = sum_{c, i, j} w[o, c, i, j] xpad[n, c, y*sh + i, x*sw + j] + b[o].

    Tap by tap, each tap adding ``w * (shifted input)`` to whole output runs: long
    independent adds the compiler vectorizes (a dot product per output would be one
    serial chain of dependent adds). Every output sums its taps in (c, i, j) order."""
    if op[SH] == 1 and op[SW] == 1:
        _forward_wide(op, p, a, nb, work)
    else:
        _forward_strided(op, p, a, nb)


@njit(cache=True, nogil=True, error_model="numpy")
def conv_backward(op, weights, w0, wstride, a, ga, gp, nb, work, need_dx):
    """dw[o, c, i, j] = sum_{n, y, x} delta[n, o, y, x] xpad[n, c, y*sh + i, x*sw + j]
    (against rot180(delta) when the rule says so: the article's broken net, done by
    rotating delta in place and back); db[o] = sum of delta; and if ``need_dx``, dx:
    every window entry's share w[o, c, i, j] * delta[n, o, y, x] added back to the pixel
    it read, through ``weights[w0:]`` (W itself, or a rule's feedback weights), rotated
    180 degrees per map when the rule says so (the article's code)."""
    cout, plane_out, b0 = op[O], op[OH] * op[OW], op[B_OFF]
    if b0 >= 0:
        for o in range(cout):
            total = 0.0
            for n in range(nb):
                d0 = op[OUT_OFF] + (n * cout + o) * plane_out
                for k in range(plane_out):
                    total += ga[U(d0 + k)]
            gp[U(b0 + o)] = total
    stride_one = op[SH] == 1 and op[SW] == 1
    if stride_one and op[ROT_W] == 0:
        _backward_wide(op, weights, w0, wstride, a, ga, gp, nb, work, need_dx)
    else:
        if op[ROT_W] != 0:
            _rotate_maps(ga, op[OUT_OFF], nb * cout, plane_out)
        if stride_one:
            _param_grads_wide(op, a, ga, gp, nb, work)
        else:
            _param_grads_strided(op, a, ga, gp, nb)
        if op[ROT_W] != 0:
            _rotate_maps(ga, op[OUT_OFF], nb * cout, plane_out)
        if need_dx and stride_one:
            _input_grad_wide(op, weights, w0, wstride, a, ga, nb, work)
        elif need_dx:
            _input_grad_strided(op, weights, w0, wstride, ga, nb)
    if need_dx and op[ROT_DX] != 0:
        _rotate_maps(ga, op[IN_OFF], nb * op[C], op[H] * op[W])
