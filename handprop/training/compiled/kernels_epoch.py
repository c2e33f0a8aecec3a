"""The compiled epoch: every step of every replica, forward, rule-aware backward, update.

:func:`train_epoch` runs a range of replicas without the GIL; the driver gives each of
its threads its own range. Each replica's steps run in order on one thread, over its
own rows of every array, so a replica's numbers never depend on the thread count or on
the other replicas in the call.
"""

from __future__ import annotations

import math

from numba import njit

from .adapter import FB_MATRIX, FB_SIGN_SCALE, FB_WEIGHT
from .kernels_conv import conv_backward, conv_forward
from .kernels_dense import copy, dense_backward, dense_forward, fill
from .kernels_elementwise import act_backward, act_forward, loss, update
from .kernels_norm import avg_backward, avg_forward, bn_backward, bn_forward
from .kernels_pool import pool_backward, pool_forward
from .plan import (
    ACT,
    ASRUN_TRUE,
    AVG,
    B_OFF,
    BN,
    BORROW_OFF,
    CONV,
    DENSE,
    FB_KIND,
    FB_OFF,
    FW_OFF,
    GROUPS,
    INJECT,
    INJECT_OFF,
    KH,
    KIND,
    KW,
    NEED_DX,
    OUT_OFF,
    OUT_SIZE,
    POOL,
    SCALE,
    W_OFF,
    W_OSTRIDE,
    C,
    O,
)

# Scalars of the plan, packed in one int64 array (see engine.py).
(LOWEST, SCRATCH, IN_SIZE, CLASSES, ERROR_OFF, ERROR_SIZE, LOSS, MEAN, OPTIMIZER, REDRAWS,
 BATCH, COUNT, WORK) = range(13)
SETTINGS = 13


@njit(cache=True, nogil=True, error_model="numpy")
def _forward(ops, codes, slopes, scales, p, q, a, wins, nb, work):
    for layer in range(ops.shape[0]):
        op = ops[layer]
        kind = op[KIND]
        if kind == AVG:
            avg_forward(op, scales, a, nb)
        elif kind == BN:
            bn_forward(op, scales, p, q, a, nb)
        elif kind == CONV:
            conv_forward(op, p, a, nb, work)
        elif kind == DENSE:
            dense_forward(op, p, a, nb)
        elif kind == POOL:
            pool_forward(op, a, wins, nb)
        elif kind == ACT:
            act_forward(op, codes, slopes, a, nb)


@njit(cache=True, nogil=True, error_model="numpy")
def _feedback_weights(op, scales, p, fb, magnitudes, a, scratch):
    """Where this layer's input gradient goes back through: (array, offset)."""
    kind = op[FB_KIND]
    if kind == FB_WEIGHT:
        return p, op[W_OFF]
    if kind == FB_MATRIX:
        return fb, op[FB_OFF]
    w0, m0 = op[W_OFF], op[FB_OFF]
    for k in range(_weight_size(op)):
        w = p[w0 + k]
        sign = 1.0 if w > 0 else (-1.0 if w < 0 else (0.0 if w == 0 else w))
        scale = scales[op[SCALE]] if kind == FB_SIGN_SCALE else magnitudes[m0 + k]
        a[scratch + k] = scale * sign
    return a, scratch


@njit(cache=True, nogil=True, error_model="numpy")
def _weight_size(op):
    if op[KIND] == CONV:
        return op[O] * (op[C] // op[GROUPS]) * op[KH] * op[KW]
    return op[O] * op[C]


@njit(cache=True, nogil=True, error_model="numpy")
def _inject(op, fb, ga, settings, nb):
    """DFA: this layer's output gradient is the output error e times B (K x D)."""
    classes, size = settings[ERROR_SIZE], op[OUT_SIZE]
    e0, b0, g0 = settings[ERROR_OFF], op[INJECT_OFF], op[OUT_OFF]
    for n in range(nb):
        for d in range(size):
            total = 0.0
            for k in range(classes):
                total += ga[e0 + n * classes + k] * fb[b0 + k * size + d]
            ga[g0 + n * size + d] = total


@njit(cache=True, nogil=True, error_model="numpy")
def _backward(ops, codes, slopes, scales, settings, p, fb, magnitudes, a, ga, wins, gp, nb):
    scratch, work = settings[SCRATCH], settings[WORK]
    flowing = True  # whether a gradient arrives at this layer's output
    for layer in range(ops.shape[0] - 1, settings[LOWEST] - 1, -1):
        op = ops[layer]
        kind = op[KIND]
        if op[INJECT] != 0:
            _inject(op, fb, ga, settings, nb)
            flowing = True
        if not flowing:
            if kind == BN and op[W_OFF] >= 0:
                fill(gp, op[W_OFF], op[C])
                fill(gp, op[B_OFF], op[C])
            if kind in (CONV, DENSE):  # the rule left it alone: no update
                fill(gp, op[W_OFF], _weight_size(op))
                if op[B_OFF] >= 0:
                    fill(gp, op[B_OFF], op[O])
                if op[ASRUN_TRUE] != 0:
                    fill(a, op[BORROW_OFF], _weight_size(op) // op[O])
            continue
        if kind == DENSE:
            weights, w0 = _feedback_weights(op, scales, p, fb, magnitudes, a, scratch)
            dense_backward(op, weights, w0, a, ga, gp, nb, op[NEED_DX] != 0)
            flowing = op[NEED_DX] != 0
        elif kind == CONV:
            if op[ASRUN_TRUE] != 0:  # the true gradient: through the borrowed kernel
                conv_backward(op, p, op[FW_OFF], op[W_OSTRIDE], a, ga, gp, nb, work,
                              op[NEED_DX] != 0)
                borrowed_grad(op, gp, a)
            else:
                weights, w0 = _feedback_weights(op, scales, p, fb, magnitudes, a, scratch)
                conv_backward(op, weights, w0, _weight_size(op) // op[O], a, ga, gp, nb,
                              work, op[NEED_DX] != 0)
            flowing = op[NEED_DX] != 0
        elif kind == POOL:
            pool_backward(op, codes, a, ga, wins, nb, a, work)
        elif kind == ACT:
            act_backward(op, codes, slopes, a, ga, nb)
        elif kind == AVG:
            avg_backward(op, scales, ga, nb)
        elif kind == BN:
            bn_backward(op, p, a, ga, gp, nb, op[NEED_DX] != 0)
    add_borrowed(ops, gp, a)


@njit(cache=True, nogil=True, error_model="numpy")
def borrowed_grad(op, gp, a):
    """An as-run layer's true gradient: dL/dK = sum over outputs of the per-output
    kernel gradients (kept in ``a[BORROW_OFF:]`` until the lender's own is known), and 0
    for the layer's own W."""
    kernel = _weight_size(op) // op[O]
    w0, k0 = op[W_OFF], op[BORROW_OFF]
    for t in range(kernel):
        total = gp[w0 + t]
        for o in range(1, op[O]):
            total += gp[w0 + o * kernel + t]
        a[k0 + t] = total
    fill(gp, w0, _weight_size(op))


@njit(cache=True, nogil=True, error_model="numpy")
def add_borrowed(ops, gp, a):
    """Add each as-run layer's dL/dK to its lender's gradient (the lender sits lower, so
    its own gradient is complete only now)."""
    for layer in range(ops.shape[0]):
        op = ops[layer]
        if op[KIND] == CONV and op[ASRUN_TRUE] != 0:
            for t in range(_weight_size(op) // op[O]):
                gp[op[FW_OFF] + t] += a[op[BORROW_OFF] + t]


@njit(cache=True, nogil=True, error_model="numpy")
def train_replica(r, ops, codes, slopes, scales, settings, flat, state1, state2, buffers,
                  hyper, corrections, x, y, sizes, fb, drawn, arena, garena, ints, gflat, cost,
                  bad, first, steps):
    """Steps ``first .. first + steps - 1`` of the epoch for replica r."""
    p, a, ga, wins, gp, q = flat[r], arena[r], garena[r], ints[r], gflat[r], buffers[r]
    batch, count, in_size = settings[BATCH], settings[COUNT], settings[IN_SIZE]
    out0 = ops[ops.shape[0] - 1, OUT_OFF]
    scratch = settings[SCRATCH]
    for step in range(first, first + steps):
        start = step * batch
        if sizes[r] <= start:  # frozen: this replica's data has run out
            continue
        nb = min(batch, count - start)
        copy(a, 0, x[r], start * in_size, nb * in_size)
        _forward(ops, codes, slopes, scales, p, q, a, wins, nb, settings[WORK])
        value = loss(settings[LOSS], settings[MEAN] != 0, a, ga, out0, y[r], start, nb,
                     settings[CLASSES])
        a[scratch] = value  # the reference's value is in the network's dtype
        value = a[scratch]
        cost[r] += value
        if not math.isfinite(value) and bad[r] == 0:
            bad[r] = step + 1
        magnitudes = drawn[r, step - first] if settings[REDRAWS] != 0 else fb[r]
        _backward(ops, codes, slopes, scales, settings, p, fb[r], magnitudes, a, ga, wins, gp,
                  nb)
        update(settings[OPTIMIZER], p, gp, state1[r], state2[r], hyper, corrections[step, 0],
               corrections[step, 1])


@njit(cache=True, nogil=True, error_model="numpy")
def train_epoch(ops, codes, slopes, scales, settings, flat, state1, state2, buffers, hyper,
                corrections, x, y, sizes, fb, drawn, arena, garena, ints, gflat, cost, bad,
                first, steps, r0, r1):
    """:func:`train_replica` for replicas r0 .. r1 - 1, one after another (threads run
    disjoint ranges side by side: the GIL is released)."""
    for r in range(r0, r1):
        train_replica(r, ops, codes, slopes, scales, settings, flat, state1, state2, buffers,
                      hyper, corrections, x, y, sizes, fb, drawn, arena, garena, ints, gflat,
                      cost, bad, first, steps)
