"""Minibatches of one network in the lane layout: eight *samples* per block.

For a single network trained on batches (a multiple of eight samples), the samples of a
batch take the lanes: the parameters are copied into every lane, each block of eight
samples runs forward and backward with the lane kernels (:mod:`.kernels_epoch`'s, at
width 8), and the per-sample parameter gradients are then added up sample after sample.
That is exactly the per-replica kernels' order -- they too start each gradient at 0 and
add the samples' terms in turn -- so a network gets the same bits trained here or among
replicas. Ops whose sums over a batch are not taken sample by sample (a conv bias, a
borrowed kernel's true gradient, batch norm's statistics) lack the ``sample-order``
feature, and the layout is then not chosen (see :mod:`.capabilities`).

The loss is summed over samples and classes in the reference's order, across blocks.

:func:`train_lanes` is the one entry for both lane uses (blocks of replicas, or one
network's batches), with the same argument types for both: one compiled function
instead of two, which halves the lane kernels' compile time.
"""

from __future__ import annotations

import math

from numba import njit

from .kernels_epoch import backward, forward, train_row
from .kernels_step import loss_value, sample_loss, update
from .slots import KERNEL, LANES, Lanes, U, copy, fill, row


@njit(**KERNEL)
def _spread(src, out, size):
    """out[k * LANES + l] = src[k] for every lane l: one network's values in every lane."""
    for k in range(size):
        value = src[k]
        for at in range(LANES):
            out[U(k * LANES + at)] = value


@njit(**KERNEL)
def _gather_grads(lanes, gp, size, valid):
    """gp[k] += lane l's gradient for l = 0 .. valid - 1, in sample order."""
    for k in range(size):
        summed = gp[k]
        for at in range(valid):
            summed += lanes[U(k * LANES + at)]
        gp[k] = summed


@njit(**KERNEL)
def train_batches(tables, settings, model, work, epoch, spread, first, steps):
    """Steps ``first .. first + steps - 1`` of one network: ``epoch.x``/``epoch.y`` the
    epoch's samples in blocks of eight (lane layout), ``model.fixed`` the rule's
    matrices already in every lane; ``spread``: the parameters and this step's redrawn
    matrices in every lane, the summed gradient."""
    p, s1, s2 = model.flat.values[0], model.state1.values[0], model.state2.values[0]
    a, ga, wins, grads = (row(work.arena, 0), row(work.garena, 0), row(work.ints, 0),
                          row(work.gflat, 0))
    p_lanes, m_lanes, gp = Lanes(spread[0]), Lanes(spread[1]), spread[2]
    fixed, q = row(model.fixed, 0), row(model.buffers, 0)
    batch, count, in_size, size = settings.batch, settings.count, settings.in_size, p.shape[0]
    out0 = tables.ops[tables.ops.shape[0] - 1].out_offset
    mean, every = settings.mean != 0, (True, True, True, True, True, True, True, True)
    for step in range(first, first + steps):
        start = step * batch
        nb = min(batch, count - start)
        scale = 1.0 / nb if mean else 1.0
        _spread(p, p_lanes.values, size)
        if settings.redraws != 0:
            drawn = epoch.drawn.values[0, step - first]
            _spread(drawn, m_lanes.values, drawn.shape[0])
        fill(gp, 0, size)
        total = 0.0
        for first_sample in range(start, start + nb, LANES):
            block, valid = first_sample // LANES, min(LANES, start + nb - first_sample)
            copy(a, 0, row(epoch.x, block), 0, in_size)
            one = min(1, nb)  # one sample per lane (a value, not a literal: one compile)
            forward(tables, p_lanes, q, a, wins, one, settings.work, every)
            for at in range(valid):
                total = sample_loss(settings.loss, mean, a, ga, out0, row(epoch.y, block), 0,
                                    settings.classes, at, scale, total)
            matrices = m_lanes if settings.redraws != 0 else fixed
            backward(tables, settings, p_lanes, fixed, matrices, a, ga, wins, grads, one)
            _gather_grads(grads.values, gp, size, valid)
        value = loss_value(settings.loss, scale, total)
        epoch.cost[0] += value
        if not math.isfinite(value) and epoch.bad[0] == 0:
            epoch.bad[0] = step + 1
        update(settings.optimizer, p, gp, s1, s2, epoch.hyper, epoch.corrections[step, 0],
               epoch.corrections[step, 1], True)


@njit(**KERNEL)
def train_lanes(samples, tables, settings, model, work, epoch, spread, first, steps, b0, b1):
    """Blocks b0 .. b1 - 1 of eight replicas (:func:`~.kernels_epoch.train_row` at width
    8; threads run disjoint ranges), or with ``samples`` one network's batches
    (:func:`train_batches`; every array but ``spread`` in the lane layout, the network's
    own rows holding one network)."""
    if samples:
        train_batches(tables, settings, model, work, epoch, spread, first, steps)
        return
    for b in range(b0, b1):
        train_row(b, tables, settings, model, work, epoch, first, steps)
