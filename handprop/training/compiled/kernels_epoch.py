"""The compiled epoch: every step of every row, forward, the rule's backward, update.

Written once against the slot API (:mod:`.slots`), for both layouts: a *row* is one
replica (per-replica layout) or a block of eight (lane layout), and each op of the
plan's table runs on it through the dispatch below (the one place that names every
op's kernels). The backward walk, the choice of B, DFA's injection, the zero-fill where
no gradient arrives and the borrowed-kernel bookkeeping are written here once.

:func:`train_epoch` runs a range of rows without the GIL; the driver gives each of its
threads its own range. A row's steps run in order on one thread, over its own arrays,
so its numbers never depend on the thread count or on the other rows in the call.
"""

from __future__ import annotations

import math

from numba import njit

from .kernels_activation import ACT, act_backward, act_forward
from .kernels_conv import CONV, conv_backward, conv_forward
from .kernels_dense import DENSE, dense_backward, dense_forward
from .kernels_norm import AVG, BN, avg_backward, avg_forward, bn_backward, bn_forward
from .kernels_pool import POOL, pool_backward, pool_forward
from .kernels_scale import SCALE, scale_backward, scale_forward
from .kernels_step import batch_loss, update
from .plan import FROM_NOTHING, FROM_WEIGHT
from .slots import (
    KERNEL,
    add,
    any_lane,
    copy,
    fill,
    get,
    kept,
    lane,
    load,
    mul,
    muladd,
    put,
    row,
    sign,
    splat,
    store,
    taking,
    width,
    zero,
)


@njit(**KERNEL)
def forward(tables, p, q, a, wins, nb, work, keep):
    """Every layer's forward pass, in order (``keep``: the lanes taking the step, whose
    running statistics move)."""
    ops = tables.ops
    for layer in range(ops.shape[0]):
        op = ops[layer]
        kind = op.kind
        if kind == CONV:
            conv_forward(op, p, a, nb, work)
        elif kind == DENSE:
            dense_forward(op, p, a, nb)
        elif kind == POOL:
            pool_forward(op, a, wins, nb)
        elif kind == ACT:
            act_forward(op, tables.codes, tables.slopes, a, nb)
        elif kind == AVG:
            avg_forward(op, tables.scales, a, nb)
        elif kind == BN:
            bn_forward(op, tables.scales, p, q, a, nb, keep)
        elif kind == SCALE:
            scale_forward(op, p, a, nb)


@njit(**KERNEL)
def feedback_weights(op, scales, p, fixed, drawn, a, scratch):
    """B, what this weight layer's input gradient goes back through, as (array, offset):
    W itself, the rule's matrix M, or ``scale * M * base(W)`` formed in ``a[scratch:]``
    (see :class:`handprop.rules.backward.Feedback`)."""
    base, m0, scaled = op.feedback_base, op.feedback_offset, op.feedback_scale >= 0
    if base == FROM_WEIGHT and m0 < 0 and not scaled:
        return p, op.weight_offset
    matrix = drawn if op.feedback_redrawn != 0 else fixed
    if base == FROM_NOTHING and not scaled:
        return matrix, m0
    for k in range(op.weight_size):
        w = load(p, op.weight_offset + k)
        b = w if base == FROM_WEIGHT else sign(w)
        if m0 >= 0:
            b = load(matrix, m0 + k) if base == FROM_NOTHING else mul(load(matrix, m0 + k), b)
        if scaled:
            b = mul(splat(scales[op.feedback_scale], b), b)
        store(a, scratch + k, b)
    return a, scratch


@njit(**KERNEL)
def inject(op, fixed, ga, settings, nb):
    """DFA: this layer's output gradient is the output error e times B (K x D)."""
    classes, size = settings.error_size, op.out_size
    e0, b0, g0 = settings.error_offset, op.inject_offset, op.out_offset
    for n in range(nb):
        for d in range(size):
            total = zero(ga)
            for k in range(classes):
                total = muladd(total, load(ga, e0 + n * classes + k),
                               load(fixed, b0 + k * size + d))
            store(ga, g0 + n * size + d, total)


@njit(**KERNEL)
def borrowed_grad(op, gp, a):
    """A borrowed kernel's true gradient: dL/dK = sum over outputs of the per-output
    kernel gradients (kept in ``a[borrow_offset:]`` until the lender's own is known), and
    0 for the layer's own W."""
    kernel, w0, k0 = op.borrow_size, op.weight_offset, op.borrow_offset
    for t in range(kernel):
        grad = load(gp, w0 + t)
        for o in range(1, op.out_c):
            grad = add(grad, load(gp, w0 + o * kernel + t))
        store(a, k0 + t, grad)
    fill(gp, w0, op.weight_size)


@njit(**KERNEL)
def add_borrowed(ops, gp, a):
    """Add each borrowed kernel's gradient to its lender's (the lender sits lower, so its
    own gradient is complete only now)."""
    for layer in range(ops.shape[0]):
        op = ops[layer]
        if op.borrow_offset >= 0:
            for t in range(op.borrow_size):
                at = op.kernel_offset + t
                store(gp, at, add(load(gp, at), load(a, op.borrow_offset + t)))


@njit(**KERNEL)
def backward(tables, settings, p, fixed, drawn, a, ga, wins, gp, nb):
    """Every layer's backward pass, from the last down to the lowest with parameters;
    a layer no gradient reaches (DFA) gets a zero gradient."""
    ops, scratch, work = tables.ops, settings.scratch, settings.work
    flowing = True  # whether a gradient arrives at this layer's output
    for layer in range(ops.shape[0] - 1, settings.lowest - 1, -1):
        op = ops[layer]
        if op.inject_offset >= 0:
            inject(op, fixed, ga, settings, nb)
            flowing = True
        if not flowing:  # the rule left it alone: no update
            fill(gp, op.params_offset, op.params_size)
            fill(a, op.borrow_offset, op.borrow_size)
            continue
        kind, need_dx = op.kind, op.sends_grad != 0
        if kind == CONV and op.borrow_offset >= 0:  # the true gradient: the borrowed kernel
            conv_backward(op, p, op.kernel_offset, op.kernel_stride, a, ga, gp, nb, work,
                          need_dx)
            borrowed_grad(op, gp, a)
        elif kind == CONV:
            weights, w0 = feedback_weights(op, tables.scales, p, fixed, drawn, a, scratch)
            conv_backward(op, weights, w0, op.weight_size // op.out_c, a, ga, gp, nb, work,
                          need_dx)
        elif kind == DENSE:
            weights, w0 = feedback_weights(op, tables.scales, p, fixed, drawn, a, scratch)
            dense_backward(op, weights, w0, a, ga, gp, nb, need_dx)
        elif kind == POOL:
            pool_backward(op, tables.codes, a, ga, wins, nb, work)
        elif kind == ACT:
            act_backward(op, tables.codes, tables.slopes, a, ga, nb)
        elif kind == AVG:
            avg_backward(op, tables.scales, ga, nb)
        elif kind == BN:
            bn_backward(op, p, a, ga, gp, nb, need_dx)
        elif kind == SCALE:
            scale_backward(op, p, a, ga, gp, nb, need_dx)
        flowing = need_dx
    add_borrowed(ops, gp, a)


@njit(**KERNEL)
def train_row(r, tables, settings, model, work, epoch, first, steps):
    """Steps ``first .. first + steps - 1`` of the epoch for row r (a replica, or a block
    of eight whose lanes that have run out of data compute but change nothing)."""
    p, s1, s2 = row(model.flat, r), row(model.state1, r), row(model.state2, r)
    q, fixed = row(model.buffers, r), row(model.fixed, r)
    a, ga, wins, gp = row(work.arena, r), row(work.garena, r), row(work.ints, r), row(work.gflat, r)
    x, y, drawn = row(epoch.x, r), row(epoch.y, r), row(epoch.drawn, r)
    out0 = tables.ops[tables.ops.shape[0] - 1].out_offset
    batch, count, in_size = settings.batch, settings.count, settings.in_size
    for step in range(first, first + steps):
        start = step * batch
        keep = taking(a, epoch.sizes, r, start)
        if not any_lane(keep):  # frozen: the data has run out
            continue
        keep = kept(keep)
        nb = min(batch, count - start)
        copy(a, 0, x, start * in_size, nb * in_size)
        forward(tables, p, q, a, wins, nb, settings.work, keep)
        for at in range(width(a)):
            value = batch_loss(settings.loss, settings.mean != 0, a, ga, out0, y, start, nb,
                               settings.classes, at)
            put(a, settings.scratch, at, value)  # the reference's value is in the dtype
            value = get(a, settings.scratch, at)
            replica = r * width(a) + at
            if lane(keep, at):
                epoch.cost[replica] += value
                if not math.isfinite(value) and epoch.bad[replica] == 0:
                    epoch.bad[replica] = step + 1
        matrices = row(drawn, step - first) if settings.redraws != 0 else fixed
        backward(tables, settings, p, fixed, matrices, a, ga, wins, gp, nb)
        update(settings.optimizer, p, gp, s1, s2, epoch.hyper, epoch.corrections[step, 0],
               epoch.corrections[step, 1], keep)


@njit(**KERNEL)
def train_epoch(tables, settings, model, work, epoch, first, steps, r0, r1):
    """:func:`train_row` for rows r0 .. r1 - 1, one after another (threads run disjoint
    ranges side by side: the GIL is released)."""
    for r in range(r0, r1):
        train_row(r, tables, settings, model, work, epoch, first, steps)
