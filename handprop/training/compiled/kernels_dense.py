"""Compiled dense layer (and flatten): forward, weight/bias gradients, input gradient.

Written once against the slot API (:mod:`.slots`): ``p`` the flat parameters, ``a``/``ga``
the activation and gradient arenas (samples one after another at the offsets of the
op's row), ``gp`` the parameter gradient -- one replica's, or eight lanes'. Each sum runs
in one fixed order, so results never depend on threads or on the other replicas.
"""

from __future__ import annotations

from numba import njit

from ...core.ops import Dense, Flatten
from .capabilities import FEATURES, OpSpec, register_op
from .slots import (
    KERNEL,
    U,
    add,
    axpy,
    by_width,
    dot,
    fill,
    load,
    muladd,
    scaled_into,
    store,
    zero,
)

DENSE, FLAT = 2, 3


def _describe_dense(builder, row, layer, index) -> None:
    builder.shapes(row, index)


def _describe_flatten(builder, row, layer, index) -> None:
    builder.shapes(row, index)
    row["out_offset"] = row["in_offset"]  # row-major flatten: the same values, in place


register_op(OpSpec(Dense, DENSE, _describe_dense, lambda layer, how: frozenset(FEATURES),
                   "weights and bias; B = W or the rule's feedback"))
register_op(OpSpec(Flatten, FLAT, _describe_flatten, lambda layer, how: frozenset(FEATURES),
                   "no work: the same values in place"))


# -- hand-specialised: two outputs per pass over x at width 1 (the loads of x shared,
# eight chains of adds in flight); at width 8 the sixteen-tuple chains would not fit the
# registers, so two plain dot products. Either way each row's sum is dot's, in its order.
@njit(**KERNEL)
def _dot_pair_w1(x, x0, w, w0, w1, count):  # hand-specialised: shared loads of x
    """(dot(x, w[w0:]), dot(x, w[w1:])), each in dot's order."""
    s0 = s1 = s2 = s3 = 0.0
    t0 = t1 = t2 = t3 = 0.0
    k = 0
    while k + 4 <= count:
        a0, a1 = x[U(x0 + k)], x[U(x0 + k + 1)]
        a2, a3 = x[U(x0 + k + 2)], x[U(x0 + k + 3)]
        s0 += a0 * w[U(w0 + k)]
        s1 += a1 * w[U(w0 + k + 1)]
        s2 += a2 * w[U(w0 + k + 2)]
        s3 += a3 * w[U(w0 + k + 3)]
        t0 += a0 * w[U(w1 + k)]
        t1 += a1 * w[U(w1 + k + 1)]
        t2 += a2 * w[U(w1 + k + 2)]
        t3 += a3 * w[U(w1 + k + 3)]
        k += 4
    while k < count:
        s0 += x[U(x0 + k)] * w[U(w0 + k)]
        t0 += x[U(x0 + k)] * w[U(w1 + k)]
        k += 1
    return (s0 + s1) + (s2 + s3), (t0 + t1) + (t2 + t3)


# -- hand-specialised: the input gradient dx[k] = sum_o delta[o] B[o, k], summed over o
# in order from 0 in both: at width 1 one vectorized axpy per output row, at width 8
# each slot of dx summed in registers (no store per output).
@njit(**KERNEL)
def _dot_pair_w8(x, x0, w, w0, w1, count):
    return dot(x, x0, w, w0, count), dot(x, x0, w, w1, count)


dot_pair = by_width("dot_pair", _dot_pair_w1, _dot_pair_w8)


@njit(**KERNEL)
def _input_grad_rows_w1(ga, x0, d0, weights, w0, fan_in, fan_out):  # hand-specialised
    """dx[k] = sum_o delta[o] B[o, k] for one sample, from 0, o in order."""
    fill(ga, x0, fan_in)
    for o in range(fan_out):
        axpy(ga, x0, load(ga, d0 + o), weights, w0 + o * fan_in, fan_in)


@njit(**KERNEL)
def _input_grad_rows_w8(ga, x0, d0, weights, w0, fan_in, fan_out):  # hand-specialised
    for k in range(fan_in):
        dx = zero(ga)
        for o in range(fan_out):
            dx = muladd(dx, load(ga, d0 + o), load(weights, w0 + o * fan_in + k))
        store(ga, x0 + k, dx)


input_grad_rows = by_width("input_grad_rows", _input_grad_rows_w1, _input_grad_rows_w8)


@njit(**KERNEL)
def dense_forward(op, p, a, nb):
    """out[n, o] = sum_i x[n, i] w[o, i] + b[o] (two outputs per pass over x)."""
    fan_in, fan_out, w0, b0 = op.in_c, op.out_c, op.weight_offset, op.bias_offset
    for n in range(nb):
        x0 = op.in_offset + n * fan_in
        y0 = op.out_offset + n * fan_out
        o = 0
        while o + 2 <= fan_out:
            first, second = dot_pair(a, x0, p, w0 + o * fan_in, w0 + (o + 1) * fan_in, fan_in)
            if b0 >= 0:
                first = add(first, load(p, b0 + o))
                second = add(second, load(p, b0 + o + 1))
            store(a, y0 + o, first)
            store(a, y0 + o + 1, second)
            o += 2
        if o < fan_out:
            last = dot(a, x0, p, w0 + o * fan_in, fan_in)
            if b0 >= 0:
                last = add(last, load(p, b0 + o))
            store(a, y0 + o, last)


@njit(**KERNEL)
def dense_backward(op, weights, w0, a, ga, gp, nb, need_dx):
    """dw[o, i] = sum_n delta[n, o] x[n, i]; db[o] = sum_n delta[n, o]; and, if
    ``need_dx``, dx[n, i] = sum_o delta[n, o] B[o, i] with B = ``weights[w0:]`` (W, or a
    rule's feedback weights). The first sample's terms are added to 0 as they are
    written (no separate zeroing pass)."""
    fan_in, fan_out, wp, b0 = op.in_c, op.out_c, op.weight_offset, op.bias_offset
    for n in range(nb):
        x0 = op.in_offset + n * fan_in
        d0 = op.out_offset + n * fan_out
        for o in range(fan_out):
            d = load(ga, d0 + o)
            if b0 >= 0:
                store(gp, b0 + o, add(zero(gp) if n == 0 else load(gp, b0 + o), d))
            if n == 0:
                scaled_into(gp, wp + o * fan_in, d, a, x0, fan_in)
            else:
                axpy(gp, wp + o * fan_in, d, a, x0, fan_in)
        if need_dx:
            input_grad_rows(ga, x0, d0, weights, w0, fan_in, fan_out)
