"""The compiled training engine (Numba): a whole epoch per call, R replicas side by side.

==========================  ===========================================================
module                      what
==========================  ===========================================================
``adapter.py``              everything read from learning rules (config and state)
``plan.py``                 network + rule + optimizer + loss -> integer tables
``kernels_conv.py``         conv2d forward, weight/bias gradient, input gradient
``kernels_pool.py``         max-pool forward (first maximum) and every routing
``kernels_dense.py``        dense forward and gradients
``kernels_elementwise.py``  activations, losses, optimizer updates
``kernels_epoch.py``        one replica's steps; the replicas side by side
``engine.py``               :class:`CompiledEpoch`, the driver (arrays in, state back)
==========================  ===========================================================

Importing this package does not import Numba (nor does importing handprop): only
:func:`compiled_engine` does, when an engine is built. Kernels are compiled on first
use and cached on disk (``__pycache__``), so later processes load them in about a
second. Note for developers: Numba's cache is keyed on the file of the function it
compiled, not on the files of the functions it calls; after editing a kernel module,
clear the caches (``find handprop -name '*.nbi' -delete``) or the epoch kernel may run
the old callee.
"""

from __future__ import annotations

from typing import Any

from ...core.network import Network
from ...rules.base import LearningRule
from .adapter import UnsupportedError
from .plan import build_plan

__all__ = ["UnsupportedError", "compiled_engine", "unsupported_reason"]


def _numba_missing() -> str | None:
    import importlib.util

    if importlib.util.find_spec("numba") is None:
        return "numba is not installed"
    return None


def unsupported_reason(net: Network, rule: LearningRule | None, optimizer: Any, loss: str,
                       reduction: str, batch_size: int) -> str | None:
    """Why the compiled engine cannot run this configuration, or None if it can."""
    missing = _numba_missing()
    if missing:
        return missing
    try:
        build_plan(net, rule, optimizer, loss, reduction, batch_size)
    except UnsupportedError as exc:
        return str(exc)
    return None


def compiled_engine(net: Network, rule: LearningRule | None, optimizer: Any, loss: str,
                    reduction: str, batch_size: int, threads: int = 1) -> Any:
    """A :class:`~.engine.CompiledEpoch`; raises :class:`UnsupportedError` (with the reason)
    for a configuration it cannot run."""
    missing = _numba_missing()
    if missing:
        raise UnsupportedError(missing)
    from .engine import CompiledEpoch

    return CompiledEpoch(net, rule, optimizer, loss, reduction, batch_size, threads)
