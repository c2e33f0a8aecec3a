"""arctan and tanh for the compiled engine, in plain arithmetic.

libm's ``atan``/``tanh`` are calls the compiler cannot vectorize, and the article's net
spends a third of a lane step in them. These are Cephes' (S. L. Moshier) rational
approximations -- within 2 ulp of the true value -- written without branches (every
case computed, the right one selected), so eight lanes become one vector of code, and
a value gets the same bits whether it is computed alone or in a vector: every layout
uses them (``atan_slots``/``tanh_slots``: a slot's values, lane by lane), so a replica is
bit-identical alone and among others.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

from .slots import KERNEL as JIT
from .slots import lanewise

T3P8 = 2.41421356237309504880  # tan(3 pi / 8)
MOREBITS = 6.123233995736765886130e-17  # pi/2 - float(pi/2)
HALF_PI, QUARTER_PI = 1.57079632679489661923, 7.85398163397448309616e-1
# exp(2|x|) is needed only below 20: above, tanh is 1.0 to the last bit
TANH_ONE = 20.0
LOG2E = 1.4426950408889634073599
C1, C2 = 6.93145751953125e-1, 1.42860682030941723212e-6  # ln 2 = C1 + C2
POW2 = np.array([2.0**n for n in range(64)])


@njit(inline="always", **JIT)
def atan(x):
    """Cephes ``atan``: reduced to |t| <= 0.66, then t + t z P(z)/Q(z), z = t*t.

    The three reductions -- t = -1/|x| above tan(3 pi/8), (|x| - 1)/(|x| + 1) above
    0.66, |x| below -- are blended with 0/1 weights in one division (no branch, so it
    vectorizes fully): each weighted term is exact (x * 1, and 0 * a finite value,
    with |x| clipped where only the discarded terms use it), so the sums are too."""
    ax = abs(x)
    big = 1.0 * (ax > T3P8)
    mid = 1.0 * (ax > 0.66) - big
    small = 1.0 - big - mid
    near = min(ax, 10.0)  # the mid and small terms' |x|: finite when they are discarded
    t = (-big + mid * (near - 1.0) + small * near) / (big * ax + mid * (near + 1.0) + small)
    base = big * HALF_PI + mid * QUARTER_PI
    extra = big * MOREBITS + mid * (0.5 * MOREBITS)
    z = t * t
    p = (((-8.750608600031904122785e-1 * z - 1.615753718733365076637e1) * z
          - 7.500855792314704667340e1) * z - 1.228866684490136173410e2) * z \
        - 6.485021904942025371773e1
    q = ((((z + 2.485846490142306297962e1) * z + 1.650270098316988542046e2) * z
          + 4.328810604912902668951e2) * z + 4.853903996359136964868e2) * z \
        + 1.945506571482613964425e2
    y = base + ((t * (z * p / q) + t) + extra)
    return math.copysign(y, x)


@njit(inline="always", **JIT)
def _exp_small(x):
    """Cephes ``exp`` for 0 <= x <= 2 * TANH_ONE (so 2**n comes from a table)."""
    n = math.floor(LOG2E * x + 0.5)
    r = (x - n * C1) - n * C2
    rr = r * r
    p = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr
             + 9.99999999999999999910e-1)
    q = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr
         + 2.27265548208155028766e-1) * rr + 2.00000000000000000009e0
    return (1.0 + 2.0 * (p / (q - p))) * POW2[int(n)]


@njit(inline="always", **JIT)
def tanh(x):
    """Cephes ``tanh``: x + x s P(s)/Q(s) (s = x*x) below 0.625, else 1 - 2/(e^2|x| + 1)."""
    ax = abs(x)
    clipped = ax if ax < TANH_ONE else TANH_ONE  # NaN stays NaN
    clipped = clipped if clipped == clipped else 0.0
    large = 1.0 - 2.0 / (_exp_small(2.0 * clipped) + 1.0)
    large = -large if x < 0 else large
    s = x * x
    p = (-9.64399179425052238628e-1 * s - 9.92877231001918586564e1) * s \
        - 1.61468768441708447952e3
    q = ((s + 1.12811678491632931402e2) * s + 2.23548839060100448583e3) * s \
        + 4.84406305325125486048e3
    small = x + x * s * (p / q)
    # tanh is odd: the sign is x's (this only changes tanh(-0.0), which was +0.0)
    return math.copysign(large if ax >= 0.625 else small, x)


atan_slots = lanewise(atan, 1, "atan_slots")  # a slot's arctan, lane by lane
tanh_slots = lanewise(tanh, 1, "tanh_slots")
