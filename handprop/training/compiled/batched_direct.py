"""Direct convolutions in the batched layout: conv + activation + max-pool, sample by sample
(hand-specialised: the layout's own loops, for speed).

For a conv with few taps per output (``C/groups * KH * KW <= DIRECT_TAPS``, e.g. a first
layer on grey images: 25 for LeNet's conv1), im2col would copy every input value KH*KW
times to feed a GEMM only a few columns wide. Instead, each sample's planes are worked
on whole, in a small area that stays in cache (``a[work_offset:]``), with the "wide" trick of
:mod:`.kernels_conv`: the input zero-padded to width Wp, every output plane kept in
rows of Wp values, so that one kernel tap is one contiguous run
``z[k] += w * xpad[i*Wp + j + k]`` for k < (OH - 1)*Wp + OW (the extra columns are
computed and ignored).

Forward (the conv, its activation and its max-pool rows in one): z = conv(x) + b, y =
f(z) plane by plane, then the pool's windows row by row, every window of a row side by
side (first maximum of y, a NaN winning as in argmax): the pooled y (NHWC), each
window's winning tap, and z at the winner (``a[winners_offset:]``) -- all that backward needs.

Backward: each window's gradient times f'(z, y) at its winner, placed in a zeroed delta
plane; then dW[o, c, i, j] = sum_k delta_o[k] xpad_c[i*Wp + j + k] per sample (added
sample after sample), db the deltas' sum, and if needed the input gradient: each tap's
``B[o, c, i, j] * delta_o`` run added to a padded gradient plane, whose inside is then
written to the NHWC input gradient.

The dot products sum in whatever order LLVM vectorizes them to (``fastmath`` with
reassociation and fused multiply-adds only): fixed by the compiled code and the lengths,
never by threads.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from .batched_ops import is_better, window_deltas
from .kernels_activation import forward_run
from .slots import KERNEL, U, axpy, copy, fill

# Max-pool windows computed side by side (see _pool_plane).
POOL_LANES = 16


@njit(**KERNEL)
def direct_work(cin, cout, hin, win, ph, pw, block, pool_stride):
    """The values of a direct conv's planes for a block of samples (padded input and its
    gradient, z and f(z)), plus the spare values read past the last plane by the pool's
    dropped lanes (fewer than POOL_LANES windows, ``pool_stride`` apart, past the last
    window of a row): where its pool's scratch starts (the work area holds
    ``3 * POOL_LANES`` more)."""
    wide = win + 2 * pw
    plane = (hin + 2 * ph) * wide
    return block * 2 * (cin + cout) * plane + wide + POOL_LANES * max(pool_stride, 1)


# Eight taps at a time (hand-specialised: each pass over a run serves eight taps). The
# eight values travel as tuples; these helpers are inlined, so the loops below keep eight
# scalars in registers and vectorize over k.


@njit(**KERNEL)
def _next8(first):
    """first, first + 1, ..., first + 7."""
    return (first, first + 1, first + 2, first + 3, first + 4, first + 5, first + 6,
            first + 7)


@njit(**KERNEL)
def _runs8(base, offsets, t):
    """Where the runs of taps t..t+7 start: base + offsets[t + m]."""
    return (base + offsets[t], base + offsets[t + 1], base + offsets[t + 2],
            base + offsets[t + 3], base + offsets[t + 4], base + offsets[t + 5],
            base + offsets[t + 6], base + offsets[t + 7])


@njit(**KERNEL)
def _read8(v, starts, k):
    """The eight runs' k-th values."""
    return (v[U(starts[0] + k)], v[U(starts[1] + k)], v[U(starts[2] + k)],
            v[U(starts[3] + k)], v[U(starts[4] + k)], v[U(starts[5] + k)],
            v[U(starts[6] + k)], v[U(starts[7] + k)])


@njit(fastmath={"reassoc", "contract"}, **KERNEL)
def _add8(sums, d, xs):
    """sums[m] + d * xs[m] for the eight taps (sums that may be reassociated)."""
    return (sums[0] + d * xs[0], sums[1] + d * xs[1], sums[2] + d * xs[2],
            sums[3] + d * xs[3], sums[4] + d * xs[4], sums[5] + d * xs[5],
            sums[6] + d * xs[6], sums[7] + d * xs[7])


@njit(fastmath={"contract"}, **KERNEL)
def _combine8(ws, xs):
    """sum_m ws[m] xs[m], added in tap order."""
    total = ws[0] * xs[0] + ws[1] * xs[1]
    total += ws[2] * xs[2]
    total += ws[3] * xs[3]
    total += ws[4] * xs[4]
    total += ws[5] * xs[5]
    total += ws[6] * xs[6]
    total += ws[7] * xs[7]
    return total


@njit(**KERNEL)
def _dot8(u, u0, v, base, offsets, t, count, zero):
    """sum_k u[u0 + k] v[base + offsets[t + m] + k] for the eight taps m < 8 at once (u
    read once), vectorized (``zero``: 0 in the arrays' dtype)."""
    starts = _runs8(base, offsets, t)
    sums = (zero, zero, zero, zero, zero, zero, zero, zero)
    for k in range(count):
        sums = _add8(sums, u[U(u0 + k)], _read8(v, starts, k))
    return sums


@njit(**KERNEL)
def _dot8x2(u, u0, u1, v, base, offsets, t, count, zero):
    """:func:`_dot8` against two delta planes (``u0``, ``u1``) at once: each input run
    read once for both; the first plane's eight sums, then the second's."""
    starts = _runs8(base, offsets, t)
    first = second = (zero, zero, zero, zero, zero, zero, zero, zero)
    for k in range(count):
        xs = _read8(v, starts, k)
        first = _add8(first, u[U(u0 + k)], xs)
        second = _add8(second, u[U(u1 + k)], xs)
    return first + second


@njit(fastmath={"reassoc", "contract"}, **KERNEL)
def _dot1(u, u0, v, v0, count, zero):
    total = zero
    for k in range(count):
        total += u[U(u0 + k)] * v[U(v0 + k)]
    return total


@njit(**KERNEL)
def _axpy8(out, o0, w, w0, src, base, offsets, t, count):
    """out[o0 + k] += sum_m w[w0 + t + m] src[base + offsets[t + m] + k] over the eight
    taps m < 8 (added in tap order): one pass over the output for eight taps."""
    starts, ws = _runs8(base, offsets, t), _read8(w, _next8(w0 + t), 0)
    for k in range(count):
        out[U(o0 + k)] += _combine8(ws, _read8(src, starts, k))


@njit(**KERNEL)
def _axpy8x2(out, o0, o1, w, w0, w1, src, base, offsets, t, count):
    """:func:`_axpy8` for two output planes at once (``w0``/``w1`` their weights): each
    input run is read once for both."""
    starts = _runs8(base, offsets, t)
    first, second = _read8(w, _next8(w0 + t), 0), _read8(w, _next8(w1 + t), 0)
    for k in range(count):
        xs = _read8(src, starts, k)
        out[U(o0 + k)] += _combine8(first, xs)
        out[U(o1 + k)] += _combine8(second, xs)


@njit(**KERNEL)
def _geometry(op):
    """(padded height, padded width, the values between two samples of a plane, one
    channel's plane for a block of BLOCK samples): samples are stacked in a plane, each
    in ``tall`` rows of ``wide`` (an output row oy of sample s is row s*tall + oy)."""
    tall, wide = op.in_h + 2 * op.pad_h, op.in_w + 2 * op.pad_w
    return tall, wide, tall * wide, op.block * tall * wide


@njit(**KERNEL)
def _run(op, samples):
    """How many values of a plane a tap's run covers for a block of ``samples``: every
    output row of them (and the rows between samples, computed and ignored)."""
    tall, wide, _, _ = _geometry(op)
    return ((samples - 1) * tall + op.out_h - 1) * wide + op.out_w


@njit(**KERNEL)
def _areas(op):
    """Offsets of the padded input, padded input gradient, z and y planes (one per
    channel, ``stride`` apart) in the op's work area."""
    _, _, _, stride = _geometry(op)
    xp = op.work_offset
    zp = xp + 2 * op.in_c * stride
    return xp, xp + op.in_c * stride, zp, zp + op.out_c * stride


@njit(**KERNEL)
def _pad(op, a, nn, xp):
    """Sample nn's input (NHWC at ``a[in_offset]``) into its padded rows at ``a[xp:]`` (a zeroed
    block; channels ``stride`` apart)."""
    c, h, w = op.in_c, op.in_h, op.in_w
    _, wide, _, stride = _geometry(op)
    for y in range(h):
        src = op.in_offset + (nn * h + y) * w * c
        dst = xp + (y + op.pad_h) * wide + op.pad_w
        if c == 1:
            copy(a, dst, a, src, w)
            continue
        for x in range(w):
            for ch in range(c):
                a[U(dst + ch * stride + x)] = a[U(src + x * c + ch)]


@njit(**KERNEL)
def _pad_block(op, a, n0, samples, xp):
    """Samples n0 .. n0 + samples - 1, padded and stacked, at ``a[xp:]``."""
    _, _, sample, stride = _geometry(op)
    fill(a, xp, op.in_c * stride)
    for s in range(samples):
        _pad(op, a, n0 + s, xp + s * sample)


@njit(**KERNEL)
def _tap_offsets(op):
    """Each tap's (c, i, j) offset in the padded planes of its group (c = 0 the group's
    first channel), and each pool tap's offset in a plane of rows of Wp: tables built
    once per call, so that no inner loop divides."""
    cg, kh, kw = op.in_c // op.groups, op.kernel_h, op.kernel_w
    _, wide, _, stride = _geometry(op)
    offsets = np.empty(cg * kh * kw, np.int64)
    for c in range(cg):
        for i in range(kh):
            for j in range(kw):
                offsets[(c * kh + i) * kw + j] = c * stride + i * wide + j
    return offsets


@njit(**KERNEL)
def _window_offsets(pool, wide):
    """Offsets of a max-pool window's taps (row-major) in a plane of rows of ``wide``."""
    offsets = np.empty(pool.kernel_h * pool.kernel_w, np.int64)
    for i in range(pool.kernel_h):
        for j in range(pool.kernel_w):
            offsets[i * pool.kernel_w + j] = i * wide + j
    return offsets


@njit(**KERNEL)
def _group_base(op, o):
    """Offset of output channel o's group's first input plane."""
    _, _, _, stride = _geometry(op)
    return (o // (op.out_c // op.groups)) * (op.in_c // op.groups) * stride


@njit(**KERNEL)
def _pairs(op, o):
    """How many output channels to compute together from o: two if o + 1 exists and
    reads the same inputs (same group), else one."""
    per_group = op.out_c // op.groups
    return 2 if o + 1 < op.out_c and (o + 1) // per_group == o // per_group else 1


@njit(**KERNEL)
def _conv_planes(op, p, a, o, count, zp, base, offsets, run):
    """z_m = sum over the group's taps of w * (shifted padded input at ``base +
    offsets``) + b for the ``count`` (1 or 2) output channels m from o (planes
    ``stride`` apart from ``zp``), over ``run`` values; taps eight at a time (one pass
    over z per eight)."""
    taps = offsets.shape[0]
    _, _, _, stride = _geometry(op)
    w0, z0 = op.weight_offset + o * taps, zp + o * stride
    for m in range(count):
        fill(a, z0 + m * stride, run)
    t = 0
    while t + 8 <= taps:
        if count == 2:
            _axpy8x2(a, z0, z0 + stride, p, w0, w0 + taps, a, base, offsets, t, run)
        else:
            _axpy8(a, z0, p, w0, a, base, offsets, t, run)
        t += 8
    while t < taps:
        for m in range(count):
            axpy(a, z0 + m * stride, p[U(w0 + m * taps + t)], a, base + offsets[t], run)
        t += 1
    if op.bias_offset >= 0:
        for m in range(count):
            bias = p[U(op.bias_offset + o + m)]
            for k in range(run):
                a[U(z0 + m * stride + k)] += bias


@njit(**KERNEL)
def _pool_plane(op, pool, a, wins, nn, o, z0, y0, window, scratch):
    """The max-pool windows of plane o of sample nn (``window``: the taps' offsets in
    rows of Wp): the first maximum of y (a NaN wins, as argmax) into the pool's NHWC
    output, its tap into ``wins``, z there into ``a[winners_offset]``. POOL_LANES windows
    of a pooled row side by side, tap after tap (a fixed trip count the compiler
    vectorizes whole; the lanes past the row's end read the planes' spare columns and
    are dropped), into ``a[scratch:]``, then to their NHWC places. Selects, not
    branches: the data are random."""
    _, wide, _, _ = _geometry(op)
    width, cout, sw = pool.out_w, op.out_c, pool.stride_w
    best, tap, zwin = scratch, scratch + POOL_LANES, scratch + 2 * POOL_LANES
    for qy in range(pool.out_h):
        first = ((nn * pool.out_h + qy) * width) * cout + o
        for q0 in range(0, width, POOL_LANES):
            start = qy * pool.stride_h * wide + q0 * sw
            for lane in range(POOL_LANES):
                at = start + lane * sw
                a[U(best + lane)] = a[U(y0 + at)]
                a[U(tap + lane)] = 0.0
                a[U(zwin + lane)] = a[U(z0 + at)]
            for t in range(1, window.shape[0]):
                for lane in range(POOL_LANES):
                    at = start + lane * sw + window[t]
                    value, current, z = a[U(y0 + at)], a[U(best + lane)], a[U(z0 + at)]
                    better = is_better(value, current)
                    a[U(best + lane)] = value if better else current
                    a[U(tap + lane)] = t if better else a[U(tap + lane)]
                    a[U(zwin + lane)] = z if better else a[U(zwin + lane)]
            for lane in range(min(POOL_LANES, width - q0)):
                q = first + (q0 + lane) * cout
                a[U(pool.out_offset + q)] = a[U(best + lane)]
                wins[U(pool.ints_offset + q)] = int(a[U(tap + lane)])
                a[U(op.winners_offset + q)] = a[U(zwin + lane)]


@njit(**KERNEL)
def direct_forward(op, act, pool, codes, slopes, p, a, wins, n):
    """The conv, ``act`` and max-pool ``pool`` rows' forward for n samples, a block of
    BLOCK samples at a time."""
    xp, _, zp, yp = _areas(op)
    _, wide, sample, stride = _geometry(op)
    offsets, window = _tap_offsets(op), _window_offsets(pool, wide)
    scratch = op.work_offset + direct_work(op.in_c, op.out_c, op.in_h, op.in_w, op.pad_h,
                                           op.pad_w, op.block, pool.stride_w)
    for n0 in range(0, n, op.block):
        samples = min(op.block, n - n0)
        run = _run(op, samples)
        _pad_block(op, a, n0, samples, xp)
        o = 0
        while o < op.out_c:
            count = _pairs(op, o)
            _conv_planes(op, p, a, o, count, zp, xp + _group_base(op, o), offsets, run)
            for m in range(o, o + count):
                z0, y0 = zp + m * stride, yp + m * stride
                code = act.codes_offset + m % act.in_c
                forward_run(codes[code], slopes[code], a, z0, y0, run)
                for s in range(samples):
                    _pool_plane(op, pool, a, wins, n0 + s, m, z0 + s * sample,
                                y0 + s * sample, window, scratch)
            o += count


@njit(**KERNEL)
def _deltas(op, pool, ga, wins, gp, nn, a, dp, window):
    """Sample nn's deltas (its rows at ``a[dp:]``, planes ``stride`` apart): each
    window's d (from :func:`window_deltas`) added at its winner (windows may share one),
    and the bias sums, windows in order."""
    cout = op.out_c
    _, wide, _, stride = _geometry(op)
    width, pooled = pool.out_w, pool.out_h * pool.out_w
    qsh, qsw = pool.stride_h * wide, pool.stride_w
    d0, t0, b0 = op.winners_offset, pool.ints_offset, op.bias_offset
    for within in range(pooled):
        corner = (within // width) * qsh + (within % width) * qsw
        for o in range(cout):
            q = (nn * pooled + within) * cout + o
            d = ga[U(d0 + q)]  # (often 0: adding it costs less than a mispredicted branch)
            a[U(dp + o * stride + corner + window[wins[U(t0 + q)]])] += d
            if b0 >= 0:
                gp[U(b0 + o)] += d


@njit(**KERNEL)
def direct_backward(op, act, pool, codes, slopes, a, ga, wins, gp, n, bmat, b0, need_dx,
                    zero):
    """dW, db and (if ``need_dx``) dx of the direct conv from its pool's gradient
    (``bmat[b0:]``: the input gradient's matrix, reference layout), a block of BLOCK
    samples at a time."""
    cout = op.out_c
    taps = (op.in_c // op.groups) * op.kernel_h * op.kernel_w
    xp, dxp, dp, _ = _areas(op)
    _, wide, sample, stride = _geometry(op)
    offsets, window = _tap_offsets(op), _window_offsets(pool, wide)
    fill(gp, op.weight_offset, cout * taps)
    if op.bias_offset >= 0:
        fill(gp, op.bias_offset, cout)
    window_deltas(op, act, pool, codes, slopes, a, ga, n)
    for n0 in range(0, n, op.block):
        samples = min(op.block, n - n0)
        run = _run(op, samples)
        fill(a, dp, cout * stride)
        for s in range(samples):
            _deltas(op, pool, ga, wins, gp, n0 + s, a, dp + s * sample, window)
        _pad_block(op, a, n0, samples, xp)
        o = 0
        while o < cout:
            count = _pairs(op, o)
            _weight_grads(op, a, gp, o, count, dp, xp + _group_base(op, o), offsets, zero,
                          run)
            o += count
        if need_dx:
            fill(a, dxp, op.in_c * stride)
            for o in range(cout):
                x = dxp + _group_base(op, o)
                for t in range(taps):
                    axpy(a, x + offsets[t], bmat[U(b0 + o * taps + t)], a, dp + o * stride,
                         run)
            for s in range(samples):
                _unpad(op, a, ga, n0 + s, dxp + s * sample)


@njit(**KERNEL)
def _weight_grads(op, a, gp, o, count, dp, base, offsets, zero, run):
    """Add a block's dW[m, t] = sum_k delta_m[k] xpad[base + offsets[t] + k] (k <
    ``run``) for the ``count`` (1 or 2) output channels m from o, eight taps at a time."""
    taps = offsets.shape[0]
    _, _, _, stride = _geometry(op)
    w0, d0 = op.weight_offset + o * taps, dp + o * stride
    t = 0
    while t + 8 <= taps:
        if count == 2:
            sums = _dot8x2(a, d0, d0 + stride, a, base, offsets, t, run, zero)
            for m in range(16):
                gp[U(w0 + (m // 8) * taps + t + m % 8)] += sums[m]
        else:
            first = _dot8(a, d0, a, base, offsets, t, run, zero)
            for m in range(8):
                gp[U(w0 + t + m)] += first[m]
        t += 8
    while t < taps:
        for m in range(count):
            gp[U(w0 + m * taps + t)] += _dot1(a, d0 + m * stride, a, base + offsets[t], run,
                                              zero)
        t += 1


@njit(**KERNEL)
def _unpad(op, a, ga, nn, dxp):
    """The inside of sample nn's padded gradient rows (at ``a[dxp:]``, planes
    ``stride`` apart), into the NHWC input gradient."""
    c, h, w = op.in_c, op.in_h, op.in_w
    _, wide, _, stride = _geometry(op)
    for y in range(h):
        dst = op.in_offset + (nn * h + y) * w * c
        src = dxp + (y + op.pad_h) * wide + op.pad_w
        for x in range(w):
            for ch in range(c):
                ga[U(dst + x * c + ch)] = a[U(src + ch * stride + x)]
