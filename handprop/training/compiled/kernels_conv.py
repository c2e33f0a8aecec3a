"""Compiled conv2d (and the as-run layer): forward, weight/bias gradients, input gradient.

Written once against the slot API (:mod:`.slots`); the arrays are one replica's or eight
lanes' (see :mod:`.kernels_dense`). Padding taps are skipped (the reference multiplies
them by zero): the same sums, in another order.

Stride 1 takes whole padded planes as one run: with the input zero-padded to width Wp
and delta widened to Wp columns (zeros past its last column), tap (i, j) of every output
pixel of a plane is one contiguous run, ``out_wide[k] += w * xpad[i*Wp + j + k]`` for
``k < (out_h - 1)*Wp + out_w``. Long runs the compiler vectorizes, instead of short
rows; the extra columns are dropped. Other strides go row by row.
"""

from __future__ import annotations

from math import prod

from numba import njit

from ...core.ops import Conv2d
from ...core.ops.asrun import AsRunConv2d
from .capabilities import SAMPLE_ORDER, WIDTH8, OpSpec, UnsupportedError, register_op
from .slots import (
    KERNEL,
    add,
    axpy,
    by_width,
    copy,
    dot,
    fill,
    load,
    muladd,
    rotate_maps,
    store,
    total,
    zero,
)

CONV = 0


def _describe_conv(builder, row, layer, index) -> None:
    builder.shapes(row, index)
    builder.window(row, layer.kernel_size, layer.stride, layer.padding)
    row["groups"] = layer.groups
    row["kernel_offset"] = row["weight_offset"]
    row["kernel_stride"] = prod(layer.param_shapes()["weight"][1:])
    padded = row["in_c"] * (row["in_h"] + 2 * row["pad_h"]) * (row["in_w"] + 2 * row["pad_w"])
    # padded input, delta widened to padded rows, padded input gradient
    builder.need_work(2 * padded + row["out_h"] * (row["in_w"] + 2 * row["pad_w"]))


def _describe_as_run(builder, row, layer, index) -> None:
    """The forward pass reads the lender's kernel for every output channel. Backward:
    the conv's own formulas with its own W where the rule computes them (the article's
    rules, feedback rules), else the true gradient: through the borrowed kernel, dL/dK =
    sum over outputs, added to the lender's gradient, 0 for W."""
    _describe_conv(builder, row, layer, index)
    owner, _, local = layer.borrowed()["source"].rpartition(".")
    start, _, shape = builder.params(builder.net.layer_index(owner))[local]
    own = layer.param_shapes()["weight"]
    kernel = prod(own[1:])
    if tuple(shape[1:]) != tuple(own[1:]) or not 0 <= layer.source_channel < shape[0]:
        raise UnsupportedError(f"layer {layer.name!r}: kernel {layer.source_channel} of "
                               f"{owner}.{local} {tuple(shape)} cannot stand in for its "
                               f"weight {tuple(own)}")
    row["kernel_offset"], row["kernel_stride"] = start + layer.source_channel * kernel, 0
    if builder.weight_grads(index) is None:
        row["borrow_offset"], row["borrow_size"] = builder.add_arena(kernel), kernel


def _conv_features(layer, how) -> frozenset[str]:
    """A conv bias's gradient is one sum over every sample and pixel: not per sample."""
    return frozenset({WIDTH8} if layer.bias else {WIDTH8, SAMPLE_ORDER})


def _as_run_features(layer, how) -> frozenset[str]:
    """The true gradient sums over the samples before the output channels."""
    return frozenset({WIDTH8} if layer.bias or how is None else {WIDTH8, SAMPLE_ORDER})


register_op(OpSpec(Conv2d, CONV, _describe_conv, _conv_features,
                   "channels, groups, stride, padding, bias; B = W or the rule's feedback; "
                   "the article's rotations"))
register_op(OpSpec(AsRunConv2d, CONV, _describe_as_run, _as_run_features,
                   "the borrowed kernel; its true gradient, or the rule's local formulas "
                   "with its own W"))


# -- hand-specialised: one kernel row's taps (j = 0 .. kw - 1) over a run. Each output
# slot adds its taps in j order in both widths; width 1 runs tap by tap over the whole
# run (one vectorized axpy each), width 8 holds a 3-tap row's weights in registers and
# loads and stores each slot once.
@njit(**KERNEL)
def _row_taps_w1(a, o0, p, w0, kw, s0, run):  # hand-specialised: tap by tap
    for j in range(kw):
        axpy(a, o0, load(p, w0 + j), a, s0 + j, run)


@njit(**KERNEL)
def _row_taps_w8(a, o0, p, w0, kw, s0, run):  # hand-specialised: slot by slot
    if kw == 3:  # the common kernel: its three weights held in registers
        w_0, w_1, w_2 = load(p, w0), load(p, w0 + 1), load(p, w0 + 2)
        for k in range(run):
            out = muladd(load(a, o0 + k), w_0, load(a, s0 + k))
            out = muladd(out, w_1, load(a, s0 + k + 1))
            store(a, o0 + k, muladd(out, w_2, load(a, s0 + k + 2)))
        return
    for k in range(run):
        out = load(a, o0 + k)
        for j in range(kw):
            out = muladd(out, load(p, w0 + j), load(a, s0 + k + j))
        store(a, o0 + k, out)


# -- hand-specialised: a kernel row's share of the backward pass (j = 0 .. kw - 1): the
# weight gradients gp[g0 + j] += dot(delta, x[s0 + j:]) (dot's four partial sums), and the
# input gradient grad[d0 + j + k] += w[j] * delta[k], each slot's terms in j order. Width
# 1 goes tap by tap (a dot and a vectorized axpy each); width 8 takes the three taps of a
# 3-wide row at once, delta loaded once for all three, and gathers each grad slot's three
# terms before storing it once.
@njit(**KERNEL)
def _row_backward_w1(gp, g0, a, delta, s0, weights, w0, d0, kw, run, grads, need_dx):
    for j in range(kw):  # hand-specialised: tap by tap
        if grads:
            store(gp, g0 + j, add(load(gp, g0 + j), dot(a, delta, a, s0 + j, run)))
        if need_dx:
            axpy(a, d0 + j, load(weights, w0 + j), a, delta, run)


@njit(**KERNEL)
def _row_backward_w8(gp, g0, a, delta, s0, weights, w0, d0, kw, run, grads, need_dx):
    if kw != 3:  # hand-specialised: three taps at once (3-wide rows)
        _row_backward_w1(gp, g0, a, delta, s0, weights, w0, d0, kw, run, grads, need_dx)
        return
    if grads:
        _three_weight_grads(gp, g0, a, delta, s0, run)
    if need_dx:
        _three_input_grads(a, d0, weights, w0, delta, run)


@njit(**KERNEL)
def _three_weight_grads(gp, g0, a, delta, s0, run):  # hand-specialised (width 8)
    a0 = a1 = a2 = a3 = b0 = b1 = b2 = b3 = c0 = c1 = c2 = c3 = zero(a)
    k = 0
    while k + 4 <= run:
        d0, d1, d2, d3 = (load(a, delta + k), load(a, delta + k + 1), load(a, delta + k + 2),
                          load(a, delta + k + 3))
        x0, x1, x2 = load(a, s0 + k), load(a, s0 + k + 1), load(a, s0 + k + 2)
        x3, x4, x5 = load(a, s0 + k + 3), load(a, s0 + k + 4), load(a, s0 + k + 5)
        a0, a1, a2, a3 = muladd(a0, d0, x0), muladd(a1, d1, x1), muladd(a2, d2, x2), \
            muladd(a3, d3, x3)
        b0, b1, b2, b3 = muladd(b0, d0, x1), muladd(b1, d1, x2), muladd(b2, d2, x3), \
            muladd(b3, d3, x4)
        c0, c1, c2, c3 = muladd(c0, d0, x2), muladd(c1, d1, x3), muladd(c2, d2, x4), \
            muladd(c3, d3, x5)
        k += 4
    while k < run:
        d = load(a, delta + k)
        a0 = muladd(a0, d, load(a, s0 + k))
        b0 = muladd(b0, d, load(a, s0 + k + 1))
        c0 = muladd(c0, d, load(a, s0 + k + 2))
        k += 1
    store(gp, g0, add(load(gp, g0), add(add(a0, a1), add(a2, a3))))
    store(gp, g0 + 1, add(load(gp, g0 + 1), add(add(b0, b1), add(b2, b3))))
    store(gp, g0 + 2, add(load(gp, g0 + 2), add(add(c0, c1), add(c2, c3))))


@njit(**KERNEL)
def _three_input_grads(a, g0, weights, w0, delta, run):  # hand-specialised (width 8)
    if run < 2:
        for j in range(3):
            axpy(a, g0 + j, load(weights, w0 + j), a, delta, run)
        return
    w_0, w_1, w_2 = load(weights, w0), load(weights, w0 + 1), load(weights, w0 + 2)
    store(a, g0, muladd(load(a, g0), w_0, load(a, delta)))
    out = muladd(load(a, g0 + 1), w_0, load(a, delta + 1))
    store(a, g0 + 1, muladd(out, w_1, load(a, delta)))
    for t in range(2, run):
        out = muladd(load(a, g0 + t), w_0, load(a, delta + t))
        out = muladd(out, w_1, load(a, delta + t - 1))
        store(a, g0 + t, muladd(out, w_2, load(a, delta + t - 2)))
    out = muladd(load(a, g0 + run), w_1, load(a, delta + run - 1))
    store(a, g0 + run, muladd(out, w_2, load(a, delta + run - 2)))
    store(a, g0 + run + 1, muladd(load(a, g0 + run + 1), w_2, load(a, delta + run - 1)))


row_taps = by_width("row_taps", _row_taps_w1, _row_taps_w8)
row_backward = by_width("row_backward", _row_backward_w1, _row_backward_w8)


# -- stride 1: whole padded planes ------------------------------------------------------


@njit(**KERNEL)
def _padded(op, x0, a, work):
    """The sample's input planes zero-padded at ``a[work:]`` (or the input itself):
    (offset, padded width, padded plane)."""
    cin, hin, win, ph, pw = op.in_c, op.in_h, op.in_w, op.pad_h, op.pad_w
    wide, tall = win + 2 * pw, hin + 2 * ph
    if ph == 0 and pw == 0:
        return x0, win, hin * win
    fill(a, work, cin * tall * wide)
    for c in range(cin):
        for y in range(hin):
            copy(a, work + (c * tall + y + ph) * wide + pw, a, x0 + (c * hin + y) * win, win)
    return work, wide, tall * wide


@njit(**KERNEL)
def _widen(op, ga, d0, a, out0, wide):
    """Delta plane (out_h x out_w) laid out in rows of ``wide`` at ``a[out0:]``."""
    fill(a, out0, op.out_h * wide)
    for y in range(op.out_h):
        copy(a, out0 + y * wide, ga, d0 + y * op.out_w, op.out_w)


@njit(**KERNEL)
def _add_bias(op, p, a, y0, o):
    if op.bias_offset >= 0:
        bias = load(p, op.bias_offset + o)
        for k in range(op.out_h * op.out_w):
            store(a, y0 + k, add(load(a, y0 + k), bias))


@njit(**KERNEL)
def _forward_wide(op, p, a, nb, work):
    cin, cout, hout, wout = op.in_c, op.out_c, op.out_h, op.out_w
    kh, kw = op.kernel_h, op.kernel_w
    per_in, per_out = cin // op.groups, cout // op.groups
    w0, ostride, b0 = op.kernel_offset, op.kernel_stride, op.bias_offset
    in0, in_plane, out0, plane_out = op.in_offset, op.in_h * op.in_w, op.out_offset, hout * wout
    for n in range(nb):
        x0, wide, plane = _padded(op, in0 + n * cin * in_plane, a, work)
        out_wide = work + cin * plane
        run = (hout - 1) * wide + wout
        for o in range(cout):
            first = (o // per_out) * per_in
            fill(a, out_wide, run)
            for c in range(per_in):
                for i in range(kh):
                    row_taps(a, out_wide, p, w0 + o * ostride + (c * kh + i) * kw, kw,
                             x0 + (first + c) * plane + i * wide, run)
            y0 = out0 + (n * cout + o) * plane_out
            for y in range(hout):
                copy(a, y0 + y * wout, a, out_wide + y * wide, wout)
            if b0 >= 0:
                _add_bias(op, p, a, y0, o)


@njit(**KERNEL)
def _backward_wide(op, weights, w0, wstride, a, ga, gp, nb, work, grads, need_dx):
    """The weight gradient (``grads``) and the input gradient (``need_dx``) in one pass:
    each widened delta plane serves both (the same sums in the same order)."""
    cin, hin, win, cout, hout, wout = op.in_c, op.in_h, op.in_w, op.out_c, op.out_h, op.out_w
    kh, kw, ph, pw = op.kernel_h, op.kernel_w, op.pad_h, op.pad_w
    per_in, per_out = cin // op.groups, cout // op.groups
    wp, taps = op.weight_offset, per_in * kh * kw
    wide, tall = win + 2 * pw, hin + 2 * ph
    run = (hout - 1) * wide + wout
    if grads:
        fill(gp, wp, cout * taps)
    for n in range(nb):
        x0, _, plane = _padded(op, op.in_offset + n * cin * hin * win, a, work)
        delta = work + cin * tall * wide
        grad = delta + hout * wide
        if need_dx:
            fill(a, grad, cin * tall * wide)
        for o in range(cout):
            _widen(op, ga, op.out_offset + (n * cout + o) * hout * wout, a, delta, wide)
            first = (o // per_out) * per_in
            for c in range(per_in):
                for i in range(kh):
                    row = (c * kh + i) * kw  # the kernel row's first tap
                    row_backward(gp, wp + o * taps + row, a, delta,
                                 x0 + (first + c) * plane + i * wide, weights,
                                 w0 + o * wstride + row,
                                 grad + (first + c) * tall * wide + i * wide, kw, run, grads,
                                 need_dx)
        if need_dx:
            dx0 = op.in_offset + n * cin * hin * win
            for c in range(cin):
                for y in range(hin):
                    copy(ga, dx0 + (c * hin + y) * win, a, grad + (c * tall + y + ph) * wide + pw,
                         win)


# -- other strides: row by row --------------------------------------------------------------


@njit(**KERNEL)
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


@njit(**KERNEL)
def _strided_add(out, o0, src, s0, stride, w, count):
    """out[o0 + k] += w * src[s0 + k*stride] for k < count."""
    for k in range(count):
        store(out, o0 + k, muladd(load(out, o0 + k), w, load(src, s0 + k * stride)))


@njit(**KERNEL)
def _strided_scatter(out, o0, stride, src, s0, w, count):
    """out[o0 + k*stride] += w * src[s0 + k] for k < count."""
    for k in range(count):
        at = o0 + k * stride
        store(out, at, muladd(load(out, at), w, load(src, s0 + k)))


@njit(**KERNEL)
def _strided_dot(u, u0, v, v0, stride, count):
    """sum_k u[u0 + k] v[v0 + k*stride], in two interleaved partial sums."""
    even = odd = zero(u)
    k = 0
    while k + 2 <= count:
        even = muladd(even, load(u, u0 + k), load(v, v0 + k * stride))
        odd = muladd(odd, load(u, u0 + k + 1), load(v, v0 + (k + 1) * stride))
        k += 2
    if k < count:
        even = muladd(even, load(u, u0 + k), load(v, v0 + k * stride))
    return add(even, odd)


@njit(**KERNEL)
def _forward_strided(op, p, a, nb):
    """Tap by tap, ``w * (input row)`` added to each output row, skipping the padding."""
    cin, hin, win, cout, hout, wout = op.in_c, op.in_h, op.in_w, op.out_c, op.out_h, op.out_w
    kh, kw, sh, sw, ph, pw = (op.kernel_h, op.kernel_w, op.stride_h, op.stride_w, op.pad_h,
                              op.pad_w)
    per_in, per_out = cin // op.groups, cout // op.groups
    w0, ostride = op.kernel_offset, op.kernel_stride
    for n in range(nb):
        x0 = op.in_offset + n * cin * hin * win
        for o in range(cout):
            y0 = op.out_offset + (n * cout + o) * hout * wout
            fill(a, y0, hout * wout)
            first = (o // per_out) * per_in
            for c in range(per_in):
                xc = x0 + (first + c) * hin * win
                for i in range(kh):
                    oy_lo, oy_hi = _span(hout, sh, ph, i, hin)
                    for j in range(kw):
                        ox_lo, ox_hi = _span(wout, sw, pw, j, win)
                        w = load(p, w0 + o * ostride + (c * kh + i) * kw + j)
                        for oy in range(oy_lo, oy_hi):
                            row_in = xc + (oy * sh - ph + i) * win + ox_lo * sw - pw + j
                            _strided_add(a, y0 + oy * wout + ox_lo, a, row_in, sw, w,
                                         ox_hi - ox_lo)
            _add_bias(op, p, a, y0, o)


@njit(**KERNEL)
def _param_grads_strided(op, a, ga, gp, nb):
    """One dot product per tap and output row."""
    cin, hin, win, cout, hout, wout = op.in_c, op.in_h, op.in_w, op.out_c, op.out_h, op.out_w
    kh, kw, sh, sw, ph, pw = (op.kernel_h, op.kernel_w, op.stride_h, op.stride_w, op.pad_h,
                              op.pad_w)
    per_in, per_out = cin // op.groups, cout // op.groups
    for o in range(cout):
        first = (o // per_out) * per_in
        for c in range(per_in):
            for i in range(kh):
                oy_lo, oy_hi = _span(hout, sh, ph, i, hin)
                for j in range(kw):
                    ox_lo, ox_hi = _span(wout, sw, pw, j, win)
                    grad = zero(gp)
                    for n in range(nb):
                        d0 = op.out_offset + (n * cout + o) * hout * wout
                        xc = op.in_offset + (n * cin + first + c) * hin * win
                        for oy in range(oy_lo, oy_hi):
                            row_in = xc + (oy * sh - ph + i) * win + ox_lo * sw - pw + j
                            grad = add(grad, _strided_dot(ga, d0 + oy * wout + ox_lo, a, row_in,
                                                          sw, ox_hi - ox_lo))
                    store(gp, op.weight_offset + ((o * per_in + c) * kh + i) * kw + j, grad)


@njit(**KERNEL)
def _input_grad_strided(op, weights, w0, wstride, ga, nb):
    """Each tap's shares added back row by row."""
    cin, hin, win, cout, hout, wout = op.in_c, op.in_h, op.in_w, op.out_c, op.out_h, op.out_w
    kh, kw, sh, sw, ph, pw = (op.kernel_h, op.kernel_w, op.stride_h, op.stride_w, op.pad_h,
                              op.pad_w)
    per_in, per_out = cin // op.groups, cout // op.groups
    fill(ga, op.in_offset, nb * cin * hin * win)
    for n in range(nb):
        x0 = op.in_offset + n * cin * hin * win
        for o in range(cout):
            d0 = op.out_offset + (n * cout + o) * hout * wout
            first = (o // per_out) * per_in
            for c in range(per_in):
                xc = x0 + (first + c) * hin * win
                for i in range(kh):
                    oy_lo, oy_hi = _span(hout, sh, ph, i, hin)
                    for j in range(kw):
                        ox_lo, ox_hi = _span(wout, sw, pw, j, win)
                        w = load(weights, w0 + o * wstride + (c * kh + i) * kw + j)
                        for oy in range(oy_lo, oy_hi):
                            row_in = xc + (oy * sh - ph + i) * win + ox_lo * sw - pw + j
                            _strided_scatter(ga, row_in, sw, ga, d0 + oy * wout + ox_lo, w,
                                             ox_hi - ox_lo)


# -- the op ------------------------------------------------------------------------------


@njit(**KERNEL)
def conv_forward(op, p, a, nb, work):
    """out[n, o, y, x] = sum_{c, i, j} w[o, c, i, j] xpad[n, c, y*sh + i, x*sw + j] + b[o].

    Tap by tap, each tap adding ``w * (shifted input)`` to whole output runs: long
    independent adds the compiler vectorizes (a dot product per output would be one
    serial chain of dependent adds). Every output sums its taps in (c, i, j) order."""
    if op.stride_h == 1 and op.stride_w == 1:
        _forward_wide(op, p, a, nb, work)
    else:
        _forward_strided(op, p, a, nb)


@njit(**KERNEL)
def conv_backward(op, weights, w0, wstride, a, ga, gp, nb, work, need_dx):
    """dw[o, c, i, j] = sum_{n, y, x} delta[n, o, y, x] xpad[n, c, y*sh + i, x*sw + j]
    (against rot180(delta) when the rule says so: the article's broken net, done by
    rotating delta in place and back); db[o] = sum of delta; and if ``need_dx``, dx:
    every window entry's share w[o, c, i, j] * delta[n, o, y, x] added back to the pixel
    it read, through ``weights[w0:]`` (W itself, or a rule's feedback weights; ``wstride``
    apart per output channel), rotated 180 degrees per map when the rule says so."""
    cout, plane_out = op.out_c, op.out_h * op.out_w
    if op.bias_offset >= 0:
        for o in range(cout):
            grad = zero(gp)
            for n in range(nb):
                grad = total(ga, op.out_offset + (n * cout + o) * plane_out, plane_out, grad)
            store(gp, op.bias_offset + o, grad)
    rotated = op.rotate_delta != 0
    if op.stride_h == 1 and op.stride_w == 1:
        passes = 2 if rotated and need_dx else 1
        for part in range(passes):  # flags computed here, not literals: one compiled version
            grads = part == 0
            dx = need_dx and (part == 1 or not rotated)
            if rotated and grads:
                rotate_maps(ga, op.out_offset, nb * cout, plane_out)
            _backward_wide(op, weights, w0, wstride, a, ga, gp, nb, work, grads, dx)
            if rotated and grads:
                rotate_maps(ga, op.out_offset, nb * cout, plane_out)
    else:
        if rotated:
            rotate_maps(ga, op.out_offset, nb * cout, plane_out)
        _param_grads_strided(op, a, ga, gp, nb)
        if rotated:
            rotate_maps(ga, op.out_offset, nb * cout, plane_out)
        if need_dx:
            _input_grad_strided(op, weights, w0, wstride, ga, nb)
    if need_dx and op.rotate_sent != 0:
        rotate_maps(ga, op.in_offset, nb * op.in_c, op.in_h * op.in_w)
