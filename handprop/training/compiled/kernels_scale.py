"""Compiled per-channel scale (:mod:`handprop.core.ops.scale`): y = x * s[c].

Written once against the slot API (:mod:`.slots`). The scale's gradient adds one
sample's sum of delta * x at a time (channel by channel), so a batch's samples may take
the lanes.
"""

from __future__ import annotations

from numba import njit

from ...core.ops.scale import Scale
from .capabilities import OpSpec, every_feature, register_op
from .slots import KERNEL, add, load, mul, muladd, store, zero

SCALE = 7


def _describe(builder, row, layer, index) -> None:
    builder.shapes(row, index)  # in_c channels of in_h * in_w values; s at params_offset


register_op(OpSpec(Scale, SCALE, _describe, every_feature, "a learnable factor per channel"))


@njit(**KERNEL)
def scale_forward(op, p, a, nb):
    """y = x * s[c]."""
    plane = op.in_h * op.in_w
    for n in range(nb):
        for c in range(op.in_c):
            s = load(p, op.params_offset + c)
            start = (n * op.in_c + c) * plane
            for k in range(plane):
                store(a, op.out_offset + start + k, mul(load(a, op.in_offset + start + k), s))


@njit(**KERNEL)
def scale_backward(op, p, a, ga, gp, nb, need_dx):
    """ds[c] = sum over samples (in order) of sum_k delta * x; dx = delta * s[c]."""
    plane = op.in_h * op.in_w
    for c in range(op.in_c):
        s, grad = load(p, op.params_offset + c), zero(gp)
        for n in range(nb):
            start = (n * op.in_c + c) * plane
            sample = zero(gp)
            for k in range(plane):
                delta = load(ga, op.out_offset + start + k)
                sample = muladd(sample, delta, load(a, op.in_offset + start + k))
                if need_dx:
                    store(ga, op.in_offset + start + k, mul(delta, s))
            grad = add(grad, sample)
        store(gp, op.params_offset + c, grad)
