"""How a compiled step ends: the loss and its gradient, then the optimizer update.

Each formula is written in the reference's order of operations (PyTorch's BCE clamps,
NumPy's ``max`` for the softmax shift), so that a step agrees with the NumPy engine to the
last few ulps. Written once against the slot API (:mod:`.slots`): the loss lane by lane,
the update a slot at a time, changing only the lanes that take the step (``keep``).
"""

from __future__ import annotations

import math

from numba import njit

from ..optim import Adam, Momentum, Nesterov, Optimizer
from .capabilities import LOSSES, OPTIMIZERS
from .slots import (
    KERNEL,
    add,
    get,
    lane,
    load,
    mul,
    put,
    select,
    slot_count,
    splat,
    store,
    sub,
    width,
)

L2, BCE = LOSSES["l2"], LOSSES["bce"]
SGD, MOMENTUM = OPTIMIZERS[Optimizer][0], OPTIMIZERS[Momentum][0]
NESTEROV, ADAM = OPTIMIZERS[Nesterov][0], OPTIMIZERS[Adam][0]
BCE_EPS = 9.999999960041972e-13  # float32(1e-12), PyTorch's clamp even in float64


@njit(**KERNEL)
def _max_row(a, start, count, at):
    """The row's maximum in lane ``at``, NaN if any (as numpy's max)."""
    best = get(a, start, at)
    for k in range(start + 1, start + count):
        value = get(a, k, at)
        if value != value or value > best:
            best = value
            if value != value:
                break
    return best


@njit(**KERNEL)
def sample_loss(kind, mean, a, ga, p0, y, t0, classes, at, scale, total):
    """One sample's loss terms in lane ``at``, added to ``total`` in the reference's
    order (its predictions at ``a[p0 ..]``, targets at ``y[t0 ..]``), and its output
    gradient into ``ga`` (times ``scale`` where the reduction is a mean)."""
    if kind == L2:
        for k in range(classes):
            diff = get(a, p0 + k, at) - get(y, t0 + k, at)
            total += diff * diff
            put(ga, p0 + k, at, diff * scale if mean else diff)
    elif kind == BCE:
        for k in range(classes):
            prob, target = get(a, p0 + k, at), get(y, t0 + k, at)
            log_p = math.log(prob) if prob > 0 else (-math.inf if prob == 0 else math.nan)
            log_q = math.log1p(-prob)
            log_p = -100.0 if log_p < -100.0 else log_p
            log_q = -100.0 if log_q < -100.0 else log_q
            total += target * log_p + (1 - target) * log_q
            bound = prob * (1 - prob)
            bound = BCE_EPS if bound < BCE_EPS else bound
            put(ga, p0 + k, at, scale * (prob - target) / bound)
    else:
        shift = _max_row(a, p0, classes, at)
        norm = 0.0
        for k in range(classes):
            norm += math.exp(get(a, p0 + k, at) - shift)
        log_norm = math.log(norm)
        for k in range(classes):
            log_prob = (get(a, p0 + k, at) - shift) - log_norm
            target = get(y, t0 + k, at)
            total += target * log_prob
            grad = math.exp(log_prob) - target
            put(ga, p0 + k, at, grad * scale if mean else grad)
    return total


@njit(**KERNEL)
def batch_loss(kind, mean, a, ga, out0, y, row0, nb, classes, at):
    """The loss of lane ``at``'s batch (float64: samples ``row0 ..`` of its targets ``y``)
    and its gradient at ``ga[out0:]``."""
    scale = 1.0 / nb if mean else 1.0
    total = 0.0
    for n in range(nb):
        total = sample_loss(kind, mean, a, ga, out0 + n * classes, y, (row0 + n) * classes,
                            classes, at, scale, total)
    return loss_value(kind, scale, total)


@njit(**KERNEL)
def loss_value(kind, scale, total):
    """The loss from its summed terms."""
    if kind == L2:
        return 0.5 * scale * total
    return -scale * total


@njit(**KERNEL)
def _adam(p, m, v, g, lr, beta1, rest1, beta2, rest2, eps, c1, c2):
    """One value's Adam step: (p, m, v) after it."""
    m = m * beta1 + rest1 * g
    v = v * beta2 + rest2 * g * g
    return p - lr * (m / c1) / (math.sqrt(v / c2) + eps), m, v


@njit(**KERNEL)
def update(kind, p, g, s1, s2, hyper, c1, c2, keep):
    """One optimizer step on one row's flat buffers (see handprop.training.optim), in the
    lanes of ``keep`` only.

    hyper = (lr, momentum, weight_decay, beta1, 1 - beta1, beta2, 1 - beta2, eps) in the
    parameters' dtype; c1, c2: Adam's bias corrections for this step. Weight decay first
    turns g into g + decay * p (in place: g is this step's scratch), then one loop per
    optimizer, with no branch inside, so each vectorizes.
    """
    lr, mom, decay = hyper[0], hyper[1], hyper[2]
    size = slot_count(p)
    if decay != 0:
        for k in range(size):
            store(g, k, add(load(g, k), mul(splat(decay, keep), load(p, k))))
    if kind == SGD:
        for k in range(size):
            old = load(p, k)
            store(p, k, select(keep, sub(old, mul(splat(lr, keep), load(g, k))), old))
    elif kind == MOMENTUM:
        for k in range(size):
            old, velocity = load(p, k), load(s1, k)
            new = add(mul(velocity, splat(mom, keep)), mul(load(g, k), splat(lr, keep)))
            store(s1, k, select(keep, new, velocity))
            store(p, k, select(keep, sub(old, new), old))
    elif kind == NESTEROV:
        for k in range(size):
            old, buffer, grad = load(p, k), load(s1, k), load(g, k)
            new = add(mul(buffer, splat(mom, keep)), grad)
            step = mul(splat(lr, keep), add(grad, mul(splat(mom, keep), new)))
            store(s1, k, select(keep, new, buffer))
            store(p, k, select(keep, sub(old, step), old))
    elif kind == ADAM:
        for k in range(size):
            for at in range(width(p)):
                if lane(keep, at):
                    p_k, m_k, v_k = _adam(get(p, k, at), get(s1, k, at), get(s2, k, at),
                                          get(g, k, at), lr, hyper[3], hyper[4], hyper[5],
                                          hyper[6], hyper[7], c1, c2)
                    put(p, k, at, p_k)
                    put(s1, k, at, m_k)
                    put(s2, k, at, v_k)


@njit(**KERNEL)
def learn(m, m0, g, g0, size, lr, decay):
    """A learning feedback matrix's step (Kolen-Pollack, after the step's backward
    pass): ``M <- M - lr * (g + decay * M)`` with g the weight's local gradient, in the
    reference's order (:meth:`handprop.rules.feedback.FeedbackRule.learn`)."""
    for k in range(size):
        old = load(m, m0 + k)
        change = mul(splat(lr, old), add(load(g, g0 + k), mul(splat(decay, old), old)))
        store(m, m0 + k, sub(old, change))
