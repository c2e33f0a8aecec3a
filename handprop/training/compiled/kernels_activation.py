"""Compiled activations: one function for a layer, or one per channel.

arctan and tanh are :mod:`.special`'s (vectorizable, within 2 ulp of libm's). Each
formula is written in the reference's order of operations (``g * (1 / (1 + z*z))`` for
arctan, the stable sigmoid ``exp(-logaddexp(0, -z))`` with NumPy's ``logaddexp``
branches), so that a step agrees with the NumPy engine to the last few ulps. Written
once against the slot API (:mod:`.slots`): the common functions a whole slot at a time,
the others lane by lane.
"""

from __future__ import annotations

import math
from math import prod

from numba import njit

from ...core.ops import Activation, PerChannelActivation
from .capabilities import OpSpec, UnsupportedError, every_feature, register_op
from .slots import (
    KERNEL,
    arctan_slope,
    copy,
    get,
    load,
    mul,
    positive,
    put,
    relu,
    store,
    tanh_slope,
    width,
)
from .special import atan as atan_value
from .special import atan_slots, tanh_slots
from .special import tanh as tanh_value

ACT = 4
IDENTITY, RELU, LEAKY, TANH, ARCTAN, SIGMOID = range(6)
CODES = {"identity": IDENTITY, "relu": RELU, "tanh": TANH, "arctan": ARCTAN,
         "sigmoid": SIGMOID}
LOGE2 = 0.693147180559945309417232121458176568


def activation_code(name: str) -> tuple[int, float]:
    """(code, leaky slope) of an activation's name."""
    if name in CODES:
        return CODES[name], 0.0
    if name.startswith("leaky_relu:"):
        return LEAKY, float(name.partition(":")[2])
    raise UnsupportedError(f"activation {name!r} has no compiled form")


def _describe(builder, row, layer, index) -> None:
    names = ([layer.activation.name] if isinstance(layer, Activation)
             else list(layer.activations))
    shape = builder.net.shapes[index]
    channels = shape[0] if len(names) > 1 else 1
    row["in_c"], row["in_h"], row["in_w"] = channels, prod(shape) // channels, 1
    codes = [activation_code(name) for name in names]
    row["codes_offset"] = builder.add_codes([code for code, _ in codes],
                                            [slope for _, slope in codes])


register_op(OpSpec(Activation, ACT, _describe, every_feature,
                   "relu, leaky_relu, tanh, arctan, sigmoid, identity"))
register_op(OpSpec(PerChannelActivation, ACT, _describe, every_feature,
                   "any of those per channel"))


@njit(**KERNEL)
def _logaddexp0(m):
    """numpy.logaddexp(0, m), branch for branch."""
    if m == 0.0:
        return LOGE2
    tmp = -m
    if tmp > 0:
        return math.log1p(math.exp(-tmp))
    if tmp <= 0:
        return m + math.log1p(math.exp(tmp))
    return tmp


@njit(**KERNEL)
def activate(code, slope, z):
    if code == RELU:
        return z if z > 0 or z != z else 0.0
    if code == TANH:
        return tanh_value(z)
    if code == ARCTAN:
        return atan_value(z)
    if code == SIGMOID:
        return math.exp(-_logaddexp0(-z))
    if code == LEAKY:
        return z if z > 0 else slope * z
    return z


@njit(**KERNEL)
def derivative(code, slope, z, y):
    if code == RELU:
        return 1.0 if z > 0 else 0.0
    if code == TANH:
        return 1 - y * y
    if code == ARCTAN:
        return 1 / (1 + z * z)
    if code == SIGMOID:
        return y * (1 - y)
    if code == LEAKY:
        return 1.0 if z > 0 else slope
    return 1.0


@njit(**KERNEL)
def _run(op, codes, slopes, m):
    """Run m (a channel of a sample): its function's code and slope, where z and y start."""
    k = op.codes_offset + m % op.in_c
    return codes[k], slopes[k], op.in_offset + m * op.in_h, op.out_offset + m * op.in_h


@njit(**KERNEL)
def forward_run(code, slope, a, z0, y0, count):
    """y = f(z) over a run of ``count`` slots from ``a[z0]`` into ``a[y0]``: one branch
    per run, not per value, so the common functions vectorize."""
    if code == RELU:
        for s in range(count):
            store(a, y0 + s, relu(load(a, z0 + s)))
    elif code == IDENTITY:
        copy(a, y0, a, z0, count)
    elif code == ARCTAN:
        for s in range(count):
            store(a, y0 + s, atan_slots(load(a, z0 + s)))
    elif code == TANH:
        for s in range(count):
            store(a, y0 + s, tanh_slots(load(a, z0 + s)))
    else:
        for s in range(count):
            for at in range(width(a)):
                put(a, y0 + s, at, activate(code, slope, get(a, z0 + s, at)))


@njit(**KERNEL)
def backward_run(code, slope, a, ga, z0, y0, count):
    """dz = dy * f'(z) over a run of ``count`` slots (dy at ``ga[y0]``, z at ``a[z0]``)."""
    if code == RELU:
        for s in range(count):
            store(ga, z0 + s, mul(load(ga, y0 + s), positive(load(a, z0 + s))))
    elif code == ARCTAN:  # dy * (1 / (1 + z*z))
        for s in range(count):
            store(ga, z0 + s, mul(load(ga, y0 + s), arctan_slope(load(a, z0 + s))))
    elif code == TANH:  # dy * (1 - y*y)
        for s in range(count):
            store(ga, z0 + s, mul(load(ga, y0 + s), tanh_slope(load(a, y0 + s))))
    else:
        for s in range(count):
            for at in range(width(a)):
                slope_at = derivative(code, slope, get(a, z0 + s, at), get(a, y0 + s, at))
                put(ga, z0 + s, at, get(ga, y0 + s, at) * slope_at)


@njit(**KERNEL)
def act_forward(op, codes, slopes, a, nb):
    """y = f_c(z), channel c's own f (one f for the whole layer when in_c = 1), a run of
    a channel's values at a time."""
    for m in range(nb * op.in_c):
        code, slope, z0, y0 = _run(op, codes, slopes, m)
        forward_run(code, slope, a, z0, y0, op.in_h)


@njit(**KERNEL)
def act_backward(op, codes, slopes, a, ga, nb):
    """dz = dy * f_c'(z)."""
    for m in range(nb * op.in_c):
        code, slope, z0, y0 = _run(op, codes, slopes, m)
        backward_run(code, slope, a, ga, z0, y0, op.in_h)
