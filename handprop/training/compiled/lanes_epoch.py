"""The compiled epoch in the lane layout: eight replicas per block, step by step.

The twin of :mod:`.kernels_epoch` (same plan, same settings): each block runs every
step of the epoch for its eight lanes at once. A lane whose replica has run out of
data (frozen), or that holds no replica (padding), still computes, but its parameters,
optimizer state, cost and bad step are never written: each is selected per lane. No
operation mixes lanes, so a NaN in one replica stays there.
"""

from __future__ import annotations

import math

from numba import njit

from .adapter import FB_MATRIX, FB_SIGN_SCALE, FB_WEIGHT
from .kernels_elementwise import BCE_EPS
from .kernels_epoch import (
    BATCH,
    CLASSES,
    COUNT,
    ERROR_OFF,
    ERROR_SIZE,
    IN_SIZE,
    LOSS,
    LOWEST,
    MEAN,
    OPTIMIZER,
    REDRAWS,
    SCRATCH,
    WORK,
    _weight_size,
)
from .lanes import JIT, U, vadd, vcopy, vfill, vload, vmuladd, vsel, vstore, vzero
from .lanes_ops import (
    act_backward,
    act_forward,
    conv_backward,
    conv_bias_grad,
    conv_forward,
    dense_backward,
    dense_forward,
    pool_backward,
    pool_forward,
    rotate_maps,
)
from .plan import (
    ACT,
    ADAM,
    ASRUN_TRUE,
    B_OFF,
    BCE,
    BORROW_OFF,
    CONV,
    DENSE,
    FB_KIND,
    FB_OFF,
    FW_OFF,
    IN_OFF,
    INJECT,
    INJECT_OFF,
    KIND,
    L2,
    MOMENTUM,
    NEED_DX,
    NESTEROV,
    OH,
    OUT_OFF,
    OUT_SIZE,
    OW,
    POOL,
    ROT_DX,
    ROT_W,
    SCALE,
    SGD,
    W_OFF,
    W_OSTRIDE,
    C,
    H,
    O,
    W,
)


@njit(**JIT)
def _forward(ops, codes, slopes, p, a, wins, nb, work):
    for layer in range(ops.shape[0]):
        op = ops[layer]
        kind = op[KIND]
        if kind == CONV:
            conv_forward(op, p, a, nb, work)
        elif kind == DENSE:
            dense_forward(op, p, a, nb)
        elif kind == POOL:
            pool_forward(op, a, wins, nb)
        elif kind == ACT:
            act_forward(op, codes, slopes, a, nb)


@njit(**JIT)
def _sign(w):
    return 1.0 if w > 0 else (-1.0 if w < 0 else (0.0 if w == 0 else w))


@njit(**JIT)
def _feedback_weights(op, scales, p, fb, magnitudes, a, scratch):
    """kernels_epoch._feedback_weights, lane by lane."""
    kind = op[FB_KIND]
    if kind == FB_WEIGHT:
        return p, op[W_OFF]
    if kind == FB_MATRIX:
        return fb, op[FB_OFF]
    w0, m0 = op[W_OFF], op[FB_OFF]
    for k in range(_weight_size(op)):
        for lane in range(8):
            sign = _sign(p[U((w0 + k) * 8 + lane)])
            if kind == FB_SIGN_SCALE:
                scale = scales[op[SCALE]]
            else:
                scale = magnitudes[U((m0 + k) * 8 + lane)]
            a[U((scratch + k) * 8 + lane)] = scale * sign
    return a, scratch


@njit(**JIT)
def _inject(op, fb, ga, settings, nb):
    """DFA: this layer's output gradient is the output error e times B (K x D)."""
    classes, size = settings[ERROR_SIZE], op[OUT_SIZE]
    e0, b0, g0 = settings[ERROR_OFF], op[INJECT_OFF], op[OUT_OFF]
    for n in range(nb):
        for d in range(size):
            total = vzero()
            for k in range(classes):
                error = vload(ga, e0 + n * classes + k)
                total = vmuladd(total, error, vload(fb, b0 + k * size + d))
            vstore(ga, g0 + n * size + d, total)


@njit(**JIT)
def _conv_backward(op, weights, w0, wstride, a, ga, gp, nb, work, need_dx):
    """kernels_conv.conv_backward: bias, rotations, weight and input gradients (with
    rot180(delta) for the weights: one pass with delta rotated, one for dx)."""
    if op[B_OFF] >= 0:
        conv_bias_grad(op, ga, gp, nb)
    plane_out = op[OH] * op[OW]
    rotated = op[ROT_W] != 0
    passes = 2 if rotated and need_dx else 1
    for part in range(passes):  # flags computed here, not literals: one compiled version
        grads = part == 0
        dx = need_dx and (part == 1 or not rotated)
        if rotated and grads:
            rotate_maps(ga, op[OUT_OFF], nb * op[O], plane_out)
        conv_backward(op, weights, w0, wstride, a, ga, gp, nb, work, grads, dx)
        if rotated and grads:
            rotate_maps(ga, op[OUT_OFF], nb * op[O], plane_out)
    if need_dx and op[ROT_DX] != 0:
        rotate_maps(ga, op[IN_OFF], nb * op[C], op[H] * op[W])


@njit(**JIT)
def _borrowed_grad(op, gp, a):
    """kernels_epoch.borrowed_grad."""
    kernel = _weight_size(op) // op[O]
    w0, k0 = op[W_OFF], op[BORROW_OFF]
    for t in range(kernel):
        total = vload(gp, w0 + t)
        for o in range(1, op[O]):
            total = vadd(total, vload(gp, w0 + o * kernel + t))
        vstore(a, k0 + t, total)
    vfill(gp, w0, _weight_size(op))


@njit(**JIT)
def _add_borrowed(ops, gp, a):
    for layer in range(ops.shape[0]):
        op = ops[layer]
        if op[KIND] == CONV and op[ASRUN_TRUE] != 0:
            for t in range(_weight_size(op) // op[O]):
                at = op[FW_OFF] + t
                vstore(gp, at, vadd(vload(gp, at), vload(a, op[BORROW_OFF] + t)))


@njit(**JIT)
def _backward(ops, codes, slopes, scales, settings, p, fb, magnitudes, a, ga, wins, gp, nb):
    """kernels_epoch._backward, lane by lane."""
    scratch, work = settings[SCRATCH], settings[WORK]
    flowing = True
    for layer in range(ops.shape[0] - 1, settings[LOWEST] - 1, -1):
        op = ops[layer]
        kind = op[KIND]
        if op[INJECT] != 0:
            _inject(op, fb, ga, settings, nb)
            flowing = True
        if not flowing:
            if kind in (CONV, DENSE):
                vfill(gp, op[W_OFF], _weight_size(op))
                if op[B_OFF] >= 0:
                    vfill(gp, op[B_OFF], op[O])
                if op[ASRUN_TRUE] != 0:
                    vfill(a, op[BORROW_OFF], _weight_size(op) // op[O])
            continue
        need_dx = op[NEED_DX] != 0
        if kind == DENSE:
            weights, w0 = _feedback_weights(op, scales, p, fb, magnitudes, a, scratch)
            dense_backward(op, weights, w0, a, ga, gp, nb, need_dx)
            flowing = need_dx
        elif kind == CONV:
            if op[ASRUN_TRUE] != 0:
                _conv_backward(op, p, op[FW_OFF], op[W_OSTRIDE], a, ga, gp, nb, work, need_dx)
                _borrowed_grad(op, gp, a)
            else:
                weights, w0 = _feedback_weights(op, scales, p, fb, magnitudes, a, scratch)
                _conv_backward(op, weights, w0, _weight_size(op) // op[O], a, ga, gp, nb, work,
                               need_dx)
            flowing = need_dx
        elif kind == POOL:
            pool_backward(op, codes, a, ga, wins, nb, work)
        elif kind == ACT:
            act_backward(op, codes, slopes, a, ga, nb)
    _add_borrowed(ops, gp, a)


@njit(**JIT)
def _max_row(a, start, count, lane):
    best = a[U(start * 8 + lane)]
    for k in range(start + 1, start + count):
        value = a[U(k * 8 + lane)]
        if value != value or value > best:
            best = value
            if value != value:
                break
    return best


@njit(**JIT)
def _loss(kind, mean, a, ga, out0, y, row0, nb, classes, lane):
    """kernels_elementwise.loss for one lane (``y``: the block's targets, lane layout)."""
    scale = 1.0 / nb if mean else 1.0
    total = 0.0
    for n in range(nb):
        total = sample_loss(kind, mean, a, ga, out0 + n * classes, y, (row0 + n) * classes,
                            classes, lane, scale, total)
    if kind == L2:
        return 0.5 * scale * total
    return -scale * total


@njit(inline="always", **JIT)
def sample_loss(kind, mean, a, ga, p0, y, t0, classes, lane, scale, total):
    """One sample's loss terms in one lane, added to ``total`` in kernels_elementwise.loss's
    order (its predictions at ``a[p0 ..]``, targets at ``y[t0 ..]``), and its output
    gradient into ``ga`` (times ``scale`` where the reduction is a mean)."""
    if kind == L2:
        for k in range(classes):
            at = U((p0 + k) * 8 + lane)
            diff = a[at] - y[U((t0 + k) * 8 + lane)]
            total += diff * diff
            ga[at] = diff * scale if mean else diff
    elif kind == BCE:
        for k in range(classes):
            at = U((p0 + k) * 8 + lane)
            prob, target = a[at], y[U((t0 + k) * 8 + lane)]
            log_p = math.log(prob) if prob > 0 else (-math.inf if prob == 0 else math.nan)
            log_q = math.log1p(-prob)
            log_p = -100.0 if log_p < -100.0 else log_p
            log_q = -100.0 if log_q < -100.0 else log_q
            total += target * log_p + (1 - target) * log_q
            bound = prob * (1 - prob)
            bound = BCE_EPS if bound < BCE_EPS else bound
            ga[at] = scale * (prob - target) / bound
    else:
        shift = _max_row(a, p0, classes, lane)
        norm = 0.0
        for k in range(classes):
            norm += math.exp(a[U((p0 + k) * 8 + lane)] - shift)
        log_norm = math.log(norm)
        for k in range(classes):
            at = U((p0 + k) * 8 + lane)
            log_prob = (a[at] - shift) - log_norm
            target = y[U((t0 + k) * 8 + lane)]
            total += target * log_prob
            grad = math.exp(log_prob) - target
            ga[at] = grad * scale if mean else grad
    return total


@njit(**JIT)
def _scaled(s, v):
    return (s * v[0], s * v[1], s * v[2], s * v[3], s * v[4], s * v[5], s * v[6], s * v[7])


@njit(**JIT)
def _times(v, s):
    return (v[0] * s, v[1] * s, v[2] * s, v[3] * s, v[4] * s, v[5] * s, v[6] * s, v[7] * s)


@njit(**JIT)
def _sub(u, v):
    return (u[0] - v[0], u[1] - v[1], u[2] - v[2], u[3] - v[3], u[4] - v[4], u[5] - v[5],
            u[6] - v[6], u[7] - v[7])


@njit(**JIT)
def _adam(p, m, v, g, lr, beta1, rest1, beta2, rest2, eps, c1, c2):
    """One lane of kernels_elementwise.update's Adam: (p, m, v) after the step."""
    m = m * beta1 + rest1 * g
    v = v * beta2 + rest2 * g * g
    return p - lr * (m / c1) / (math.sqrt(v / c2) + eps), m, v


@njit(**JIT)
def _update(kind, p, g, s1, s2, hyper, c1, c2, keep):
    """kernels_elementwise.update on the lanes in ``keep``; the others stay as they are."""
    lr, mom, decay = hyper[0], hyper[1], hyper[2]
    size = p.shape[0] // 8
    if decay != 0:
        for k in range(size):
            vstore(g, k, vadd(vload(g, k), _scaled(decay, vload(p, k))))
    if kind == SGD:
        for k in range(size):
            old = vload(p, k)
            vstore(p, k, vsel(keep, _sub(old, _scaled(lr, vload(g, k))), old))
    elif kind == MOMENTUM:
        for k in range(size):
            old, vel = vload(p, k), vload(s1, k)
            new = vadd(_times(vel, mom), _times(vload(g, k), lr))
            vstore(s1, k, vsel(keep, new, vel))
            vstore(p, k, vsel(keep, _sub(old, new), old))
    elif kind == NESTEROV:
        for k in range(size):
            old, buf, grad = vload(p, k), vload(s1, k), vload(g, k)
            new = vadd(_times(buf, mom), grad)
            vstore(s1, k, vsel(keep, new, buf))
            vstore(p, k, vsel(keep, _sub(old, _scaled(lr, vadd(grad, _scaled(mom, new)))), old))
    elif kind == ADAM:
        for k in range(size):
            for lane in range(8):
                if keep[lane]:
                    i = U(k * 8 + lane)
                    p[i], s1[i], s2[i] = _adam(p[i], s1[i], s2[i], g[i], lr, hyper[3],
                                               hyper[4], hyper[5], hyper[6], hyper[7], c1, c2)


@njit(**JIT)
def _lanes_taking(sizes, b, start):
    """Which lanes of block b take the step that starts at sample ``start``."""
    i = b * 8
    return (sizes[i] > start, sizes[i + 1] > start, sizes[i + 2] > start, sizes[i + 3] > start,
            sizes[i + 4] > start, sizes[i + 5] > start, sizes[i + 6] > start,
            sizes[i + 7] > start)


@njit(**JIT)
def train_block(b, ops, codes, slopes, scales, settings, flat, state1, state2, hyper,
                corrections, x, y, sizes, fb, drawn, arena, garena, ints, gflat, cost, bad,
                first, steps):
    """Steps ``first .. first + steps - 1`` of the epoch for the eight lanes of block b."""
    p, a, ga, wins, gp = flat[b], arena[b], garena[b], ints[b], gflat[b]
    batch, count, in_size = settings[BATCH], settings[COUNT], settings[IN_SIZE]
    out0 = ops[ops.shape[0] - 1, OUT_OFF]
    for step in range(first, first + steps):
        start = step * batch
        keep = _lanes_taking(sizes, b, start)
        if not (keep[0] or keep[1] or keep[2] or keep[3] or keep[4] or keep[5] or keep[6]
                or keep[7]):
            continue
        nb = min(batch, count - start)
        vcopy(a, 0, x[b], start * in_size, nb * in_size)
        _forward(ops, codes, slopes, p, a, wins, nb, settings[WORK])
        for lane in range(8):
            value = _loss(settings[LOSS], settings[MEAN] != 0, a, ga, out0, y[b], start, nb,
                          settings[CLASSES], lane)
            r = b * 8 + lane
            if keep[lane]:
                cost[r] += value
                if not math.isfinite(value) and bad[r] == 0:
                    bad[r] = step + 1
        magnitudes = drawn[b, step - first] if settings[REDRAWS] != 0 else fb[b]
        _backward(ops, codes, slopes, scales, settings, p, fb[b], magnitudes, a, ga, wins, gp,
                  nb)
        _update(settings[OPTIMIZER], p, gp, state1[b], state2[b], hyper, corrections[step, 0],
                corrections[step, 1], keep)
