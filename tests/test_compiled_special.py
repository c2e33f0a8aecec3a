"""The compiled engine's arctan and tanh (Cephes, plain arithmetic) against NumPy's libm:
within 2 ulp everywhere, and the special values (0, -0, +-inf, NaN) right."""

from __future__ import annotations

import numpy as np
import pytest

numba = pytest.importorskip("numba")


@pytest.fixture(scope="module")
def vectorized():
    from handprop.training.compiled import special

    @numba.njit
    def apply(values, which):
        out = np.empty_like(values)
        for k in range(values.size):
            out[k] = special.atan(values[k]) if which == 0 else special.tanh(values[k])
        return out

    return {"atan": lambda v: apply(v, 0), "tanh": lambda v: apply(v, 1)}


def _probe_values() -> np.ndarray:
    rng = np.random.default_rng(0)
    magnitudes = np.concatenate([
        np.logspace(-300, 300, 20_001),
        rng.uniform(0.0, 3.0, 50_000),  # where the reductions switch (0.66, 2.414, 0.625)
        rng.standard_normal(50_000) * 10.0,
        [0.66, 0.625, 2.41421356237309504880, 20.0, 1.0, 1e-8],
    ])
    magnitudes = np.abs(magnitudes)
    return np.concatenate([magnitudes, -magnitudes])


@pytest.mark.parametrize("name, reference", [("atan", np.arctan), ("tanh", np.tanh)])
def test_within_two_ulp_of_libm(vectorized, name, reference):
    x = _probe_values()
    ours, theirs = vectorized[name](x), reference(x)
    ulps = np.abs(ours - theirs) / np.spacing(np.abs(theirs))
    assert ulps.max() <= 2.0, (name, x[np.argmax(ulps)], ulps.max())
    assert np.array_equal(np.signbit(ours), np.signbit(theirs))


@pytest.mark.parametrize("name, reference", [("atan", np.arctan), ("tanh", np.tanh)])
def test_special_values(vectorized, name, reference):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e308, -1e308, 5e-324])
    ours, theirs = vectorized[name](x), reference(x)
    assert np.array_equal(ours, theirs, equal_nan=True)
    assert np.array_equal(np.signbit(ours[:2]), np.signbit(theirs[:2]))
