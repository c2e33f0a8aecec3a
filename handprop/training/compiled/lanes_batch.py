"""Minibatches of one network in the lane layout: eight *samples* per block.

For a single network trained on batches (a multiple of eight samples), the samples of a
batch take the lanes: the parameters are copied into every lane, each block of eight
samples runs forward and backward with the lane kernels, and the per-sample parameter
gradients are then added up sample after sample. That is exactly the per-replica
kernels' order -- they too start each gradient at 0 and add the samples' terms in
turn -- so a network gets the same bits trained here or among replicas (where the
per-replica order runs inside each lane). Two sums are not taken sample by sample
there, and configurations that have them stay on the per-replica kernels: a conv
layer's bias gradient (one sum over every sample and pixel) and an as-run layer's
true gradient (summed over samples before the output channels).

The loss is summed over samples and classes in the reference's order, across blocks.

:func:`train_lanes` is the one entry for both lane uses (blocks of replicas, or one
network's batches): one compiled function instead of two, which halves the lane
kernels' compile time.
"""

from __future__ import annotations

import math

from numba import njit

from .kernels_elementwise import update
from .kernels_epoch import (
    BATCH,
    CLASSES,
    COUNT,
    IN_SIZE,
    LOSS,
    MEAN,
    OPTIMIZER,
    REDRAWS,
    WORK,
)
from .lanes import JIT, U, vcopy
from .lanes_epoch import _backward, _forward, sample_loss, train_block
from .plan import L2, OUT_OFF


@njit(**JIT)
def _spread(src, out, size):
    """out[k * 8 + l] = src[k] for every lane l: one network's values in every lane."""
    for k in range(size):
        value = src[k]
        for lane in range(8):
            out[U(k * 8 + lane)] = value


@njit(**JIT)
def _gather_grads(gp_lanes, gp, size, valid):
    """gp[k] += lane l's gradient for l = 0 .. valid - 1, in sample order."""
    for k in range(size):
        total = gp[k]
        for lane in range(valid):
            total += gp_lanes[U(k * 8 + lane)]
        gp[k] = total


@njit(**JIT)
def _loss(kind, mean, a, ga, out0, y, valid, classes, scale, total):
    """kernels_elementwise.loss's terms for the block's first ``valid`` samples, added to
    ``total`` in its order; gradients scaled by ``scale`` (1/batch for a mean)."""
    for lane in range(valid):
        total = sample_loss(kind, mean, a, ga, out0, y, 0, classes, lane, scale, total)
    return total


@njit(**JIT)
def train_batches(ops, codes, slopes, scales, settings, p, s1, s2, hyper, corrections, x, y,
                  fb, drawn, a, ga, wins, gp_lanes, p_lanes, m_lanes, gp, cost, bad, first,
                  steps):
    """Steps ``first .. first + steps - 1``: ``x``/``y`` the epoch's samples in blocks of
    eight (lane layout), ``fb`` the feedback arrays already in every lane."""
    batch, count, in_size = settings[BATCH], settings[COUNT], settings[IN_SIZE]
    classes, size = settings[CLASSES], p.shape[0]
    out0 = ops[ops.shape[0] - 1, OUT_OFF]
    mean = settings[MEAN] != 0
    for step in range(first, first + steps):
        start = step * batch
        nb = min(batch, count - start)
        scale = 1.0 / nb if mean else 1.0
        _spread(p, p_lanes, size)
        if settings[REDRAWS] != 0:
            _spread(drawn[step - first], m_lanes, drawn.shape[1])
        for k in range(size):
            gp[k] = 0.0
        total = 0.0
        for first_sample in range(start, start + nb, 8):
            block, valid = first_sample // 8, min(8, start + nb - first_sample)
            vcopy(a, 0, x[block], 0, in_size)
            one = min(1, nb)  # one sample per lane (a value, not a literal: see _conv_backward)
            _forward(ops, codes, slopes, p_lanes, a, wins, one, settings[WORK])
            total = _loss(settings[LOSS], mean, a, ga, out0, y[block], valid, classes, scale,
                          total)
            magnitudes = m_lanes if settings[REDRAWS] != 0 else fb
            _backward(ops, codes, slopes, scales, settings, p_lanes, fb, magnitudes, a, ga,
                      wins, gp_lanes, one)
            _gather_grads(gp_lanes, gp, size, valid)
        value = 0.5 * scale * total if settings[LOSS] == L2 else -scale * total
        cost[0] += value
        if not math.isfinite(value) and bad[0] == 0:
            bad[0] = step + 1
        update(settings[OPTIMIZER], p, gp, s1, s2, hyper, corrections[step, 0],
               corrections[step, 1])


@njit(**JIT)
def train_lanes(samples, ops, codes, slopes, scales, settings, flat, state1, state2, hyper,
                corrections, x, y, sizes, fb, drawn, arena, garena, ints, gflat, spare, cost,
                bad, first, steps, b0, b1):
    """Blocks b0 .. b1 - 1 of replicas (lanes_epoch.train_block; threads run disjoint
    ranges), or with ``samples`` one network's batches (:func:`train_batches`; ``spare``
    rows: the parameters in every lane, brSF's magnitudes in every lane, the gradient)."""
    if samples:
        train_batches(ops, codes, slopes, scales, settings, flat[0], state1[0], state2[0],
                      hyper, corrections, x, y, fb[0], drawn[0], arena[0], garena[0], ints[0],
                      gflat[0], spare[0], spare[1], spare[2], cost, bad, first, steps)
        return
    for b in range(b0, b1):
        train_block(b, ops, codes, slopes, scales, settings, flat, state1, state2, hyper,
                    corrections, x, y, sizes, fb, drawn, arena, garena, ints, gflat, cost, bad,
                    first, steps)
