"""Compiled element-wise work: activations, losses, optimizer updates.

arctan and tanh are :mod:`.special`'s (vectorizable, within 2 ulp of libm's). Each
formula is written in the reference's order of operations (e.g. ``g * (1 / (1 +
z*z))`` for arctan, the stable sigmoid ``exp(-logaddexp(0, -z))`` with NumPy's
``logaddexp`` branches, PyTorch's BCE clamps), so that a step agrees with the NumPy
engine to the last few ulps; only libm's transcendental functions and the order of
long sums differ.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from . import special
from .plan import (
    ADAM,
    ARCTAN,
    BCE,
    CODE_OFF,
    IDENTITY,
    IN_OFF,
    L2,
    LEAKY,
    MOMENTUM,
    NESTEROV,
    OUT_OFF,
    RELU,
    SGD,
    SIGMOID,
    TANH,
    C,
    H,
)

U = np.uint64  # unsigned indices: no negative-index branch (see kernels_conv)
LOGE2 = 0.693147180559945309417232121458176568
BCE_EPS = 9.999999960041972e-13  # float32(1e-12), PyTorch's clamp even in float64


@njit(cache=True, nogil=True, error_model="numpy")
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


@njit(cache=True, nogil=True, error_model="numpy")
def activate(code, slope, z):
    if code == RELU:
        return z if z > 0 or z != z else 0.0
    if code == TANH:
        return special.tanh(z)
    if code == ARCTAN:
        return special.atan(z)
    if code == SIGMOID:
        return math.exp(-_logaddexp0(-z))
    if code == LEAKY:
        return z if z > 0 else slope * z
    return z


@njit(cache=True, nogil=True, error_model="numpy")
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


@njit(cache=True, nogil=True, error_model="numpy")
def _forward_run(code, slope, a, z0, y0, count):
    """y = f(z) over one run of values; one branch per run, not per value, so the
    simple activations vectorize."""
    if code == RELU:
        for k in range(count):
            z = a[U(z0 + k)]
            a[U(y0 + k)] = z if z > 0 or z != z else 0.0
    elif code == IDENTITY:
        for k in range(count):
            a[U(y0 + k)] = a[U(z0 + k)]
    elif code == ARCTAN:
        for k in range(count):
            a[U(y0 + k)] = special.atan(a[U(z0 + k)])
    elif code == TANH:
        for k in range(count):
            a[U(y0 + k)] = special.tanh(a[U(z0 + k)])
    else:
        for k in range(count):
            a[U(y0 + k)] = activate(code, slope, a[U(z0 + k)])


@njit(cache=True, nogil=True, error_model="numpy")
def _backward_run(code, slope, a, ga, z0, y0, count):
    """dz = dy * f'(z) over one run of values."""
    if code == RELU:
        for k in range(count):
            ga[U(z0 + k)] = ga[U(y0 + k)] * (1.0 if a[U(z0 + k)] > 0 else 0.0)
    elif code == ARCTAN:
        for k in range(count):
            z = a[U(z0 + k)]
            ga[U(z0 + k)] = ga[U(y0 + k)] * (1 / (1 + z * z))
    elif code == TANH:
        for k in range(count):
            y = a[U(y0 + k)]
            ga[U(z0 + k)] = ga[U(y0 + k)] * (1 - y * y)
    else:
        for k in range(count):
            ga[U(z0 + k)] = ga[U(y0 + k)] * derivative(code, slope, a[U(z0 + k)],
                                                       a[U(y0 + k)])


@njit(cache=True, nogil=True, error_model="numpy")
def act_forward(op, codes, slopes, a, nb):
    """y = f_c(z), channel c's own f (one f for the whole layer when C = 1)."""
    channels, per_channel = op[C], op[H]
    for m in range(nb * channels):
        k = op[CODE_OFF] + m % channels
        base = m * per_channel
        _forward_run(codes[k], slopes[k], a, op[IN_OFF] + base, op[OUT_OFF] + base,
                     per_channel)


@njit(cache=True, nogil=True, error_model="numpy")
def act_backward(op, codes, slopes, a, ga, nb):
    """dz = dy * f_c'(z)."""
    channels, per_channel = op[C], op[H]
    for m in range(nb * channels):
        k = op[CODE_OFF] + m % channels
        base = m * per_channel
        _backward_run(codes[k], slopes[k], a, ga, op[IN_OFF] + base, op[OUT_OFF] + base,
                      per_channel)


@njit(cache=True, nogil=True, error_model="numpy")
def _max_row(a, start, count):
    """The row's maximum, NaN if any (as numpy's max)."""
    best = a[start]
    for k in range(start + 1, start + count):
        value = a[k]
        if value != value or value > best:
            best = value
            if value != value:
                break
    return best


@njit(cache=True, nogil=True, error_model="numpy")
def loss(kind, mean, a, ga, out0, y, row0, nb, classes):
    """The batch's loss value (float64) and its gradient at ``ga[out0:]``.

    ``y`` (N, classes): this replica's targets (softmax targets as one-hot rows).
    """
    scale = 1.0 / nb if mean else 1.0
    total = 0.0
    for n in range(nb):
        p0 = out0 + n * classes
        if kind == L2:
            for k in range(classes):
                diff = a[p0 + k] - y[row0 + n, k]
                total += diff * diff
                ga[p0 + k] = diff * scale if mean else diff
        elif kind == BCE:
            for k in range(classes):
                prob, target = a[p0 + k], y[row0 + n, k]
                log_p = math.log(prob) if prob > 0 else (-math.inf if prob == 0 else math.nan)
                log_q = math.log1p(-prob)
                log_p = -100.0 if log_p < -100.0 else log_p
                log_q = -100.0 if log_q < -100.0 else log_q
                total += target * log_p + (1 - target) * log_q
                bound = prob * (1 - prob)
                bound = BCE_EPS if bound < BCE_EPS else bound
                ga[p0 + k] = scale * (prob - target) / bound
        else:
            shift = _max_row(a, p0, classes)
            norm = 0.0
            for k in range(classes):
                norm += math.exp(a[p0 + k] - shift)
            log_norm = math.log(norm)
            for k in range(classes):
                log_prob = (a[p0 + k] - shift) - log_norm
                target = y[row0 + n, k]
                total += target * log_prob
                grad = math.exp(log_prob) - target
                ga[p0 + k] = grad * scale if mean else grad
    if kind == L2:
        return 0.5 * scale * total
    return -scale * total


@njit(cache=True, nogil=True, error_model="numpy")
def update(kind, p, g, s1, s2, hyper, c1, c2):
    """One optimizer step on one replica's flat buffers (see handprop.training.optim).

    hyper = (lr, momentum, weight_decay, beta1, 1 - beta1, beta2, 1 - beta2, eps) in the
    parameters' dtype; c1, c2: Adam's bias corrections for this step. Weight decay first
    turns g into g + decay * p (in place: g is this step's scratch), then one loop per
    optimizer, with no branch inside, so each vectorizes.
    """
    lr, mom, decay = hyper[0], hyper[1], hyper[2]
    if decay != 0:
        for k in range(p.shape[0]):
            g[k] = g[k] + decay * p[k]
    if kind == SGD:
        for k in range(p.shape[0]):
            p[k] -= lr * g[k]
    elif kind == MOMENTUM:
        for k in range(p.shape[0]):
            s1[k] = s1[k] * mom + g[k] * lr
            p[k] -= s1[k]
    elif kind == NESTEROV:
        for k in range(p.shape[0]):
            s1[k] = s1[k] * mom + g[k]
            p[k] -= lr * (g[k] + mom * s1[k])
    elif kind == ADAM:
        beta1, rest1, beta2, rest2, eps = hyper[3], hyper[4], hyper[5], hyper[6], hyper[7]
        for k in range(p.shape[0]):
            s1[k] = s1[k] * beta1 + rest1 * g[k]
            s2[k] = s2[k] * beta2 + rest2 * g[k] * g[k]
            p[k] -= lr * (s1[k] / c1) / (math.sqrt(s2[k] / c2) + eps)
