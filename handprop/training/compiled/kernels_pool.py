"""Compiled max-pool: forward (first maximum wins), and the gradient routings.

The forward pass stores each window's winning tap: the first maximum in row-major
window order, or the first NaN (what ``numpy.argmax`` picks). Backward, per channel:

* ROUTE: the window's gradient goes to its winner; with ``ties`` (the article's code)
  every entry equal to the window's maximum gets ``1 * G`` and the others ``0 * G``,
  as the reference's mask product does;
* GREEN: T(U), U the routed gradient of the whole map (the article's broken net);
* RED: T(mask) * up(G), mask the routing summed per pixel, up(G) every window's
  gradient spread over its window;

T is rot180 or transpose (square maps). See :mod:`handprop.rules.seed`.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .adapter import GREEN, RED, ROT180, ROUTE
from .kernels_dense import fill
from .plan import (
    CODE_OFF,
    IN_OFF,
    INT_OFF,
    KH,
    KW,
    OH,
    OUT_OFF,
    OW,
    SH,
    SW,
    TIES,
    TRANSFORM,
    C,
    H,
    W,
)

U = np.uint64  # unsigned indices: no negative-index branch (see kernels_conv)


@njit(cache=True, nogil=True, error_model="numpy")
def _window_max(a, start, kh, kw, win):
    """(maximum, its position from ``start``): the first maximum in row-major order, or
    the first NaN (what ``numpy.argmax`` picks)."""
    best, where = a[U(start)], 0
    if best != best:
        return best, where
    for i in range(kh):
        for j in range(kw):
            at = i * win + j
            value = a[U(start + at)]
            if value != value:
                return value, at
            if value > best:
                best, where = value, at
    return best, where


@njit(cache=True, nogil=True, error_model="numpy")
def pool_forward(op, a, wins, nb):
    """out = each window's first maximum (or first NaN); ``wins`` gets its position in
    the input plane (so the backward pass needs no division)."""
    channels, hin, win, hout, wout = op[C], op[H], op[W], op[OH], op[OW]
    kh, kw, sh, sw = op[KH], op[KW], op[SH], op[SW]
    for m in range(nb * channels):
        x0 = op[IN_OFF] + m * hin * win
        y0 = op[OUT_OFF] + m * hout * wout
        t0 = op[INT_OFF] + m * hout * wout
        for oy in range(hout):
            for ox in range(wout):
                corner = oy * sh * win + ox * sw
                best, where = _window_max(a, x0 + corner, kh, kw, win)
                a[U(y0 + oy * wout + ox)] = best
                wins[U(t0 + oy * wout + ox)] = corner + where


@njit(cache=True, nogil=True, error_model="numpy")
def _route(op, a, ga, wins, m, ties, out, o0):
    """Add plane m's routed gradient U into ``out[o0:]`` (a zeroed plane)."""
    hin, win, hout, wout = op[H], op[W], op[OH], op[OW]
    kh, kw, sh, sw = op[KH], op[KW], op[SH], op[SW]
    x0 = op[IN_OFF] + m * hin * win
    g0 = op[OUT_OFF] + m * hout * wout
    t0 = op[INT_OFF] + m * hout * wout
    for window in range(hout * wout):
        grad = ga[U(g0 + window)]
        winner = wins[U(t0 + window)]
        if not ties:
            out[U(o0 + winner)] += grad
            continue
        best = a[U(x0 + winner)]
        corner = (window // wout) * sh * win + (window % wout) * sw
        for i in range(kh):
            for j in range(kw):
                at = corner + i * win + j
                hit = 1.0 if a[U(x0 + at)] == best else 0.0
                out[U(o0 + at)] += hit * grad


@njit(cache=True, nogil=True, error_model="numpy")
def _mask_and_spread(op, a, ga, wins, m, ties, out, mask0, up0):
    """The routing mask (summed per pixel) at ``out[mask0:]`` and up(G) at ``out[up0:]``."""
    hin, win, hout, wout = op[H], op[W], op[OH], op[OW]
    kh, kw, sh, sw = op[KH], op[KW], op[SH], op[SW]
    x0 = op[IN_OFF] + m * hin * win
    g0 = op[OUT_OFF] + m * hout * wout
    t0 = op[INT_OFF] + m * hout * wout
    for window in range(hout * wout):
        corner = (window // wout) * sh * win + (window % wout) * sw
        winner = wins[U(t0 + window)]
        best = a[U(x0 + winner)]
        grad = ga[U(g0 + window)]
        for i in range(kh):
            for j in range(kw):
                at = corner + i * win + j
                if ties:
                    hit = 1.0 if a[U(x0 + at)] == best else 0.0
                else:
                    hit = 1.0 if at == winner else 0.0
                out[U(mask0 + at)] += hit
                out[U(up0 + at)] += grad


@njit(cache=True, nogil=True, error_model="numpy")
def _moved(k, hin, win, transform):
    """Where T reads pixel k of a map from (rot180 and transpose are involutions)."""
    if transform == ROT180:
        return hin * win - 1 - k
    return (k % win) * win + k // win


@njit(cache=True, nogil=True, error_model="numpy")
def pool_backward(op, codes, a, ga, wins, nb, scratch, s0):
    """The gradient at the pool's input, channel by channel (see the module notes);
    ``scratch[s0:]`` holds two planes."""
    channels, hin, win = op[C], op[H], op[W]
    plane = hin * win
    ties, transform = op[TIES] != 0, op[TRANSFORM]
    dx0 = op[IN_OFF]
    fill(ga, dx0, nb * channels * plane)
    for m in range(nb * channels):
        mode = codes[op[CODE_OFF] + m % channels]
        dx = dx0 + m * plane
        if mode == ROUTE:
            _route(op, a, ga, wins, m, ties, ga, dx)
            continue
        fill(scratch, s0, 2 * plane)
        if mode == GREEN:
            _route(op, a, ga, wins, m, ties, scratch, s0)
            for k in range(plane):
                ga[dx + k] = scratch[s0 + _moved(k, hin, win, transform)]
        elif mode == RED:
            _mask_and_spread(op, a, ga, wins, m, ties, scratch, s0, s0 + plane)
            for k in range(plane):
                ga[dx + k] = scratch[s0 + _moved(k, hin, win, transform)] * scratch[s0 + plane + k]
