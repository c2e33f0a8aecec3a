"""Compiled conv2d: forward, weight/bias gradients, input gradient (explicit loops).

Arrays are one replica's: ``p`` its flat parameters, ``a``/``ga`` its activation and
gradient arenas (NCHW batches at the offsets of the plan's ``ops`` row), ``gp`` its
parameter gradient. Each sum runs in one fixed order, so results never depend on
threads or on how many replicas share a call. Padding taps are skipped (the reference
multiplies them by zero): the same sums, in another order.
"""

from __future__ import annotations

from numba import njit

from .plan import (
    B_OFF,
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
    C,
    H,
    O,
    W,
)


@njit(cache=True, nogil=True)
def conv_forward(op, p, a, nb):
    """out[n, o, y, x] = sum_{c, i, j} w[o, c, i, j] xpad[n, c, y*sh + i, x*sw + j] + b[o]."""
    cin, hin, win = op[C], op[H], op[W]
    cout, hout, wout = op[O], op[OH], op[OW]
    kh, kw, sh, sw, ph, pw = op[KH], op[KW], op[SH], op[SW], op[PH], op[PW]
    per_in, per_out = cin // op[GROUPS], cout // op[GROUPS]
    w0, b0 = op[W_OFF], op[B_OFF]
    for n in range(nb):
        x0 = op[IN_OFF] + n * cin * hin * win
        y_out = op[OUT_OFF] + n * cout * hout * wout
        for o in range(cout):
            first = (o // per_out) * per_in
            wo = w0 + o * per_in * kh * kw
            for oy in range(hout):
                top = oy * sh - ph
                i_lo, i_hi = max(0, -top), min(kh, hin - top)
                for ox in range(wout):
                    left = ox * sw - pw
                    j_lo, j_hi = max(0, -left), min(kw, win - left)
                    total = 0.0
                    for c in range(per_in):
                        wc = wo + c * kh * kw
                        xc = x0 + (first + c) * hin * win + top * win + left
                        for i in range(i_lo, i_hi):
                            for j in range(j_lo, j_hi):
                                total += p[wc + i * kw + j] * a[xc + i * win + j]
                    if b0 >= 0:
                        total += p[b0 + o]
                    a[y_out + (o * hout + oy) * wout + ox] = total


@njit(cache=True, nogil=True)
def conv_param_grads(op, a, ga, gp, nb):
    """dw = input windows against delta (against rot180(delta) when the rule says so,
    the article's broken net); db = delta summed."""
    cin, hin, win = op[C], op[H], op[W]
    cout, hout, wout = op[O], op[OH], op[OW]
    kh, kw, sh, sw, ph, pw = op[KH], op[KW], op[SH], op[SW], op[PH], op[PW]
    per_in, per_out = cin // op[GROUPS], cout // op[GROUPS]
    w0, b0, rotate = op[W_OFF], op[B_OFF], op[ROT_W] != 0
    gp[w0 : w0 + cout * per_in * kh * kw] = 0.0
    if b0 >= 0:
        gp[b0 : b0 + cout] = 0.0
    for n in range(nb):
        x0 = op[IN_OFF] + n * cin * hin * win
        d0 = op[OUT_OFF] + n * cout * hout * wout
        for o in range(cout):
            first = (o // per_out) * per_in
            wo = w0 + o * per_in * kh * kw
            plane = d0 + o * hout * wout
            for oy in range(hout):
                top = oy * sh - ph
                i_lo, i_hi = max(0, -top), min(kh, hin - top)
                for ox in range(wout):
                    left = ox * sw - pw
                    j_lo, j_hi = max(0, -left), min(kw, win - left)
                    if rotate:
                        d = ga[plane + (hout - 1 - oy) * wout + (wout - 1 - ox)]
                    else:
                        d = ga[plane + oy * wout + ox]
                    if b0 >= 0:
                        gp[b0 + o] += ga[plane + oy * wout + ox]
                    for c in range(per_in):
                        wc = wo + c * kh * kw
                        xc = x0 + (first + c) * hin * win + top * win + left
                        for i in range(i_lo, i_hi):
                            for j in range(j_lo, j_hi):
                                gp[wc + i * kw + j] += d * a[xc + i * win + j]


@njit(cache=True, nogil=True)
def conv_input_grad(op, weights, w0, ga, nb):
    """dx: every window entry's share w[o, c, i, j] * delta[n, o, y, x] added back to the
    pixel it read, through ``weights[w0:]`` (W itself, or a rule's feedback weights);
    rotated 180 degrees per map when the rule says so (the article's code)."""
    cin, hin, win = op[C], op[H], op[W]
    cout, hout, wout = op[O], op[OH], op[OW]
    kh, kw, sh, sw, ph, pw = op[KH], op[KW], op[SH], op[SW], op[PH], op[PW]
    per_in, per_out = cin // op[GROUPS], cout // op[GROUPS]
    dx0 = op[IN_OFF]
    ga[dx0 : dx0 + nb * cin * hin * win] = 0.0
    for n in range(nb):
        x0 = dx0 + n * cin * hin * win
        d0 = op[OUT_OFF] + n * cout * hout * wout
        for o in range(cout):
            first = (o // per_out) * per_in
            wo = w0 + o * per_in * kh * kw
            for oy in range(hout):
                top = oy * sh - ph
                i_lo, i_hi = max(0, -top), min(kh, hin - top)
                for ox in range(wout):
                    left = ox * sw - pw
                    j_lo, j_hi = max(0, -left), min(kw, win - left)
                    d = ga[d0 + (o * hout + oy) * wout + ox]
                    for c in range(per_in):
                        wc = wo + c * kh * kw
                        xc = x0 + (first + c) * hin * win + top * win + left
                        for i in range(i_lo, i_hi):
                            for j in range(j_lo, j_hi):
                                ga[xc + i * win + j] += weights[wc + i * kw + j] * d
    if op[ROT_DX] != 0:
        plane = hin * win
        for m in range(nb * cin):
            base = dx0 + m * plane
            for k in range(plane // 2):
                ga[base + k], ga[base + plane - 1 - k] = ga[base + plane - 1 - k], ga[base + k]
