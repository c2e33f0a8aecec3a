"""Eight replicas side by side: the lane layout and its vector helpers.

In the lane layout a block of ``LANES`` replicas shares every array, with the replica
axis innermost: value ``k`` of lane ``l`` sits at ``k * LANES + l``. Every op then
works on whole *slots* (the ``LANES`` values of one position) at a time, and a slot is
one AVX-512 register (two AVX2 ones). The helpers here move slots in and out of arrays
as tuples and do arithmetic on them lane by lane; LLVM's SLP vectorizer turns each
into one vector instruction, provided every load of a statement comes before its
store (so nothing can alias) -- which is why each helper loads whole tuples first.

Each lane's arithmetic is exactly the per-replica kernels' (same operations, same
order), so a replica computes the same bits alone, in any lane, among any others.
Numba leaves the SLP vectorizer off by default and its loop vectorizer turns slot
loops into gathers: :func:`vector_codegen` switches both while the lane kernels compile.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
from numba import njit

LANES = 8
U = np.uint64  # unsigned indices: no negative-index branch (see kernels_conv)
JIT = {"cache": True, "nogil": True, "error_model": "numpy"}


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


@njit(**JIT)
def vload(a, slot):
    i = U(slot * 8)
    return (a[i], a[i + U(1)], a[i + U(2)], a[i + U(3)], a[i + U(4)], a[i + U(5)],
            a[i + U(6)], a[i + U(7)])


@njit(**JIT)
def vstore(a, slot, v):
    i = U(slot * 8)
    a[i], a[i + U(1)], a[i + U(2)], a[i + U(3)] = v[0], v[1], v[2], v[3]
    a[i + U(4)], a[i + U(5)], a[i + U(6)], a[i + U(7)] = v[4], v[5], v[6], v[7]


@njit(**JIT)
def vzero():
    return (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)


@njit(**JIT)
def vadd(u, v):
    return (u[0] + v[0], u[1] + v[1], u[2] + v[2], u[3] + v[3], u[4] + v[4], u[5] + v[5],
            u[6] + v[6], u[7] + v[7])


@njit(**JIT)
def vmul(u, v):
    return (u[0] * v[0], u[1] * v[1], u[2] * v[2], u[3] * v[3], u[4] * v[4], u[5] * v[5],
            u[6] * v[6], u[7] * v[7])


@njit(**JIT)
def vmuladd(y, w, x):
    """y + w * x, lane by lane."""
    return (y[0] + w[0] * x[0], y[1] + w[1] * x[1], y[2] + w[2] * x[2], y[3] + w[3] * x[3],
            y[4] + w[4] * x[4], y[5] + w[5] * x[5], y[6] + w[6] * x[6], y[7] + w[7] * x[7])


@njit(**JIT)
def vhit(x, best):
    """1.0 where x equals best, else 0.0."""
    return (1.0 if x[0] == best[0] else 0.0, 1.0 if x[1] == best[1] else 0.0,
            1.0 if x[2] == best[2] else 0.0, 1.0 if x[3] == best[3] else 0.0,
            1.0 if x[4] == best[4] else 0.0, 1.0 if x[5] == best[5] else 0.0,
            1.0 if x[6] == best[6] else 0.0, 1.0 if x[7] == best[7] else 0.0)


@njit(**JIT)
def vsel(keep, new, old):
    """new where keep, else old."""
    return (new[0] if keep[0] else old[0], new[1] if keep[1] else old[1],
            new[2] if keep[2] else old[2], new[3] if keep[3] else old[3],
            new[4] if keep[4] else old[4], new[5] if keep[5] else old[5],
            new[6] if keep[6] else old[6], new[7] if keep[7] else old[7])


@njit(**JIT)
def vfill(out, o0, count):
    zero = vzero()
    for k in range(count):
        vstore(out, o0 + k, zero)


@njit(**JIT)
def vcopy(out, o0, src, s0, count):
    for k in range(count):
        vstore(out, o0 + k, vload(src, s0 + k))


@njit(**JIT)
def vaxpy(out, o0, w, src, s0, count):
    """out[o0 + k] += w * src[s0 + k] (w a slot's values)."""
    for k in range(count):
        vstore(out, o0 + k, vmuladd(vload(out, o0 + k), w, vload(src, s0 + k)))


@njit(**JIT)
def vdot(u, u0, v, v0, count):
    """Lane by lane, kernels_dense.dot: four interleaved partial sums, in its order."""
    s0 = s1 = s2 = s3 = vzero()
    k = 0
    while k + 4 <= count:
        s0 = vmuladd(s0, vload(u, u0 + k), vload(v, v0 + k))
        s1 = vmuladd(s1, vload(u, u0 + k + 1), vload(v, v0 + k + 1))
        s2 = vmuladd(s2, vload(u, u0 + k + 2), vload(v, v0 + k + 2))
        s3 = vmuladd(s3, vload(u, u0 + k + 3), vload(v, v0 + k + 3))
        k += 4
    while k < count:
        s0 = vmuladd(s0, vload(u, u0 + k), vload(v, v0 + k))
        k += 1
    return vadd(vadd(s0, s1), vadd(s2, s3))


@njit(**JIT)
def vsum(u, u0, count, total):
    """total + u[u0] + u[u0 + 1] + ..., in order."""
    for k in range(count):
        total = vadd(total, vload(u, u0 + k))
    return total
