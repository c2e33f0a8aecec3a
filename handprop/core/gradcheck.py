"""Finite-difference checks of the hand-written gradients.

Every check contracts the output with a fixed *random* upstream gradient ``R`` (not
all-ones, which would hide transposed or mis-summed gradients) and compares, entry by
entry, the hand-written gradient of ``f = sum(R * output)`` with central differences::

    df/dp_i ~ (f(p + h e_i) - f(p - h e_i)) / (2h)

The error measure is the worst entry's error relative to the array's scale,
``max_i |a_i - n_i| / max(max_i |a_i|, max_i |n_i|)``: an error small next to the
gradient's own size, which stays meaningful when single entries are (near) zero.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .limits import check_int
from .network import Network


def rel_error(analytic: np.ndarray, numeric: np.ndarray) -> float:
    """``max |a - n| / max(max |a|, max |n|)`` (0 when both are all zero)."""
    analytic = np.asarray(analytic, dtype=np.float64)
    numeric = np.asarray(numeric, dtype=np.float64)
    scale = max(np.abs(analytic).max(initial=0.0), np.abs(numeric).max(initial=0.0))
    if scale == 0.0:
        return 0.0
    return float(np.abs(analytic - numeric).max() / scale)


def numerical_grad(
    f: Callable[[], float],
    array: np.ndarray,
    eps: float = 1e-6,
    entries: np.ndarray | None = None,
) -> np.ndarray:
    """Central differences of the scalar ``f()`` with respect to ``array`` (changed in
    place and restored). ``entries``: flat indices to check (default: all); others are 0.
    """
    grad = np.zeros(array.shape, dtype=np.float64)
    for i in range(array.size) if entries is None else entries:
        at = np.unravel_index(i, array.shape)  # works for strided views (replicas) too
        original = array[at]
        array[at] = original + eps
        plus = f()
        array[at] = original - eps
        minus = f()
        array[at] = original
        grad[at] = (plus - minus) / (2 * eps)
    return grad


@dataclass
class ParamCheck:
    """Result for one parameter array."""

    name: str
    rel_error: float
    checked: int
    size: int


def check_network(
    net: Network,
    x: np.ndarray,
    rng: np.random.Generator,
    max_entries: int | None = None,
    eps: float = 1e-6,
) -> list[ParamCheck]:
    """Compare ``net.backward`` with finite differences for every parameter.

    The forward passes run in train mode (batch norm with batch statistics, which depend
    on the parameters like any other forward computation); the network's state is left
    as it was.

    Parameters
    ----------
    net : a float64 Network with parameters
    x : (N, *input_shape) inputs
    rng : draws the upstream gradient and, with ``max_entries``, which entries to check
    max_entries : check at most this many random entries per array (default: all)

    Returns
    -------
    list of ParamCheck, one per parameter array, in network order.
    """
    if max_entries is not None:
        check_int(max_entries, "max_entries", 1, 2**62)
    state = net.buffer_flat.copy()  # train-mode passes move running statistics: restored
    try:
        return _check_params(net, x, rng, max_entries, eps)
    finally:
        net.buffer_flat[...] = state


def _check_params(net: Network, x: np.ndarray, rng: np.random.Generator,
                  max_entries: int | None, eps: float) -> list[ParamCheck]:
    """:func:`check_network` without restoring the state."""
    out, tape = net.forward(x)
    upstream = rng.standard_normal(out.shape)
    grads = net.backward(tape, upstream)

    def objective() -> float:
        return float(np.sum(upstream * net.forward(x)[0]))

    results = []
    for name, param in net.params.items():
        entries = None
        if max_entries is not None and param.size > max_entries:
            entries = np.sort(rng.choice(param.size, size=max_entries, replace=False))
        numeric = numerical_grad(objective, param, eps, entries)
        analytic = grads[name]
        if entries is not None:
            numeric = numeric.reshape(-1)[entries]
            analytic = analytic.reshape(-1)[entries]
        results.append(
            ParamCheck(name, rel_error(analytic, numeric),
                       param.size if entries is None else len(entries), param.size)
        )
    return results
