"""The ops in the lane layout (see :mod:`.lanes`): conv2d (stride 1), max-pool, dense,
activations. Each function is its per-replica kernel's twin, slot for value: the same
loops, the same operations in the same order, eight replicas at a time. Arrays are one
block's; offsets are the plan's (per-replica values), counted in slots.
"""

from __future__ import annotations

from numba import njit

from .adapter import GREEN, RED, ROUTE
from .kernels_elementwise import activate, derivative
from .kernels_pool import _moved
from .lanes import (
    JIT,
    U,
    vaxpy,
    vcopy,
    vdot,
    vfill,
    vhit,
    vload,
    vmul,
    vmuladd,
    vstore,
    vsum,
    vzero,
)
from .plan import (
    ARCTAN,
    B_OFF,
    CODE_OFF,
    FW_OFF,
    GROUPS,
    IDENTITY,
    IN_OFF,
    INT_OFF,
    KH,
    KW,
    OH,
    OUT_OFF,
    OW,
    PH,
    PW,
    RELU,
    SH,
    SW,
    TANH,
    TIES,
    TRANSFORM,
    W_OFF,
    W_OSTRIDE,
    C,
    H,
    O,
    W,
)
from .special import atan, tanh

# -- conv2d, stride 1 (kernels_conv's "wide" runs) -------------------------------------


@njit(**JIT)
def _padded(op, x0, a, work):
    """The sample's input planes zero-padded at ``a[work:]`` (or the input itself):
    (offset, padded width, padded plane)."""
    cin, hin, win, ph, pw = op[C], op[H], op[W], op[PH], op[PW]
    wide, tall = win + 2 * pw, hin + 2 * ph
    if ph == 0 and pw == 0:
        return x0, win, hin * win
    vfill(a, work, cin * tall * wide)
    for c in range(cin):
        for y in range(hin):
            vcopy(a, work + (c * tall + y + ph) * wide + pw, a, x0 + (c * hin + y) * win, win)
    return work, wide, tall * wide


@njit(**JIT)
def conv_forward(op, p, a, nb, work):
    cin, cout, hout, wout, kh, kw = op[C], op[O], op[OH], op[OW], op[KH], op[KW]
    per_in, per_out = cin // op[GROUPS], cout // op[GROUPS]
    w0, b0, ostride = op[FW_OFF], op[B_OFF], op[W_OSTRIDE]
    plane_out = hout * wout
    for n in range(nb):
        x0, wide, plane = _padded(op, op[IN_OFF] + n * cin * op[H] * op[W], a, work)
        out_wide = work + cin * plane
        run = (hout - 1) * wide + wout
        for o in range(cout):
            first = (o // per_out) * per_in
            vfill(a, out_wide, run)
            for c in range(per_in):
                for i in range(kh):
                    _add_row_taps(a, out_wide, p, w0 + o * ostride + (c * kh + i) * kw, kw,
                                  x0 + (first + c) * plane + i * wide, run)
            y0 = op[OUT_OFF] + (n * cout + o) * plane_out
            for y in range(hout):
                vcopy(a, y0 + y * wout, a, out_wide + y * wide, wout)
            if b0 >= 0:
                bias = vload(p, b0 + o)
                for k in range(plane_out):
                    vstore(a, y0 + k, _add(vload(a, y0 + k), bias))


@njit(**JIT)
def _add_row_taps(a, o0, p, w0, kw, s0, run):
    """out[o0 + k] += w[j] * x[s0 + k + j] for the kernel row's taps j = 0 .. kw - 1, in
    that order (kernels_conv's axpy per tap, each slot loaded and stored once)."""
    if kw == 3:  # the common kernel: its three weights held in registers
        w_0, w_1, w_2 = vload(p, w0), vload(p, w0 + 1), vload(p, w0 + 2)
        for k in range(run):
            total = vmuladd(vload(a, o0 + k), w_0, vload(a, s0 + k))
            total = vmuladd(total, w_1, vload(a, s0 + k + 1))
            vstore(a, o0 + k, vmuladd(total, w_2, vload(a, s0 + k + 2)))
        return
    for k in range(run):
        total = vload(a, o0 + k)
        for j in range(kw):
            total = vmuladd(total, vload(p, w0 + j), vload(a, s0 + k + j))
        vstore(a, o0 + k, total)


@njit(**JIT)
def _add(u, v):
    return (u[0] + v[0], u[1] + v[1], u[2] + v[2], u[3] + v[3], u[4] + v[4], u[5] + v[5],
            u[6] + v[6], u[7] + v[7])


@njit(**JIT)
def conv_bias_grad(op, ga, gp, nb):
    cout, plane_out, b0 = op[O], op[OH] * op[OW], op[B_OFF]
    for o in range(cout):
        total = vzero()
        for n in range(nb):
            total = vsum(ga, op[OUT_OFF] + (n * cout + o) * plane_out, plane_out, total)
        vstore(gp, b0 + o, total)


@njit(**JIT)
def _widen(op, ga, d0, a, out0, wide):
    hout, wout = op[OH], op[OW]
    vfill(a, out0, hout * wide)
    for y in range(hout):
        vcopy(a, out0 + y * wide, ga, d0 + y * wout, wout)


@njit(**JIT)
def conv_backward(op, weights, w0, wstride, a, ga, gp, nb, work, grads, need_dx):
    """The weight gradient (``grads``) and the input gradient (``need_dx``) of
    kernels_conv._backward_wide, through ``weights[w0:]`` (``wstride`` per output)."""
    cin, hin, win, cout, hout, wout = op[C], op[H], op[W], op[O], op[OH], op[OW]
    kh, kw, ph, pw = op[KH], op[KW], op[PH], op[PW]
    per_in, per_out = cin // op[GROUPS], cout // op[GROUPS]
    wp, taps = op[W_OFF], per_in * kh * kw
    wide, tall = win + 2 * pw, hin + 2 * ph
    run = (hout - 1) * wide + wout
    if grads:
        vfill(gp, wp, cout * taps)
    for n in range(nb):
        x0, _, plane = _padded(op, op[IN_OFF] + n * cin * hin * win, a, work)
        delta = work + cin * tall * wide
        grad = delta + hout * wide
        if need_dx:
            vfill(a, grad, cin * tall * wide)
        for o in range(cout):
            _widen(op, ga, op[OUT_OFF] + (n * cout + o) * hout * wout, a, delta, wide)
            first = (o // per_out) * per_in
            for c in range(per_in):
                for i in range(kh):
                    row = (c * kh + i) * kw  # the kernel row's first tap
                    if grads:
                        _row_weight_grads(gp, wp + o * taps + row, kw, a, delta,
                                          x0 + (first + c) * plane + i * wide, run)
                    if need_dx:
                        _row_input_grads(a, grad + (first + c) * tall * wide + i * wide,
                                         weights, w0 + o * wstride + row, kw, delta, run)
        if need_dx:
            dx0 = op[IN_OFF] + n * cin * hin * win
            for c in range(cin):
                for y in range(hin):
                    vcopy(ga, dx0 + (c * hin + y) * win, a, grad + (c * tall + y + ph) * wide + pw,
                          win)


@njit(**JIT)
def _row_weight_grads(gp, g0, kw, a, delta, s0, run):
    """gp[g0 + j] += vdot(delta, x[s0 + j:]) for the row's taps j (three at once for
    kw = 3: the same four partial sums per tap, delta loaded once for all three)."""
    if kw != 3:
        for j in range(kw):
            vstore(gp, g0 + j, _add(vload(gp, g0 + j), vdot(a, delta, a, s0 + j, run)))
        return
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = c0 = c1 = c2 = c3 = vzero()
    k = 0
    while k + 4 <= run:
        d0, d1, d2, d3 = vload(a, delta + k), vload(a, delta + k + 1), vload(a, delta + k + 2), \
            vload(a, delta + k + 3)
        x0, x1, x2 = vload(a, s0 + k), vload(a, s0 + k + 1), vload(a, s0 + k + 2)
        x3, x4, x5 = vload(a, s0 + k + 3), vload(a, s0 + k + 4), vload(a, s0 + k + 5)
        a0, a1, a2, a3 = vmuladd(a0, d0, x0), vmuladd(a1, d1, x1), vmuladd(a2, d2, x2), \
            vmuladd(a3, d3, x3)
        b0, b1, b2, b3 = vmuladd(b0, d0, x1), vmuladd(b1, d1, x2), vmuladd(b2, d2, x3), \
            vmuladd(b3, d3, x4)
        c0, c1, c2, c3 = vmuladd(c0, d0, x2), vmuladd(c1, d1, x3), vmuladd(c2, d2, x4), \
            vmuladd(c3, d3, x5)
        k += 4
    while k < run:
        d = vload(a, delta + k)
        a0 = vmuladd(a0, d, vload(a, s0 + k))
        b0 = vmuladd(b0, d, vload(a, s0 + k + 1))
        c0 = vmuladd(c0, d, vload(a, s0 + k + 2))
        k += 1
    vstore(gp, g0, _add(vload(gp, g0), _add(_add(a0, a1), _add(a2, a3))))
    vstore(gp, g0 + 1, _add(vload(gp, g0 + 1), _add(_add(b0, b1), _add(b2, b3))))
    vstore(gp, g0 + 2, _add(vload(gp, g0 + 2), _add(_add(c0, c1), _add(c2, c3))))


@njit(**JIT)
def _row_input_grads(a, g0, weights, w0, kw, delta, run):
    """grad[g0 + j + k] += w[j] * delta[k] for the row's taps j in order (kernels_conv's
    axpy per tap; for kw = 3 each grad slot gathers its three terms, in the same order,
    loaded and stored once)."""
    if kw != 3 or run < 2:
        for j in range(kw):
            vaxpy(a, g0 + j, vload(weights, w0 + j), a, delta, run)
        return
    w_0, w_1, w_2 = vload(weights, w0), vload(weights, w0 + 1), vload(weights, w0 + 2)
    vstore(a, g0, vmuladd(vload(a, g0), w_0, vload(a, delta)))
    total = vmuladd(vload(a, g0 + 1), w_0, vload(a, delta + 1))
    vstore(a, g0 + 1, vmuladd(total, w_1, vload(a, delta)))
    for t in range(2, run):
        total = vmuladd(vload(a, g0 + t), w_0, vload(a, delta + t))
        total = vmuladd(total, w_1, vload(a, delta + t - 1))
        vstore(a, g0 + t, vmuladd(total, w_2, vload(a, delta + t - 2)))
    total = vmuladd(vload(a, g0 + run), w_1, vload(a, delta + run - 1))
    vstore(a, g0 + run, vmuladd(total, w_2, vload(a, delta + run - 2)))
    vstore(a, g0 + run + 1, vmuladd(vload(a, g0 + run + 1), w_2, vload(a, delta + run - 1)))


@njit(**JIT)
def rotate_maps(ga, start, maps, plane):
    """Rotate ``maps`` consecutive maps of ``plane`` slots by 180 degrees, in place."""
    for m in range(maps):
        base = start + m * plane
        for k in range(plane // 2):
            last = base + plane - 1 - k
            first, second = vload(ga, base + k), vload(ga, last)
            vstore(ga, base + k, second)
            vstore(ga, last, first)


# -- max-pool ----------------------------------------------------------------------------


@njit(**JIT)
def _window_max(a, start, kh, kw, win, lane):
    """kernels_pool._window_max for one lane."""
    best, where = a[U(start * 8 + lane)], 0
    if best != best:
        return best, where
    for i in range(kh):
        for j in range(kw):
            at = i * win + j
            value = a[U((start + at) * 8 + lane)]
            if value != value:
                return value, at
            if value > best:
                best, where = value, at
    return best, where


@njit(**JIT)
def _exact_pool_forward(op, a, wins, nb):
    """kernels_pool.pool_forward, lane by lane (NaN: the first one wins)."""
    channels, hin, win, hout, wout = op[C], op[H], op[W], op[OH], op[OW]
    kh, kw, sh, sw = op[KH], op[KW], op[SH], op[SW]
    for m in range(nb * channels):
        x0 = op[IN_OFF] + m * hin * win
        y0 = op[OUT_OFF] + m * hout * wout
        t0 = op[INT_OFF] + m * hout * wout
        for window in range(hout * wout):
            corner = (window // wout) * sh * win + (window % wout) * sw
            for lane in range(8):
                best, where = _window_max(a, x0 + corner, kh, kw, win, lane)
                a[U((y0 + window) * 8 + lane)] = best
                wins[U((t0 + window) * 8 + lane)] = corner + where


@njit(**JIT)
def _keep_larger(v, best, where, at):
    """Lane by lane, (v, at) where v > best, else (best, where)."""
    return ((v[0] if v[0] > best[0] else best[0], v[1] if v[1] > best[1] else best[1],
             v[2] if v[2] > best[2] else best[2], v[3] if v[3] > best[3] else best[3],
             v[4] if v[4] > best[4] else best[4], v[5] if v[5] > best[5] else best[5],
             v[6] if v[6] > best[6] else best[6], v[7] if v[7] > best[7] else best[7]),
            (at if v[0] > best[0] else where[0], at if v[1] > best[1] else where[1],
             at if v[2] > best[2] else where[2], at if v[3] > best[3] else where[3],
             at if v[4] > best[4] else where[4], at if v[5] > best[5] else where[5],
             at if v[6] > best[6] else where[6], at if v[7] > best[7] else where[7]))


@njit(**JIT)
def _winners(corner, where):
    return (corner + int(where[0]), corner + int(where[1]), corner + int(where[2]),
            corner + int(where[3]), corner + int(where[4]), corner + int(where[5]),
            corner + int(where[6]), corner + int(where[7]))


@njit(**JIT)
def _finite_pool_forward(op, a, wins, nb):
    """The max-pool forward on all eight lanes at once, exact while no value is NaN or
    infinite (then the first maximum is simply the first strictly larger value); False
    if one was (``flag`` sums v - v: NaN for those)."""
    channels, hin, win, hout, wout = op[C], op[H], op[W], op[OH], op[OW]
    kh, kw, sh, sw = op[KH], op[KW], op[SH], op[SW]
    flag = vzero()
    for m in range(nb * channels):
        x0 = op[IN_OFF] + m * hin * win
        y0 = op[OUT_OFF] + m * hout * wout
        t0 = op[INT_OFF] + m * hout * wout
        for window in range(hout * wout):
            corner = (window // wout) * sh * win + (window % wout) * sw
            best, where = vload(a, x0 + corner), vzero()
            for i in range(kh):
                for j in range(kw):
                    value = vload(a, x0 + corner + i * win + j)
                    flag = _add(flag, _sub(value, value))
                    best, where = _keep_larger(value, best, where, float(i * win + j))
            vstore(a, y0 + window, best)
            vstore(wins, t0 + window, _winners(corner, where))
    total = flag[0] + flag[1] + flag[2] + flag[3] + flag[4] + flag[5] + flag[6] + flag[7]
    return total == 0.0


@njit(**JIT)
def pool_forward(op, a, wins, nb):
    """kernels_pool.pool_forward: each lane's first maximum (or first NaN) and where."""
    if not _finite_pool_forward(op, a, wins, nb):
        _exact_pool_forward(op, a, wins, nb)


@njit(**JIT)
def _sub(u, v):
    return (u[0] - v[0], u[1] - v[1], u[2] - v[2], u[3] - v[3], u[4] - v[4], u[5] - v[5],
            u[6] - v[6], u[7] - v[7])


@njit(**JIT)
def _winners_best(a, wins, x0, t):
    """Each lane's window maximum (the value at its winning tap)."""
    i = U(t * 8)
    return (a[U((x0 + wins[i]) * 8)], a[U((x0 + wins[i + U(1)]) * 8 + 1)],
            a[U((x0 + wins[i + U(2)]) * 8 + 2)], a[U((x0 + wins[i + U(3)]) * 8 + 3)],
            a[U((x0 + wins[i + U(4)]) * 8 + 4)], a[U((x0 + wins[i + U(5)]) * 8 + 5)],
            a[U((x0 + wins[i + U(6)]) * 8 + 6)], a[U((x0 + wins[i + U(7)]) * 8 + 7)])


@njit(**JIT)
def _route(op, a, ga, wins, m, ties, out, o0):
    """kernels_pool._route: plane m's routed gradient added into ``out[o0:]``."""
    hin, win, hout, wout = op[H], op[W], op[OH], op[OW]
    kh, kw, sh, sw = op[KH], op[KW], op[SH], op[SW]
    x0 = op[IN_OFF] + m * hin * win
    g0 = op[OUT_OFF] + m * hout * wout
    t0 = op[INT_OFF] + m * hout * wout
    for window in range(hout * wout):
        if not ties:
            for lane in range(8):
                winner = wins[U((t0 + window) * 8 + lane)]
                out[U((o0 + winner) * 8 + lane)] += ga[U((g0 + window) * 8 + lane)]
            continue
        grad = vload(ga, g0 + window)
        best = _winners_best(a, wins, x0, t0 + window)
        corner = (window // wout) * sh * win + (window % wout) * sw
        for i in range(kh):
            for j in range(kw):
                at = corner + i * win + j
                hit = vhit(vload(a, x0 + at), best)
                vstore(out, o0 + at, _add(vload(out, o0 + at), vmul(hit, grad)))


@njit(**JIT)
def _single_hits(wins, t, at):
    i = U(t * 8)
    return (1.0 if wins[i] == at else 0.0, 1.0 if wins[i + U(1)] == at else 0.0,
            1.0 if wins[i + U(2)] == at else 0.0, 1.0 if wins[i + U(3)] == at else 0.0,
            1.0 if wins[i + U(4)] == at else 0.0, 1.0 if wins[i + U(5)] == at else 0.0,
            1.0 if wins[i + U(6)] == at else 0.0, 1.0 if wins[i + U(7)] == at else 0.0)


@njit(**JIT)
def _mask_and_spread(op, a, ga, wins, m, ties, out, mask0, up0):
    """kernels_pool._mask_and_spread: routing mask at ``out[mask0:]``, up(G) at ``up0``."""
    hin, win, hout, wout = op[H], op[W], op[OH], op[OW]
    kh, kw, sh, sw = op[KH], op[KW], op[SH], op[SW]
    x0 = op[IN_OFF] + m * hin * win
    g0 = op[OUT_OFF] + m * hout * wout
    t0 = op[INT_OFF] + m * hout * wout
    for window in range(hout * wout):
        corner = (window // wout) * sh * win + (window % wout) * sw
        best = _winners_best(a, wins, x0, t0 + window)
        grad = vload(ga, g0 + window)
        for i in range(kh):
            for j in range(kw):
                at = corner + i * win + j
                if ties:
                    hit = vhit(vload(a, x0 + at), best)
                else:
                    hit = _single_hits(wins, t0 + window, at)
                vstore(out, mask0 + at, _add(vload(out, mask0 + at), hit))
                vstore(out, up0 + at, _add(vload(out, up0 + at), grad))


@njit(**JIT)
def pool_backward(op, codes, a, ga, wins, nb, s0):
    """kernels_pool.pool_backward; ``a[s0:]`` holds two planes of scratch."""
    channels, hin, win = op[C], op[H], op[W]
    plane = hin * win
    ties, transform = op[TIES] != 0, op[TRANSFORM]
    dx0 = op[IN_OFF]
    vfill(ga, dx0, nb * channels * plane)
    for m in range(nb * channels):
        mode = codes[op[CODE_OFF] + m % channels]
        dx = dx0 + m * plane
        if mode == ROUTE:
            _route(op, a, ga, wins, m, ties, ga, dx)
            continue
        vfill(a, s0, 2 * plane)
        if mode == GREEN:
            _route(op, a, ga, wins, m, ties, a, s0)
            for k in range(plane):
                vstore(ga, dx + k, vload(a, s0 + _moved(k, hin, win, transform)))
        elif mode == RED:
            _mask_and_spread(op, a, ga, wins, m, ties, a, s0, s0 + plane)
            for k in range(plane):
                moved = vload(a, s0 + _moved(k, hin, win, transform))
                vstore(ga, dx + k, vmul(moved, vload(a, s0 + plane + k)))


# -- dense -------------------------------------------------------------------------------


@njit(**JIT)
def dense_forward(op, p, a, nb):
    fan_in, fan_out, w0, b0 = op[C], op[O], op[W_OFF], op[B_OFF]
    for n in range(nb):
        x0 = op[IN_OFF] + n * fan_in
        y0 = op[OUT_OFF] + n * fan_out
        for o in range(fan_out):
            total = vdot(a, x0, p, w0 + o * fan_in, fan_in)
            if b0 >= 0:
                total = _add(total, vload(p, b0 + o))
            vstore(a, y0 + o, total)


@njit(**JIT)
def dense_backward(op, weights, w0, a, ga, gp, nb, need_dx):
    """kernels_dense.dense_backward's sums: the first sample's terms added to 0 (as its
    fill then add), the others added in turn; each dx slot summed over the outputs in
    registers, in order, from 0."""
    fan_in, fan_out, wp, b0 = op[C], op[O], op[W_OFF], op[B_OFF]
    for n in range(nb):
        x0 = op[IN_OFF] + n * fan_in
        d0 = op[OUT_OFF] + n * fan_out
        for o in range(fan_out):
            d = vload(ga, d0 + o)
            if b0 >= 0:
                vstore(gp, b0 + o, _add(vzero() if n == 0 else vload(gp, b0 + o), d))
            row = wp + o * fan_in
            if n == 0:
                zero = vzero()
                for k in range(fan_in):
                    vstore(gp, row + k, vmuladd(zero, d, vload(a, x0 + k)))
            else:
                vaxpy(gp, row, d, a, x0, fan_in)
        if need_dx:
            for k in range(fan_in):
                total = vzero()
                for o in range(fan_out):
                    total = vmuladd(total, vload(ga, d0 + o), vload(weights, w0 + o * fan_in + k))
                vstore(ga, x0 + k, total)


# -- activations -------------------------------------------------------------------------


@njit(**JIT)
def _relu(v):
    return (v[0] if v[0] > 0 or v[0] != v[0] else 0.0, v[1] if v[1] > 0 or v[1] != v[1] else 0.0,
            v[2] if v[2] > 0 or v[2] != v[2] else 0.0, v[3] if v[3] > 0 or v[3] != v[3] else 0.0,
            v[4] if v[4] > 0 or v[4] != v[4] else 0.0, v[5] if v[5] > 0 or v[5] != v[5] else 0.0,
            v[6] if v[6] > 0 or v[6] != v[6] else 0.0, v[7] if v[7] > 0 or v[7] != v[7] else 0.0)


@njit(**JIT)
def _positive(v):
    return (1.0 if v[0] > 0 else 0.0, 1.0 if v[1] > 0 else 0.0, 1.0 if v[2] > 0 else 0.0,
            1.0 if v[3] > 0 else 0.0, 1.0 if v[4] > 0 else 0.0, 1.0 if v[5] > 0 else 0.0,
            1.0 if v[6] > 0 else 0.0, 1.0 if v[7] > 0 else 0.0)


@njit(**JIT)
def _atan(v):
    return (atan(v[0]), atan(v[1]), atan(v[2]), atan(v[3]), atan(v[4]), atan(v[5]), atan(v[6]),
            atan(v[7]))


@njit(**JIT)
def _tanh(v):
    return (tanh(v[0]), tanh(v[1]), tanh(v[2]), tanh(v[3]), tanh(v[4]), tanh(v[5]), tanh(v[6]),
            tanh(v[7]))


@njit(**JIT)
def _arctan_slope(z):
    return (1 / (1 + z[0] * z[0]), 1 / (1 + z[1] * z[1]), 1 / (1 + z[2] * z[2]),
            1 / (1 + z[3] * z[3]), 1 / (1 + z[4] * z[4]), 1 / (1 + z[5] * z[5]),
            1 / (1 + z[6] * z[6]), 1 / (1 + z[7] * z[7]))


@njit(**JIT)
def _tanh_slope(y):
    return (1 - y[0] * y[0], 1 - y[1] * y[1], 1 - y[2] * y[2], 1 - y[3] * y[3],
            1 - y[4] * y[4], 1 - y[5] * y[5], 1 - y[6] * y[6], 1 - y[7] * y[7])


@njit(**JIT)
def act_forward(op, codes, slopes, a, nb):
    channels, per_channel = op[C], op[H]
    for m in range(nb * channels):
        k = op[CODE_OFF] + m % channels
        code, slope = codes[k], slopes[k]
        z0, y0 = op[IN_OFF] + m * per_channel, op[OUT_OFF] + m * per_channel
        if code == RELU:
            for s in range(per_channel):
                vstore(a, y0 + s, _relu(vload(a, z0 + s)))
        elif code == IDENTITY:
            vcopy(a, y0, a, z0, per_channel)
        elif code == ARCTAN:
            for s in range(per_channel):
                vstore(a, y0 + s, _atan(vload(a, z0 + s)))
        elif code == TANH:
            for s in range(per_channel):
                vstore(a, y0 + s, _tanh(vload(a, z0 + s)))
        else:
            for s in range(per_channel * 8):
                a[U(y0 * 8 + s)] = activate(code, slope, a[U(z0 * 8 + s)])


@njit(**JIT)
def act_backward(op, codes, slopes, a, ga, nb):
    channels, per_channel = op[C], op[H]
    for m in range(nb * channels):
        k = op[CODE_OFF] + m % channels
        code, slope = codes[k], slopes[k]
        z0, y0 = op[IN_OFF] + m * per_channel, op[OUT_OFF] + m * per_channel
        if code == RELU:
            for s in range(per_channel):
                vstore(ga, z0 + s, vmul(vload(ga, y0 + s), _positive(vload(a, z0 + s))))
        elif code == ARCTAN:  # dy * (1 / (1 + z*z))
            for s in range(per_channel):
                vstore(ga, z0 + s, vmul(vload(ga, y0 + s), _arctan_slope(vload(a, z0 + s))))
        elif code == TANH:  # dy * (1 - y*y)
            for s in range(per_channel):
                vstore(ga, z0 + s, vmul(vload(ga, y0 + s), _tanh_slope(vload(a, y0 + s))))
        else:
            for s in range(per_channel * 8):
                z, y = U(z0 * 8 + s), U(y0 * 8 + s)
                ga[z] = ga[y] * derivative(code, slope, a[z], a[y])
