"""A minibatch step in the batched layout: prepare, two half-batches, finish.

One step of one replica:

1. :func:`prepare` forms what both halves read: conv weights permuted to (O, KH, KW,
   C/groups) (the column order of im2col's rows), and B where it is not W -- formed by
   the engine's :func:`~.kernels_epoch.feedback_weights` from the rule's description,
   then laid out as the layer's kernels read it.
2. :func:`half_pass` runs forward, loss and backward on the first ``nb // 2`` samples,
   then again on the rest, each into its own gradient buffer. The halves share nothing
   they write, so two threads can run them side by side.
3. :func:`finish` adds the halves' gradients (in that order, and back to the reference
   layout), lets a learning B take its step (:func:`~.kernels_step.learn`), and takes
   the optimizer's (:func:`~.kernels_step.update`).

The loss terms are :func:`~.kernels_step.sample_loss`'s, the activations
:mod:`.kernels_activation`'s runs: the arithmetic of the engine's other layouts.
:func:`train_batched` runs the steps of a range of replicas one after another (threads
take disjoint ranges, each with its own buffers), or one part of one step (``part``;
the driver runs a single network's two halves on two threads).
"""

from __future__ import annotations

import math

from numba import njit

from .batched_direct import direct_backward, direct_forward
from .batched_ops import (
    NOTRANS,
    act_backward,
    act_forward,
    avg_backward,
    avg_forward,
    conv_backward,
    conv_backward_routed,
    conv_forward,
    dense_backward,
    dense_forward,
    flat_backward,
    flat_forward,
    gather_winners,
    gemm,
    pool_backward,
    pool_forward,
    window_deltas,
)
from .kernels_activation import ACT
from .kernels_conv import CONV
from .kernels_dense import DENSE, FLAT
from .kernels_epoch import feedback_weights
from .kernels_norm import AVG
from .kernels_pool import POOL
from .kernels_step import learn, loss_value, sample_loss, update
from .slots import KERNEL, U, copy, fill

# Parts of a step (train_batched's ``part``).
WHOLE, PREPARE, HALF, FINISH = range(4)


@njit(**KERNEL)
def permute(op, src, s0, dst, d0, to_work):
    """A conv weight between the reference layout (O, C/g, KH, KW) and the working one
    (O, KH, KW, C/g): ``to_work`` copies reference -> working, else working -> reference."""
    cg, taps = op.in_c // op.groups, op.kernel_h * op.kernel_w
    for o in range(op.out_c):
        for c in range(cg):
            for t in range(taps):
                ref = (o * cg + c) * taps + t
                work = (o * taps + t) * cg + c
                if to_work:
                    dst[U(d0 + work)] = src[U(s0 + ref)]
                else:
                    dst[U(d0 + ref)] = src[U(s0 + work)]


@njit(**KERNEL)
def prepare(tables, extras, p, fixed, drawn, prep):
    """What a step's halves read: permuted conv weights, and each B that is not W
    (``drawn``: this step's redrawn matrices, else the fixed row)."""
    ops = tables.ops
    for r in range(ops.shape[0]):
        op = ops[r]
        if op.weight_prep >= 0:
            permute(op, p, op.weight_offset, prep, op.weight_prep, True)
        if op.dx_prep < 0 or op.dx_prep == op.weight_prep:  # W itself (or nothing)
            continue
        matrix, m0 = feedback_weights(op, tables.scales, p, fixed, drawn, prep,
                                      extras.prep_scratch)
        if op.weight_prep >= 0:
            permute(op, matrix, m0, prep, op.dx_prep, True)
        else:
            copy(prep, op.dx_prep, matrix, m0, op.weight_size)


@njit(**KERNEL)
def load_samples(extras, x, start, n, a):
    """Samples start .. start + n - 1 of the replica's data (NCHW) into ``a[0:]`` (NHWC)."""
    c, plane = extras.channels, extras.plane
    size = c * plane
    if c == 1:
        copy(a, 0, x, start * size, n * size)
        return
    for nn in range(n):
        for ch in range(c):
            src = (start + nn) * size + ch * plane
            for at in range(plane):
                a[U((nn * plane + at) * c + ch)] = x[U(src + at)]


@njit(**KERNEL)
def forward(tables, p, prep, a, wins, n, consts):
    """Every row's forward pass (a direct conv's fused activation and pool rows with it)."""
    ops = tables.ops
    for r in range(ops.shape[0]):
        op = ops[r]
        kind = op.kind
        if op.fused != 0:  # done by the direct conv below
            continue
        if kind == CONV and op.direct != 0:
            direct_forward(op, ops[r + 1], ops[op.routed], tables.codes, tables.slopes, p, a,
                           wins, n)
        elif kind == CONV:
            conv_forward(op, a, p, prep, n, consts)
        elif kind == DENSE:
            dense_forward(op, a, p, n, consts)
        elif kind == ACT:
            act_forward(op, tables.codes, tables.slopes, a, n)
        elif kind == POOL:
            pool_forward(op, a, wins, n)
        elif kind == AVG:
            avg_forward(op, tables.scales, a, n)
        elif kind == FLAT:
            flat_forward(op, a, n)


@njit(**KERNEL)
def from_error(settings, ga, derived, b0, size, out, n, consts):
    """DFA's injection and dfa-biotorch's projection: ``ga[out:]`` (n, size) = e @ B,
    e the output error (n, K) and B (K, size) at ``derived[b0:]``."""
    classes = settings.error_size
    gemm(NOTRANS, NOTRANS, n, size, classes, ga, settings.error_offset, classes, derived, b0,
         size, ga, out, size, False, consts)


@njit(**KERNEL)
def weight_backward(tables, r, settings, p, prep, derived, a, ga, wins, gp, n, consts):
    """A conv or dense row's gradients; its input gradient through W or the rule's B, or
    (dfa-biotorch) the output error projected straight to its input."""
    ops = tables.ops
    op = ops[r]
    need = op.sends_grad != 0
    project = need and op.project_offset >= 0
    bmat, b0 = (prep, op.dx_prep) if op.dx_prep >= 0 else (p, op.weight_offset)
    dx = need and not project
    if op.kind == DENSE:
        dense_backward(op, a, ga, gp, n, bmat, b0, dx, consts)
    elif op.direct != 0:
        direct_backward(op, ops[r + 1], ops[op.routed], tables.codes, tables.slopes, a, ga,
                        wins, gp, n, bmat, b0, dx, consts[1])
    elif op.routed >= 0:
        act, pool = ops[r + 1], ops[op.routed]
        gather_winners(op, act, pool, a, wins, n)
        window_deltas(op, act, pool, tables.codes, tables.slopes, a, ga, n)
        conv_backward_routed(op, pool, a, ga, wins, gp, n, bmat, b0, dx, consts)
    else:
        conv_backward(op, a, ga, gp, n, bmat, b0, dx, consts)
    if project:
        from_error(settings, ga, derived, op.derived_offset, op.in_size, op.in_offset, n,
                   consts)


@njit(**KERNEL)
def backward(tables, settings, p, prep, derived, a, ga, wins, gp, n, consts):
    """Every row's backward pass, from the last down to the lowest with parameters; a
    row no gradient reaches (DFA) gets a zero gradient, as in the engine's other
    layouts (:func:`~.kernels_epoch.backward`)."""
    ops = tables.ops
    flowing = True  # whether a gradient arrives at this row's output
    for r in range(ops.shape[0] - 1, settings.lowest - 1, -1):
        op = ops[r]
        kind = op.kind
        if op.inject_offset >= 0:  # DFA: this activation's output gradient is e @ B
            from_error(settings, ga, derived, op.derived_offset, op.out_size, op.out_offset,
                       n, consts)
            flowing = True
        if not flowing:  # the rule left it alone: no update
            fill(gp, op.params_offset, op.params_size)
            continue
        if op.covered != 0:  # its routed conv does its backward
            continue
        if kind in (CONV, DENSE):
            weight_backward(tables, r, settings, p, prep, derived, a, ga, wins, gp, n, consts)
        elif kind == ACT:
            act_backward(op, tables.codes, tables.slopes, a, ga, n)
        elif kind == POOL:
            pool_backward(op, ga, wins, n)
        elif kind == AVG:
            avg_backward(op, tables.scales, ga, n)
        elif kind == FLAT:
            flat_backward(op, ga, n)
        flowing = op.sends_grad != 0


@njit(**KERNEL)
def half_pass(tables, settings, extras, p, prep, derived, x, y, a, ga, wins, gp, consts,
              start, n, batch):
    """Forward, loss and backward of samples start .. start + n - 1 of a batch of
    ``batch``; ``gp`` gets their parameter gradient. Returns their loss terms summed in
    sample order (the step's loss is :func:`~.kernels_step.loss_value` of both halves')."""
    if n == 0:
        fill(gp, 0, gp.shape[0])
        return 0.0
    load_samples(extras, x, start, n, a)
    forward(tables, p, prep, a, wins, n, consts)
    ops, classes, mean = tables.ops, settings.classes, settings.mean != 0
    out0 = ops[ops.shape[0] - 1].out_offset
    scale = 1.0 / batch if mean else 1.0
    total = 0.0
    for k in range(n):
        total = sample_loss(settings.loss, mean, a, ga, out0 + k * classes, y,
                            (start + k) * classes, classes, 0, scale, total)
    backward(tables, settings, p, prep, derived, a, ga, wins, gp, n, consts)
    return total


@njit(**KERNEL)
def combine(ops, g0, g1, g):
    """g = g0 + g1, conv weights back in the reference layout."""
    for r in range(ops.shape[0]):
        op = ops[r]
        if op.weight_prep < 0:
            for k in range(op.params_offset, op.params_offset + op.params_size):
                g[U(k)] = g0[U(k)] + g1[U(k)]
            continue
        for k in range(op.weight_offset, op.weight_offset + op.weight_size):
            g0[U(k)] += g1[U(k)]
        permute(op, g0, op.weight_offset, g, op.weight_offset, False)
        if op.bias_offset >= 0:
            for k in range(op.bias_offset, op.bias_offset + op.out_c):
                g[U(k)] = g0[U(k)] + g1[U(k)]


@njit(**KERNEL)
def finish(tables, settings, extras, epoch, step, p, s1, s2, fixed, g0, g1, g):
    """Add the halves' gradients, let a learning B take its step, then the optimizer."""
    ops = tables.ops
    combine(ops, g0, g1, g)
    if extras.learns != 0:
        for r in range(ops.shape[0]):
            op = ops[r]
            if op.learning_offset >= 0:
                learn(fixed, op.feedback_offset, g, op.weight_offset, op.weight_size,
                      tables.scales[op.learning_offset], tables.scales[op.learning_offset + 1])
    update(settings.optimizer, p, g, s1, s2, epoch.hyper, epoch.corrections[step, 0],
           epoch.corrections[step, 1], True)


@njit(**KERNEL)
def record(settings, a, epoch, r, step, total, batch):
    """The step's cost in the network's dtype (as the reference's), added up."""
    a[U(settings.scratch)] = loss_value(settings.loss, 1.0 / batch if settings.mean else 1.0,
                                        total)
    value = a[U(settings.scratch)]
    epoch.cost[r] += value
    if not math.isfinite(value) and epoch.bad[r] == 0:
        epoch.bad[r] = step + 1


@njit(**KERNEL)
def train_batched(part, tables, settings, extras, model, work, epoch, derived, consts,
                  drawn0, first, steps, r0, r1, slot, half):
    """Steps first .. first + steps - 1 of replicas r0 .. r1 - 1 (``part`` WHOLE) on
    worker ``slot``'s buffers; or one part of step ``first`` of replica r0: PREPARE, one
    HALF (``half``), FINISH (``work.halves[slot]`` holds the halves' loss terms).
    ``drawn0``: the step whose redrawn matrices are ``epoch.drawn``'s first."""
    batch, count = settings.batch, settings.count
    prep, halves = work.prep[slot], work.halves[slot]
    for r in range(r0, r1):
        p, fixed = model.flat[r], model.fixed[r]
        for step in range(first, first + steps):
            start = step * batch
            if epoch.sizes[r] <= start:  # frozen: its data has run out
                continue
            nb = min(batch, count - start)
            cut = nb // 2
            if part in (WHOLE, PREPARE):
                drawn = epoch.drawn[r, step - drawn0] if settings.redraws != 0 else fixed
                prepare(tables, extras, p, fixed, drawn, prep)
            for h in range(2):
                if part == WHOLE or (part == HALF and h == half):
                    offset, size = (0, cut) if h == 0 else (cut, nb - cut)
                    halves[h] = half_pass(tables, settings, extras, p, prep, derived[r],
                                          epoch.x[r], epoch.y[r], work.arena[slot, h],
                                          work.garena[slot, h], work.ints[slot, h],
                                          work.grads[slot, h], consts, start + offset, size,
                                          nb)
            if part in (WHOLE, FINISH):
                finish(tables, settings, extras, epoch, step, p, model.state1[r],
                       model.state2[r], fixed, work.grads[slot, 0], work.grads[slot, 1],
                       work.gsum[slot])
                record(settings, work.arena[slot, 0], epoch, r, step, halves[0] + halves[1],
                       nb)
