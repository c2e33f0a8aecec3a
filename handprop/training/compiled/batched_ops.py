"""The batched layout's ops: convolutions as GEMMs over a half-batch, and the rest.

Arrays are one half-batch's: ``a``/``ga`` its activation and gradient arenas (offsets
from the op rows of :mod:`.batched_plan`), ``wins`` its max-pool winners, ``gp`` its
parameter gradient; ``p`` is the replica's flat parameters, ``prep`` what the step
formed from them (conv weights permuted to (O, KH, KW, C/groups), feedback matrices).
Maps are NHWC: ``n`` samples of (H, W, C) are an (n*H*W, C) matrix.

* conv2d forward: ``cols`` (n*OH*OW, KH*KW*C/g) = im2col(x), one row per output pixel,
  each kernel row's KW*C inputs one contiguous run of x; then ``z = cols @ W'^T`` (one
  GEMM per group) and the bias;
* conv2d backward: ``dW' = dz^T @ cols``, ``d(cols) = dz @ B'`` and col2im, the bias
  gradient the column sums of dz. A conv followed by an activation and a max-pool
  (*routed*) does this from the pool's winners only: each window's gradient, times the
  activation's derivative at its winner, adds ``d * cols[winner]`` to its channel's dW'
  row (most of dz is zero there);
* max-pool (first maximum, NaN wins as in ``argmax``), average pool, activations (the
  engine's runs, :mod:`.kernels_activation`), flatten (to the reference's (C, H, W)
  order) and dense layers (``(n, D)`` rows).

GEMMs are BLAS's (``numba_xxgemm``, the scipy BLAS that ``np.dot`` uses in Numba), with
row-major arguments: ``gemm(ta, tb, m, n, k, A, a0, lda, B, b0, ldb, C, c0, ldc, acc)`` is
``C[c0:] (m x n) = op(A) @ op(B) (+ C if acc)``. BLAS sums in its own blocked order; each
call's order depends only on its shapes, so the results do not depend on threads (the
engine holds BLAS to one thread). The loops over NHWC rows here are the layout's own
(hand-specialised: the same sums as the engine's other layouts, in another loop order).
"""

from __future__ import annotations

import numpy as np
from numba import njit, types
from numba.extending import overload

from .kernels_activation import activate, backward_run, derivative, forward_run
from .slots import KERNEL, U, axpy, copy, fill

NOTRANS, TRANS = ord("N"), ord("T")


def gemm(ta, tb, m, n, k, a, a0, lda, b, b0, ldb, c, c0, ldc, accumulate, consts):
    """Row-major GEMM through BLAS (compiled only: see the overload below)."""
    raise NotImplementedError("gemm runs inside compiled kernels only")


@overload(gemm)
def _gemm(ta, tb, m, n, k, a, a0, lda, b, b0, ldb, c, c0, ldc, accumulate, consts):
    from numba.np.linalg import _BLAS

    xxgemm = _BLAS().numba_xxgemm(c.dtype)
    kind = ord("s") if c.dtype == types.float32 else ord("d")

    def impl(ta, tb, m, n, k, a, a0, lda, b, b0, ldb, c, c0, ldc, accumulate, consts):
        if m == 0 or n == 0:
            return
        # column-major BLAS: C^T = op(B)^T op(A)^T; consts = (1, 0) in c's dtype
        beta = consts[0:] if accumulate else consts[1:]
        xxgemm(kind, tb, ta, n, m, k, consts.ctypes, b[b0:].ctypes, ldb, a[a0:].ctypes,
               lda, beta.ctypes, c[c0:].ctypes, ldc)

    return impl


# -- conv2d as GEMMs ------------------------------------------------------------------


@njit(**KERNEL)
def valid_taps(size, stride, pad, at, taps):
    """The taps j of output position ``at`` that read inside the input: j_lo <= j < j_hi."""
    low = min(max(0, pad - at * stride), taps)
    high = max(min(taps, size + pad - at * stride), low)
    return low, high


@njit(**KERNEL)
def cols_of(op, g):
    """(offset of group g's cols for a chunk of ``op.chunk`` samples, columns K =
    KH*KW*C/groups, rows per sample)."""
    per_sample = op.out_h * op.out_w
    k = op.kernel_h * op.kernel_w * (op.in_c // op.groups)
    return op.cols_offset + g * op.chunk * per_sample * k, k, per_sample


@njit(**KERNEL)
def im2col(op, a, n0, n, g):
    """Group g's input windows of samples n0 .. n0 + n - 1 (at most a chunk): row
    (sample, oy, ox) holds x[.., oy*sh - ph + i, ox*sw - pw + j, c] at column (i, j, c),
    zero where the window covers padding."""
    c, h, w, ow = op.in_c, op.in_h, op.in_w, op.out_w
    kh, kw, sh, sw, ph, pw = (op.kernel_h, op.kernel_w, op.stride_h, op.stride_w, op.pad_h,
                              op.pad_w)
    groups = op.groups
    cg = c // groups
    dst, _, _ = cols_of(op, g)
    for nn in range(n0, n0 + n):
        for oy in range(op.out_h):
            for ox in range(ow):
                j_lo, j_hi = valid_taps(w, sw, pw, ox, kw)
                for i in range(kh):
                    iy = oy * sh - ph + i
                    src = op.in_offset + ((nn * h + iy) * w + ox * sw - pw) * c + g * cg
                    if iy < 0 or iy >= h:
                        fill(a, dst, kw * cg)
                    elif groups == 1:  # the kernel row's taps: one contiguous run
                        fill(a, dst, j_lo * c)
                        copy(a, dst + j_lo * c, a, src + j_lo * c, (j_hi - j_lo) * c)
                        fill(a, dst + j_hi * c, (kw - j_hi) * c)
                    else:
                        for j in range(kw):
                            if j_lo <= j < j_hi:
                                copy(a, dst + j * cg, a, src + j * c, cg)
                            else:
                                fill(a, dst + j * cg, cg)
                    dst += kw * cg


@njit(**KERNEL)
def _add_run(out, o0, src, s0, count):
    """out[o0 + k] += src[s0 + k] for k < count."""
    for k in range(count):
        out[U(o0 + k)] += src[U(s0 + k)]


@njit(**KERNEL)
def col2im(op, ga, n0, n, g):
    """Add group g's d(cols) of samples n0 .. n0 + n - 1 (at ``ga[cols_offset]``) back to
    the input pixels each entry read. Output columns are visited in ``ceil(KW / SW)``
    interleaved passes, so that the windows added one after another never overlap (an
    add then never waits for the previous one's store)."""
    c, h, w, oh, ow = op.in_c, op.in_h, op.in_w, op.out_h, op.out_w
    kh, kw, sh, sw, ph, pw = (op.kernel_h, op.kernel_w, op.stride_h, op.stride_w, op.pad_h,
                              op.pad_w)
    cg = c // op.groups
    cols, k, per_sample = cols_of(op, g)
    step = -(-kw // sw)
    for nn in range(n0, n0 + n):
        for oy in range(oh):
            i_lo, i_hi = valid_taps(h, sh, ph, oy, kh)
            for phase in range(min(step, ow)):
                for ox in range(phase, ow, step):
                    j_lo, j_hi = valid_taps(w, sw, pw, ox, kw)
                    src = cols + ((nn - n0) * per_sample + oy * ow + ox) * k
                    corner = op.in_offset + ((nn * h + oy * sh - ph) * w + ox * sw - pw) * c \
                        + g * cg
                    for i in range(i_lo, i_hi):
                        dst, row = corner + i * w * c, src + i * kw * cg
                        if cg == c:
                            _add_run(ga, dst + j_lo * c, ga, row + j_lo * c, (j_hi - j_lo) * c)
                        else:
                            for j in range(j_lo, j_hi):
                                _add_run(ga, dst + j * c, ga, row + j * cg, cg)


@njit(**KERNEL)
def add_bias(a, y0, rows, width, p, b0):
    """a[y0 + r*width + o] += bias[o] for every row r."""
    for r in range(rows):
        _add_run(a, y0 + r * width, p, b0, width)


@njit(**KERNEL)
def bias_grad(ga, y0, rows, width, gp, b0):
    """gp[b0 + o] = sum over rows of ga[y0 + r*width + o], row after row."""
    fill(gp, b0, width)
    for r in range(rows):
        _add_run(gp, b0, ga, y0 + r * width, width)


@njit(**KERNEL)
def conv_forward(op, a, p, prep, n, consts):
    """z = im2col(x) @ W'^T (+ bias) into ``a[out_offset]`` (n*OH*OW, O): chunk by chunk of
    samples (the cols of a chunk stay in cache), group by group."""
    groups, cout = op.groups, op.out_c
    og = cout // groups
    for n0 in range(0, n, op.chunk):
        size = min(op.chunk, n - n0)
        for g in range(groups):
            im2col(op, a, n0, size, g)
            cols, k, per_sample = cols_of(op, g)
            gemm(NOTRANS, TRANS, size * per_sample, og, k, a, cols, k, prep,
                 op.weight_prep + g * og * k, k, a, op.out_offset + n0 * per_sample * cout
                 + g * og, cout, False, consts)
    if op.bias_offset >= 0:
        add_bias(a, op.out_offset, n * op.out_h * op.out_w, cout, p, op.bias_offset)


@njit(**KERNEL)
def conv_backward(op, a, ga, gp, n, bmat, b0, need_dx, consts):
    """From dz (``ga[out_offset]``): dW' = dz^T @ cols into ``gp[weight_offset]`` (O, KH,
    KW, C/g; the cols recomputed chunk by chunk, the chunks' products added in order),
    the bias gradient, and if ``need_dx`` the input gradient (:func:`input_grad`)."""
    groups, cout = op.groups, op.out_c
    og = cout // groups
    for n0 in range(0, n, op.chunk):
        size = min(op.chunk, n - n0)
        for g in range(groups):
            if n > op.chunk:  # else the forward pass's cols are still there
                im2col(op, a, n0, size, g)
            cols, k, per_sample = cols_of(op, g)
            gemm(TRANS, NOTRANS, og, k, size * per_sample, ga,
                 op.out_offset + n0 * per_sample * cout + g * og, cout, a, cols, k, gp,
                 op.weight_offset + g * og * k, k, n0 > 0, consts)
    if op.bias_offset >= 0:
        bias_grad(ga, op.out_offset, n * op.out_h * op.out_w, cout, gp, op.bias_offset)
    if need_dx:
        input_grad(op, ga, n, bmat, b0, consts)


@njit(**KERNEL)
def input_grad(op, ga, n, bmat, b0, consts):
    """dx from dz (``ga[out_offset]``) through B' (``bmat[b0:]``, the permuted layout):
    chunk by chunk, d(cols) = dz @ B' (into ``ga[cols_offset]``), then col2im, group by
    group."""
    groups, cout = op.groups, op.out_c
    og = cout // groups
    fill(ga, op.in_offset, n * op.in_c * op.in_h * op.in_w)
    for n0 in range(0, n, op.chunk):
        size = min(op.chunk, n - n0)
        for g in range(groups):
            cols, k, per_sample = cols_of(op, g)
            gemm(NOTRANS, NOTRANS, size * per_sample, k, og, ga,
                 op.out_offset + n0 * per_sample * cout + g * og, cout, bmat, b0 + g * og * k,
                 k, ga, cols, k, False, consts)
            col2im(op, ga, n0, size, g)


@njit(**KERNEL)
def _window_taps(pool, width, channels):
    """Offsets of a max-pool window's taps (row-major) from its first pixel, NHWC rows
    of ``width`` pixels of ``channels``."""
    offsets = np.empty(pool.kernel_h * pool.kernel_w, np.int64)
    for i in range(pool.kernel_h):
        for j in range(pool.kernel_w):
            offsets[i * pool.kernel_w + j] = (i * width + j) * channels
    return offsets


@njit(**KERNEL)
def gather_winners(op, act, pool, a, wins, n):
    """z (the activation's input) at every pooling window's winner, into
    ``a[winners_offset]``."""
    cout, ow = op.out_c, op.out_w
    window = _window_taps(pool, ow, cout)
    width, pooled = pool.out_w, pool.out_h * pool.out_w
    rows, cols = pool.stride_h * ow * cout, pool.stride_w * cout
    for q in range(n * pooled):
        nn, within = q // pooled, q % pooled
        corner = act.in_offset + nn * op.out_h * ow * cout + (within // width) * rows + \
            (within % width) * cols
        for o in range(cout):
            tap = wins[U(pool.ints_offset + q * cout + o)]
            a[U(op.winners_offset + q * cout + o)] = a[U(corner + window[tap] + o)]


@njit(**KERNEL)
def conv_backward_routed(op, pool, a, ga, wins, gp, n, bmat, b0, need_dx, consts):
    """:func:`conv_backward` for a conv followed by an activation and max-pool ``pool``
    whose windows' d = g * f'(z, y) at their winners are in ``ga[winners_offset]`` (see
    :func:`window_deltas`): only the winners have a gradient. The weight gradient from
    them alone: each adds d * cols[winner] to its channel's dW' row (and d to its bias),
    windows in order, channels in order. The input gradient as for any conv, from dz:
    zero but d at each winner."""
    cout, oh, ow, groups = op.out_c, op.out_h, op.out_w, op.groups
    og = cout // groups
    k = op.kernel_h * op.kernel_w * (op.in_c // groups)
    fill(gp, op.weight_offset, cout * k)
    b_off = op.bias_offset
    if b_off >= 0:
        fill(gp, b_off, cout)
    if need_dx:
        fill(ga, op.out_offset, n * oh * ow * cout)
    qw, qsh, qsw, width = pool.kernel_w, pool.stride_h, pool.stride_w, pool.out_w
    pooled = pool.out_h * width
    d0, t0, w0 = op.winners_offset, pool.ints_offset, op.weight_offset
    nonzero = np.empty(op.chunk * pooled * cout, np.int64)
    for n0 in range(0, n, op.chunk):
        size = min(op.chunk, n - n0)
        for g in range(groups * (n > op.chunk)):  # else the forward's cols are there
            im2col(op, a, n0, size, g)
        count, first = 0, n0 * pooled * cout
        for m in range(first, (n0 + size) * pooled * cout):  # no branch: d is often 0
            nonzero[count] = m
            count += ga[U(d0 + m)] != 0
        for m in nonzero[:count]:
            q, o = m // cout, m % cout
            d = ga[U(d0 + m)]
            nn, within = q // pooled, q % pooled
            tap = wins[U(t0 + m)]
            at = (nn * oh + (within // width) * qsh + tap // qw) * ow + \
                (within % width) * qsw + tap % qw
            if b_off >= 0:
                gp[U(b_off + o)] += d
            cols, _, per_sample = cols_of(op, o // og)
            axpy(gp, w0 + o * k, d, a, cols + (at - n0 * per_sample) * k, k)
            if need_dx:
                ga[U(op.out_offset + at * cout + o)] += d
    if need_dx:
        input_grad(op, ga, n, bmat, b0, consts)


@njit(**KERNEL)
def window_deltas(op, act, pool, codes, slopes, a, ga, n):
    """d = g * f'(z, y) at every window's winner of the half (z at
    ``a[winners_offset]``, y the pooled output), into ``ga[winners_offset]``."""
    cout, channels, first = op.out_c, act.in_c, act.codes_offset
    count = n * pool.out_h * pool.out_w * cout
    if channels == 1:
        backward_run(codes[first], slopes[first], a, ga, op.winners_offset, pool.out_offset,
                     count)
        return
    for k in range(count):
        code = first + k % cout
        ga[U(op.winners_offset + k)] = ga[U(pool.out_offset + k)] * derivative(
            codes[code], slopes[code], a[U(op.winners_offset + k)], a[U(pool.out_offset + k)])


# -- pools, activations, flatten --------------------------------------------------------


@njit(**KERNEL)
def is_better(value, best):
    """Whether ``value`` replaces ``best`` as a window's first maximum (a NaN wins, as
    argmax): a comparison, for selects rather than branches (the data are random)."""
    return (value > best) | ((value != value) & (best == best))


@njit(**KERNEL)
def pool_forward(op, a, wins, n):
    """Each window's first maximum (a NaN wins, as argmax), channels side by side;
    ``wins`` gets the winning tap (row-major in the window). Windows of four taps (2x2)
    have their taps unrolled, so that the channels vectorize."""
    c, h, w = op.in_c, op.in_h, op.in_w
    oh, ow, kw, taps = op.out_h, op.out_w, op.kernel_w, op.kernel_h * op.kernel_w
    for q in range(n * oh * ow):
        nn, within = q // (oh * ow), q % (oh * ow)
        corner = (nn * h + (within // ow) * op.stride_h) * w + (within % ow) * op.stride_w
        x0, y0, t0 = op.in_offset + corner * c, op.out_offset + q * c, op.ints_offset + q * c
        if taps == 4:
            o1, o2, o3 = (1 // kw * w + 1 % kw) * c, (2 // kw * w + 2 % kw) * c, \
                (3 // kw * w + 3 % kw) * c
            for ch in range(c):
                best, tap = a[U(x0 + ch)], 0
                value = a[U(x0 + o1 + ch)]
                better = is_better(value, best)
                best, tap = (value if better else best), (1 if better else tap)
                value = a[U(x0 + o2 + ch)]
                better = is_better(value, best)
                best, tap = (value if better else best), (2 if better else tap)
                value = a[U(x0 + o3 + ch)]
                better = is_better(value, best)
                best, tap = (value if better else best), (3 if better else tap)
                a[U(y0 + ch)] = best
                wins[U(t0 + ch)] = tap
            continue
        copy(a, y0, a, x0, c)
        for ch in range(c):
            wins[U(t0 + ch)] = 0
        for tap in range(1, taps):
            xt = x0 + ((tap // kw) * w + tap % kw) * c
            for ch in range(c):
                value, best = a[U(xt + ch)], a[U(y0 + ch)]
                better = is_better(value, best)
                a[U(y0 + ch)] = value if better else best
                wins[U(t0 + ch)] = tap if better else wins[U(t0 + ch)]


@njit(**KERNEL)
def pool_backward(op, ga, wins, n):
    """Each window's gradient to its winner (added: overlapping windows share pixels)."""
    c, h, w = op.in_c, op.in_h, op.in_w
    oh, ow, kw = op.out_h, op.out_w, op.kernel_w
    fill(ga, op.in_offset, n * h * w * c)
    for q in range(n * oh * ow):
        nn, within = q // (oh * ow), q % (oh * ow)
        corner = (nn * h + (within // ow) * op.stride_h) * w + (within % ow) * op.stride_w
        for ch in range(c):
            tap = wins[U(op.ints_offset + q * c + ch)]
            at = op.in_offset + (corner + (tap // kw) * w + tap % kw) * c + ch
            ga[U(at)] += ga[U(op.out_offset + q * c + ch)]


@njit(**KERNEL)
def _avg_window(op, q):
    """(sample, first input row, first input column) of average-pool window q."""
    oh, ow = op.out_h, op.out_w
    within = q % (oh * ow)
    return q // (oh * ow), (within // ow) * op.stride_h - op.pad_h, \
        (within % ow) * op.stride_w - op.pad_w


@njit(**KERNEL)
def avg_forward(op, scales, a, n):
    """Each window's inside taps summed in row-major order, over its divisor."""
    c, h, w = op.in_c, op.in_h, op.in_w
    plane = op.out_h * op.out_w
    for q in range(n * plane):
        nn, y, x = _avg_window(op, q)
        y0 = op.out_offset + q * c
        fill(a, y0, c)
        for i in range(max(0, -y), min(op.kernel_h, h - y)):
            for j in range(max(0, -x), min(op.kernel_w, w - x)):
                _add_run(a, y0, a, op.in_offset + ((nn * h + y + i) * w + x + j) * c, c)
        divisor = scales[op.scales_offset + q % plane]
        for ch in range(c):
            a[U(y0 + ch)] = a[U(y0 + ch)] / divisor


@njit(**KERNEL)
def avg_backward(op, scales, ga, n):
    """Each window's gradient over its divisor, added to the window's inside taps."""
    c, h, w = op.in_c, op.in_h, op.in_w
    plane = op.out_h * op.out_w
    fill(ga, op.in_offset, n * h * w * c)
    for q in range(n * plane):
        nn, y, x = _avg_window(op, q)
        divisor = scales[op.scales_offset + q % plane]
        for i in range(max(0, -y), min(op.kernel_h, h - y)):
            for j in range(max(0, -x), min(op.kernel_w, w - x)):
                dst = op.in_offset + ((nn * h + y + i) * w + x + j) * c
                for ch in range(c):
                    ga[U(dst + ch)] += ga[U(op.out_offset + q * c + ch)] / divisor


@njit(**KERNEL)
def act_forward(op, codes, slopes, a, n):
    """y = f_c(z); channels innermost (c = index % in_c: one function when in_c = 1)."""
    count = n * op.in_c * op.in_h * op.in_w
    channels, first = op.in_c, op.codes_offset
    if channels == 1:
        forward_run(codes[first], slopes[first], a, op.in_offset, op.out_offset, count)
        return
    for k in range(count):
        at = first + k % channels
        a[U(op.out_offset + k)] = activate(codes[at], slopes[at], a[U(op.in_offset + k)])


@njit(**KERNEL)
def act_backward(op, codes, slopes, a, ga, n):
    """dz = dy * f_c'(z, y)."""
    count = n * op.in_c * op.in_h * op.in_w
    channels, first = op.in_c, op.codes_offset
    x0, y0 = op.in_offset, op.out_offset
    if channels == 1:
        backward_run(codes[first], slopes[first], a, ga, x0, y0, count)
        return
    for k in range(count):
        at = first + k % channels
        ga[U(x0 + k)] = ga[U(y0 + k)] * derivative(codes[at], slopes[at], a[U(x0 + k)],
                                                   a[U(y0 + k)])


@njit(**KERNEL)
def _reorder(op, v, n, to_reference):
    """Each sample's (H, W, C) values at ``op.in_offset`` <-> its (C, H, W) values at
    ``op.out_offset`` (``to_reference``: the first into the second, else back)."""
    c, plane = op.in_c, op.in_h * op.in_w
    for nn in range(n):
        x0, y0 = op.in_offset + nn * plane * c, op.out_offset + nn * plane * c
        for at in range(plane):
            for ch in range(c):
                nhwc, chw = x0 + at * c + ch, y0 + ch * plane + at
                if to_reference:
                    v[U(chw)] = v[U(nhwc)]
                else:
                    v[U(nhwc)] = v[U(chw)]


@njit(**KERNEL)
def flat_forward(op, a, n):
    """(n, H, W, C) -> (n, C*H*W) in the reference's (C, H, W) order."""
    _reorder(op, a, n, True)


@njit(**KERNEL)
def flat_backward(op, ga, n):
    """The gradient back: (n, C*H*W) -> (n, H, W, C)."""
    _reorder(op, ga, n, False)


# -- dense ------------------------------------------------------------------------------


@njit(**KERNEL)
def dense_forward(op, a, p, n, consts):
    """y (n, O) = x (n, D) @ W^T + b."""
    d, o = op.in_c, op.out_c
    gemm(NOTRANS, TRANS, n, o, d, a, op.in_offset, d, p, op.weight_offset, d, a,
         op.out_offset, o, False, consts)
    if op.bias_offset >= 0:
        add_bias(a, op.out_offset, n, o, p, op.bias_offset)


@njit(**KERNEL)
def dense_backward(op, a, ga, gp, n, bmat, b0, need_dx, consts):
    """dW = dy^T @ x, db = column sums of dy, and if ``need_dx`` dx = dy @ B
    (``bmat[b0:]``: W, or the rule's feedback matrix)."""
    d, o = op.in_c, op.out_c
    gemm(TRANS, NOTRANS, o, d, n, ga, op.out_offset, o, a, op.in_offset, d, gp,
         op.weight_offset, d, False, consts)
    if op.bias_offset >= 0:
        bias_grad(ga, op.out_offset, n, o, gp, op.bias_offset)
    if need_dx:
        gemm(NOTRANS, NOTRANS, n, d, o, ga, op.out_offset, o, bmat, b0, d, ga, op.in_offset,
             d, False, consts)
