"""Compiled max-pool: forward (first maximum wins), and the gradient routings.

The forward pass stores each window's winning tap: the first maximum in row-major
window order, or the first NaN (what ``numpy.argmax`` picks). Backward, per channel
(its *line*, from the rule's :class:`~handprop.rules.backward.PoolRouting`):

* ROUTE: the window's gradient goes to its winner; with ``ties`` (the article's code)
  every entry equal to the window's maximum gets ``1 * G`` and the others ``0 * G``,
  as the reference's mask product does;
* GREEN: T(U), U the routed gradient of the whole map (the article's broken net);
* RED: T(mask) * up(G), mask the routing summed per pixel, up(G) every window's
  gradient spread over its window;

T is rot180 or transpose (square maps). Written once against the slot API (:mod:`.slots`).
"""

from __future__ import annotations

from numba import njit

from ...core.ops import MaxPool2d
from .capabilities import OpSpec, every_feature, register_op
from .plan import GREEN, RED, ROT180, ROUTE, line_codes, transform_code
from .slots import (
    KERNEL,
    add,
    by_width,
    fill,
    gather,
    get,
    hit,
    hits_at,
    load,
    mul,
    put,
    store,
    sub,
    width,
    zero,
)

POOL = 1


def _describe_pool(builder, row, layer, index) -> None:
    builder.shapes(row, index)
    builder.window(row, layer.kernel_size, layer.stride)
    row["ints_offset"] = builder.add_ints(int(row["out_size"]))  # each window's winning tap
    routing = builder.routing(index, int(row["in_c"]))
    row["ties"], row["transform"] = routing.ties, transform_code(routing)
    row["codes_offset"] = builder.add_codes(line_codes(routing))
    builder.need_work(2 * int(row["in_h"] * row["in_w"]))  # two planes for green and red


register_op(OpSpec(MaxPool2d, POOL, _describe_pool, every_feature,
                   "any window and stride; the rule's lines per channel (exact, green, red), "
                   "first winner or every tie, T = rot180 or transpose"))


@njit(**KERNEL)
def _plane(op, m):
    """Where plane m's input, output (or output gradient) and winners start."""
    out = m * op.out_h * op.out_w
    return op.in_offset + m * op.in_h * op.in_w, op.out_offset + out, op.ints_offset + out


@njit(**KERNEL)
def _window_max(a, start, kh, kw, win, lane):
    """(maximum, its position from ``start``) in one lane: the first maximum in
    row-major order, or the first NaN (what ``numpy.argmax`` picks)."""
    best, where = get(a, start, lane), 0
    if best != best:
        return best, where
    for i in range(kh):
        for j in range(kw):
            at = i * win + j
            value = get(a, start + at, lane)
            if value != value:
                return value, at
            if value > best:
                best, where = value, at
    return best, where


@njit(**KERNEL)
def _exact_pool_forward(op, a, wins, nb):
    """Each lane's first maximum (or first NaN) of each window, and where it is."""
    channels, win, hout, wout = op.in_c, op.in_w, op.out_h, op.out_w
    kh, kw, sh, sw = op.kernel_h, op.kernel_w, op.stride_h, op.stride_w
    for m in range(nb * channels):
        x0, y0, t0 = _plane(op, m)
        for window in range(hout * wout):
            corner = (window // wout) * sh * win + (window % wout) * sw
            for lane in range(width(a)):
                best, where = _window_max(a, x0 + corner, kh, kw, win, lane)
                put(a, y0 + window, lane, best)
                put(wins, t0 + window, lane, corner + where)


# -- hand-specialised: at width 8 the windows of all eight lanes at once, exact while no
# value is NaN or infinite (then the first maximum is simply the first strictly larger
# value); the exact per-lane pass above redoes the layer if one was.
@njit(**KERNEL)
def _keep_larger(v, best, where, at):  # hand-specialised (width 8)
    """Lane by lane, (v, at) where v > best, else (best, where)."""
    return ((v[0] if v[0] > best[0] else best[0], v[1] if v[1] > best[1] else best[1],
             v[2] if v[2] > best[2] else best[2], v[3] if v[3] > best[3] else best[3],
             v[4] if v[4] > best[4] else best[4], v[5] if v[5] > best[5] else best[5],
             v[6] if v[6] > best[6] else best[6], v[7] if v[7] > best[7] else best[7]),
            (at if v[0] > best[0] else where[0], at if v[1] > best[1] else where[1],
             at if v[2] > best[2] else where[2], at if v[3] > best[3] else where[3],
             at if v[4] > best[4] else where[4], at if v[5] > best[5] else where[5],
             at if v[6] > best[6] else where[6], at if v[7] > best[7] else where[7]))


@njit(**KERNEL)
def _winners(corner, where):  # hand-specialised (width 8)
    return (corner + int(where[0]), corner + int(where[1]), corner + int(where[2]),
            corner + int(where[3]), corner + int(where[4]), corner + int(where[5]),
            corner + int(where[6]), corner + int(where[7]))


@njit(**KERNEL)
def _finite_pool_forward_w8(op, a, wins, nb):  # hand-specialised: eight lanes at once
    channels, win, hout, wout = op.in_c, op.in_w, op.out_h, op.out_w
    kh, kw, sh, sw = op.kernel_h, op.kernel_w, op.stride_h, op.stride_w
    flag = zero(a)  # sums v - v: NaN once a value is NaN or infinite
    for m in range(nb * channels):
        x0, y0, t0 = _plane(op, m)
        for window in range(hout * wout):
            corner = (window // wout) * sh * win + (window % wout) * sw
            best, where = load(a, x0 + corner), zero(a)
            for i in range(kh):
                for j in range(kw):
                    value = load(a, x0 + corner + i * win + j)
                    flag = add(flag, sub(value, value))
                    best, where = _keep_larger(value, best, where, float(i * win + j))
            store(a, y0 + window, best)
            store(wins, t0 + window, _winners(corner, where))
    found = flag[0] + flag[1] + flag[2] + flag[3] + flag[4] + flag[5] + flag[6] + flag[7]
    return found == 0.0


@njit(**KERNEL)
def _no_fast_path(op, a, wins, nb):
    return False


finite_pool_forward = by_width("finite_pool_forward", _no_fast_path, _finite_pool_forward_w8)


@njit(**KERNEL)
def pool_forward(op, a, wins, nb):
    """out = each window's first maximum (or first NaN); ``wins`` gets its position in
    the input plane (so the backward pass needs no division)."""
    if not finite_pool_forward(op, a, wins, nb):
        _exact_pool_forward(op, a, wins, nb)


@njit(**KERNEL)
def _route(op, a, ga, wins, m, ties, out, o0):
    """Add plane m's routed gradient U into ``out[o0:]`` (a zeroed plane)."""
    win, hout, wout = op.in_w, op.out_h, op.out_w
    kh, kw, sh, sw = op.kernel_h, op.kernel_w, op.stride_h, op.stride_w
    x0, g0, t0 = _plane(op, m)
    for window in range(hout * wout):
        if not ties:
            for lane in range(width(ga)):
                winner = get(wins, t0 + window, lane)
                put(out, o0 + winner, lane, get(out, o0 + winner, lane)
                    + get(ga, g0 + window, lane))
            continue
        grad = load(ga, g0 + window)
        best = gather(a, x0, wins, t0 + window)
        corner = (window // wout) * sh * win + (window % wout) * sw
        for i in range(kh):
            for j in range(kw):
                at = corner + i * win + j
                store(out, o0 + at, add(load(out, o0 + at), mul(hit(load(a, x0 + at), best),
                                                                 grad)))


@njit(**KERNEL)
def _mask_and_spread(op, a, ga, wins, m, ties, out, mask0, up0):
    """The routing mask (summed per pixel) at ``out[mask0:]`` and up(G) at ``out[up0:]``."""
    win, hout, wout = op.in_w, op.out_h, op.out_w
    kh, kw, sh, sw = op.kernel_h, op.kernel_w, op.stride_h, op.stride_w
    x0, g0, t0 = _plane(op, m)
    for window in range(hout * wout):
        corner = (window // wout) * sh * win + (window % wout) * sw
        best = gather(a, x0, wins, t0 + window)
        grad = load(ga, g0 + window)
        for i in range(kh):
            for j in range(kw):
                at = corner + i * win + j
                if ties:
                    marked = hit(load(a, x0 + at), best)
                else:
                    marked = hits_at(wins, t0 + window, at)
                store(out, mask0 + at, add(load(out, mask0 + at), marked))
                store(out, up0 + at, add(load(out, up0 + at), grad))


@njit(**KERNEL)
def _moved(k, hin, win, transform):
    """Where T reads pixel k of a map from (rot180 and transpose are involutions)."""
    if transform == ROT180:
        return hin * win - 1 - k
    return (k % win) * win + k // win


@njit(**KERNEL)
def pool_backward(op, codes, a, ga, wins, nb, s0):
    """The gradient at the pool's input, channel by channel (see the module notes);
    ``a[s0:]`` holds two planes of scratch."""
    channels, hin, win = op.in_c, op.in_h, op.in_w
    plane = hin * win
    ties, transform = op.ties != 0, op.transform
    dx0 = op.in_offset
    fill(ga, dx0, nb * channels * plane)
    for m in range(nb * channels):
        mode = codes[op.codes_offset + m % channels]
        dx = dx0 + m * plane
        if mode == ROUTE:
            _route(op, a, ga, wins, m, ties, ga, dx)
            continue
        fill(a, s0, 2 * plane)
        if mode == GREEN:
            _route(op, a, ga, wins, m, ties, a, s0)
            for k in range(plane):
                store(ga, dx + k, load(a, s0 + _moved(k, hin, win, transform)))
        elif mode == RED:
            _mask_and_spread(op, a, ga, wins, m, ties, a, s0, s0 + plane)
            for k in range(plane):
                moved = load(a, s0 + _moved(k, hin, win, transform))
                store(ga, dx + k, mul(moved, load(a, s0 + plane + k)))
