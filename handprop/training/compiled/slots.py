"""The slot API: every compiled kernel is written once, for one replica or for eight.

A kernel reads and writes *slots*, position ``i`` of an array. In the per-replica layout
an array is a plain 1-D NumPy array and a slot is one value. In the lane layout it is a
:class:`Lanes`: eight arrays interleaved, the lane axis innermost (value ``k`` of lane
``l`` at ``k * LANES + l``), and a slot is the eight lanes' values, a tuple of eight.
The operations here do the same arithmetic on either: Numba compiles each kernel once
for each layout (the argument types differ), so both layouts run one source, and each
lane computes exactly what the same replica computes alone, bit for bit.

==================================  ===================================================
operation                           width 1 / width 8 (``LANES``)
==================================  ===================================================
``load(a, i)``, ``store(a, i, v)``  one value / the eight lanes of slot ``i``
``get(a, i, lane)``, ``put(...)``   one lane's value of slot ``i`` (per-lane work)
``row(rows, r)``                    row ``r`` of a 2-D array of rows (replicas, blocks)
``zero(a)``                         0.0 / eight of them (the sums' starting value)
``add sub mul muladd select ...``   scalar arithmetic / the same, lane by lane
``fill copy axpy dot``              loops over slots, written once on the above
==================================  ===================================================

For eight lanes LLVM's SLP vectorizer turns each lane-by-lane tuple into one vector
instruction, provided every load of a statement comes before its store (so nothing can
alias), which is why a slot is loaded whole; Numba leaves that vectorizer off and its
loop vectorizer turns slot loops into gathers, so :func:`vector_codegen` switches both
while the lane kernels compile.

Indices are cast to unsigned (``U``) where they are used: Numba guards every signed
index against Python's negative indexing, and that branch keeps the compiler from
vectorizing the inner loops (measured: 8x slower row updates). Kernels use NumPy's
error model (``KERNEL``): a division by zero gives inf or NaN, as in the reference,
instead of a Python exception and a branch before every division.
"""

from __future__ import annotations

import contextlib
import inspect
import math
from collections.abc import Iterator
from typing import NamedTuple

import numpy as np
from numba import njit, types
from numba.extending import overload

LANES = 8
U = np.uint64
KERNEL = {"cache": True, "nogil": True, "error_model": "numpy"}  # every kernel's options
SLOT = {"nogil": True, "error_model": "numpy"}  # the slot operations' (compiled inline)
BODY = {"nogil": True, "error_model": "numpy"}  # by_width's bodies, compiled as the operation


class Lanes(NamedTuple):
    """An array in the lane layout: ``values[k * LANES + l]`` is value k of lane l."""

    values: np.ndarray


@contextlib.contextmanager
def vector_codegen() -> Iterator[None]:
    """Numba compiles with the SLP vectorizer on and the loop vectorizer off inside."""
    from numba import config

    saved = config.LOOP_VECTORIZE, config.SLP_VECTORIZE
    config.LOOP_VECTORIZE, config.SLP_VECTORIZE = 0, 1
    try:
        yield
    finally:
        config.LOOP_VECTORIZE, config.SLP_VECTORIZE = saved


def is_lanes(array_type) -> bool:
    """Whether a Numba type is a :class:`Lanes` array (width 8)."""
    return isinstance(array_type, types.BaseNamedTuple) and array_type.instance_class is Lanes


def _slot(value_type) -> bool:
    return isinstance(value_type, types.BaseTuple)


def slot_function(name: str, doc: str):
    """A name for an operation whose implementations (one per width) are overloads."""

    def stub(*args):
        raise NotImplementedError(f"{name} runs inside compiled kernels only")

    stub.__name__, stub.__qualname__, stub.__doc__ = name, name, doc
    return stub


def by_width(name: str, one, eight):
    """An operation with a body per width: ``one`` on plain arrays, ``eight`` when any
    argument is :class:`Lanes` (for hand-specialised inner loops: the same arithmetic in
    another loop order). Both take the same arguments. The chosen body is compiled as
    the operation itself (measured: a wrapper calling it, or inlining it, cost the lane
    conv forward 40%)."""
    op = slot_function(name, one.__doc__ or "")
    arguments = ", ".join(inspect.signature(one.py_func).parameters)
    space = {"one": one.py_func, "eight": eight.py_func, "is_lanes": is_lanes}
    # Numba wants the typing function's parameters named as the body's: made here.
    exec(f"def choose({arguments}):\n"
         f"    return eight if any(is_lanes(x) for x in ({arguments},)) else one\n", space)
    overload(op, jit_options=BODY)(space["choose"])
    return op


# -- arrays --------------------------------------------------------------------------------

width = slot_function("width", "Values per slot of array ``a``: 1 or LANES.")
load = slot_function("load", "Slot ``i`` of ``a``: a value, or a tuple of LANES values.")
store = slot_function("store", "Write value(s) ``v`` into slot ``i`` of ``a``.")
get = slot_function("get", "Lane ``lane``'s value of slot ``i`` (lane 0 at width 1).")
put = slot_function("put", "Write one lane's value ``x`` into slot ``i``.")
row = slot_function("row", "Row ``r`` of ``rows`` (2-D or more), in ``rows``' layout.")
zero = slot_function("zero", "A slot's worth of 0.0 for array ``a`` (float64).")
gather = slot_function("gather", "Each lane's ``a[x0 + index[t]]`` (its own index, its own lane).")
hits_at = slot_function("hits_at", "1.0 in the lanes whose ``index[t]`` is ``at``, else 0.0.")


@overload(width, jit_options=SLOT)
def _width(a):
    size = LANES if is_lanes(a) else 1
    return lambda a: size


@overload(load, jit_options=SLOT)
def _load(a, i):
    if not is_lanes(a):
        return lambda a, i: a[U(i)]

    def load_lanes(a, i):
        v, at = a.values, U(i * LANES)
        return (v[at], v[at + U(1)], v[at + U(2)], v[at + U(3)], v[at + U(4)],
                v[at + U(5)], v[at + U(6)], v[at + U(7)])

    return load_lanes


@overload(store, jit_options=SLOT)
def _store(a, i, value):
    if not is_lanes(a):
        def store_one(a, i, value):
            a[U(i)] = value

        return store_one

    def store_lanes(a, i, value):
        v, at = a.values, U(i * LANES)
        v[at], v[at + U(1)], v[at + U(2)], v[at + U(3)] = value[0], value[1], value[2], value[3]
        v[at + U(4)], v[at + U(5)], v[at + U(6)], v[at + U(7)] = (value[4], value[5], value[6],
                                                                  value[7])

    return store_lanes


@overload(get, jit_options=SLOT)
def _get(a, i, lane):
    if not is_lanes(a):
        return lambda a, i, lane: a[U(i)]
    return lambda a, i, lane: a.values[U(i * LANES + lane)]


@overload(put, jit_options=SLOT)
def _put(a, i, lane, x):
    if not is_lanes(a):
        def put_one(a, i, lane, x):
            a[U(i)] = x

        return put_one

    def put_lane(a, i, lane, x):
        a.values[U(i * LANES + lane)] = x

    return put_lane


@overload(row, jit_options=SLOT)
def _row(rows, r):
    if not is_lanes(rows):
        return lambda rows, r: rows[r]
    return lambda rows, r: Lanes(rows.values[r])


@overload(zero, jit_options=SLOT)
def _zero(a):
    if not is_lanes(a):
        return lambda a: 0.0
    return lambda a: (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@overload(gather, jit_options=SLOT)
def _gather(a, x0, index, t):
    if not is_lanes(a):
        return lambda a, x0, index, t: a[U(x0 + index[U(t)])]

    def gather_lanes(a, x0, index, t):
        v, w, at = a.values, index.values, U(t * LANES)
        return (v[U((x0 + w[at]) * LANES)], v[U((x0 + w[at + U(1)]) * LANES + 1)],
                v[U((x0 + w[at + U(2)]) * LANES + 2)], v[U((x0 + w[at + U(3)]) * LANES + 3)],
                v[U((x0 + w[at + U(4)]) * LANES + 4)], v[U((x0 + w[at + U(5)]) * LANES + 5)],
                v[U((x0 + w[at + U(6)]) * LANES + 6)], v[U((x0 + w[at + U(7)]) * LANES + 7)])

    return gather_lanes


@overload(hits_at, jit_options=SLOT)
def _hits_at(index, t, at):
    if not is_lanes(index):
        return lambda index, t, at: 1.0 if index[U(t)] == at else 0.0

    def hits_at_lanes(index, t, at):
        w, i = index.values, U(t * LANES)
        return (1.0 if w[i] == at else 0.0, 1.0 if w[i + U(1)] == at else 0.0,
                1.0 if w[i + U(2)] == at else 0.0, 1.0 if w[i + U(3)] == at else 0.0,
                1.0 if w[i + U(4)] == at else 0.0, 1.0 if w[i + U(5)] == at else 0.0,
                1.0 if w[i + U(6)] == at else 0.0, 1.0 if w[i + U(7)] == at else 0.0)

    return hits_at_lanes


# -- values: scalar arithmetic, lane by lane ------------------------------------------------


def lanewise(scalar, arity: int, name: str):
    """A slot operation from a scalar function: ``scalar`` itself on values, and on
    slots of eight the same function lane by lane (every argument a slot)."""
    op = slot_function(name, scalar.__doc__ or "")
    if arity == 1:
        @overload(op, jit_options=SLOT)
        def _one(x):
            if not _slot(x):
                return lambda x: scalar(x)
            return lambda x: (scalar(x[0]), scalar(x[1]), scalar(x[2]), scalar(x[3]),
                              scalar(x[4]), scalar(x[5]), scalar(x[6]), scalar(x[7]))
    elif arity == 2:
        @overload(op, jit_options=SLOT)
        def _two(x, y):
            if not _slot(x):
                return lambda x, y: scalar(x, y)
            return lambda x, y: (scalar(x[0], y[0]), scalar(x[1], y[1]), scalar(x[2], y[2]),
                                 scalar(x[3], y[3]), scalar(x[4], y[4]), scalar(x[5], y[5]),
                                 scalar(x[6], y[6]), scalar(x[7], y[7]))
    else:
        @overload(op, jit_options=SLOT)
        def _three(x, y, z):
            if not _slot(x):
                return lambda x, y, z: scalar(x, y, z)
            return lambda x, y, z: (scalar(x[0], y[0], z[0]), scalar(x[1], y[1], z[1]),
                                    scalar(x[2], y[2], z[2]), scalar(x[3], y[3], z[3]),
                                    scalar(x[4], y[4], z[4]), scalar(x[5], y[5], z[5]),
                                    scalar(x[6], y[6], z[6]), scalar(x[7], y[7], z[7]))
    return op


@njit(inline="always", **SLOT)
def _add(x, y):
    """x + y."""
    return x + y


@njit(inline="always", **SLOT)
def _sub(x, y):
    """x - y."""
    return x - y


@njit(inline="always", **SLOT)
def _mul(x, y):
    """x * y."""
    return x * y


@njit(inline="always", **SLOT)
def _div(x, y):
    """x / y."""
    return x / y


@njit(inline="always", **SLOT)
def _sqrt(x):
    """sqrt(x)."""
    return math.sqrt(x)


@njit(inline="always", **SLOT)
def _muladd(y, w, x):
    """y + w * x."""
    return y + w * x


@njit(inline="always", **SLOT)
def _select(keep, new, old):
    """new where keep, else old."""
    return new if keep else old


@njit(inline="always", **SLOT)
def _hit(x, best):
    """1.0 where x equals best, else 0.0."""
    return 1.0 if x == best else 0.0


@njit(inline="always", **SLOT)
def _positive(z):
    """1.0 where z > 0, else 0.0 (ReLU's derivative)."""
    return 1.0 if z > 0 else 0.0


@njit(inline="always", **SLOT)
def _relu(z):
    """max(z, 0), NaN kept."""
    return z if z > 0 or z != z else 0.0


@njit(inline="always", **SLOT)
def _arctan_slope(z):
    """arctan'(z) = 1 / (1 + z*z)."""
    return 1 / (1 + z * z)


@njit(inline="always", **SLOT)
def _tanh_slope(y):
    """tanh' from its value: 1 - y*y."""
    return 1 - y * y


@njit(inline="always", **SLOT)
def _sign(w):
    """numpy.sign(w): 1.0, -1.0, 0.0, or NaN."""
    return 1.0 if w > 0 else (-1.0 if w < 0 else (0.0 if w == 0 else w))


add = lanewise(_add, 2, "add")
sub = lanewise(_sub, 2, "sub")
mul = lanewise(_mul, 2, "mul")
div = lanewise(_div, 2, "div")
sqrt = lanewise(_sqrt, 1, "sqrt")
muladd = lanewise(_muladd, 3, "muladd")
select = lanewise(_select, 3, "select")
hit = lanewise(_hit, 2, "hit")
positive = lanewise(_positive, 1, "positive")
relu = lanewise(_relu, 1, "relu")
arctan_slope = lanewise(_arctan_slope, 1, "arctan_slope")
tanh_slope = lanewise(_tanh_slope, 1, "tanh_slope")
sign = lanewise(_sign, 1, "sign")

splat = slot_function("splat", "Scalar ``s`` as a value like ``like``'s (one, or LANES copies).")
lane = slot_function("lane", "Lane ``l`` of a value (the value itself at width 1).")
slot_count = slot_function("slot_count", "How many slots array ``a`` holds.")
taking = slot_function("taking", "The keep mask of row ``r`` for the step that starts at "
                       "sample ``start``: which lanes' replicas still have data.")
any_lane = slot_function("any_lane", "Whether any lane of a keep mask is set.")
kept = slot_function("kept", "A keep mask after :func:`any_lane` held: True at width 1 "
                     "(the row takes the step), the mask itself at width 8.")


@overload(splat, jit_options=SLOT)
def _splat(s, like):
    if not _slot(like):
        return lambda s, like: s
    return lambda s, like: (s, s, s, s, s, s, s, s)


@overload(slot_count, jit_options=SLOT)
def _slot_count(a):
    if not is_lanes(a):
        return lambda a: a.shape[0]
    return lambda a: a.values.shape[0] // LANES


@overload(taking, jit_options=SLOT)
def _taking(like, sizes, r, start):
    if not is_lanes(like):
        return lambda like, sizes, r, start: sizes[r] > start

    def lanes_taking(like, sizes, r, start):
        i = r * LANES
        return (sizes[i] > start, sizes[i + 1] > start, sizes[i + 2] > start,
                sizes[i + 3] > start, sizes[i + 4] > start, sizes[i + 5] > start,
                sizes[i + 6] > start, sizes[i + 7] > start)

    return lanes_taking


@overload(kept, jit_options=SLOT)
def _kept(keep):
    if not _slot(keep):
        return lambda keep: True
    return lambda keep: keep


@overload(any_lane, jit_options=SLOT)
def _any_lane(keep):
    if not _slot(keep):
        return lambda keep: keep
    return lambda keep: (keep[0] or keep[1] or keep[2] or keep[3] or keep[4] or keep[5]
                         or keep[6] or keep[7])


@overload(lane, jit_options=SLOT)
def _lane(value, index):
    if not _slot(value):
        return lambda value, index: value
    return lambda value, index: value[index]


# -- loops over slots --------------------------------------------------------------------


@njit(**KERNEL)
def fill(out, o0, count):
    """out[o0 : o0 + count] = 0 (a loop: Numba's slice assignment costs tens of ns of
    set-up, as much as the work on the article's small maps)."""
    nothing = zero(out)
    for k in range(count):
        store(out, o0 + k, nothing)


@njit(**KERNEL)
def copy(out, o0, src, s0, count):
    """out[o0 : o0 + count] = src[s0 : s0 + count] (a loop, see :func:`fill`)."""
    for k in range(count):
        store(out, o0 + k, load(src, s0 + k))


@njit(**KERNEL)
def axpy(out, o0, w, src, s0, count):
    """out[o0 + k] += w * src[s0 + k] for k < count (w one slot's value)."""
    for k in range(count):
        store(out, o0 + k, muladd(load(out, o0 + k), w, load(src, s0 + k)))


@njit(**KERNEL)
def scaled_into(out, o0, w, src, s0, count):
    """out[o0 + k] = 0 + w * src[s0 + k] (what zeroing then :func:`axpy` gives)."""
    nothing = zero(out)
    for k in range(count):
        store(out, o0 + k, muladd(nothing, w, load(src, s0 + k)))


@njit(**KERNEL)
def dot(u, u0, v, v0, count):
    """sum_k u[u0 + k] v[v0 + k] in four interleaved partial sums (four independent
    chains of adds instead of one; a fixed order all the same)."""
    s0 = s1 = s2 = s3 = zero(u)
    k = 0
    while k + 4 <= count:
        s0 = muladd(s0, load(u, u0 + k), load(v, v0 + k))
        s1 = muladd(s1, load(u, u0 + k + 1), load(v, v0 + k + 1))
        s2 = muladd(s2, load(u, u0 + k + 2), load(v, v0 + k + 2))
        s3 = muladd(s3, load(u, u0 + k + 3), load(v, v0 + k + 3))
        k += 4
    while k < count:
        s0 = muladd(s0, load(u, u0 + k), load(v, v0 + k))
        k += 1
    return add(add(s0, s1), add(s2, s3))


@njit(**KERNEL)
def total(u, u0, count, start):
    """start + u[u0] + u[u0 + 1] + ..., in order."""
    for k in range(count):
        start = add(start, load(u, u0 + k))
    return start


@njit(**KERNEL)
def rotate_maps(a, start, maps, plane):
    """Rotate ``maps`` consecutive maps of ``plane`` slots by 180 degrees, in place."""
    for m in range(maps):
        base = start + m * plane
        for k in range(plane // 2):
            last = base + plane - 1 - k
            first, second = load(a, base + k), load(a, last)
            store(a, base + k, second)
            store(a, last, first)
