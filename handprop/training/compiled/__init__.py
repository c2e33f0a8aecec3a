"""The compiled training engine (Numba): a whole epoch per call, R replicas side by side.

==========================  ===========================================================
module                      what
==========================  ===========================================================
``adapter.py``              everything read from learning rules (config and state)
``plan.py``                 network + rule + optimizer + loss -> integer tables
``kernels_conv.py``         conv2d (and the as-run layer) forward, weight/bias gradient,
                            input gradient
``kernels_pool.py``         max-pool forward (first maximum) and every routing
``kernels_dense.py``        dense forward and gradients
``kernels_norm.py``         average pooling, batch norm (train mode, running statistics)
``kernels_elementwise.py``  activations, losses, optimizer updates
``special.py``              arctan and tanh in plain (vectorizable) arithmetic
``kernels_epoch.py``        one replica's steps (the per-replica layout)
``lanes.py``                the lane layout: eight replicas per block, slot helpers
``lanes_ops.py``            the ops in the lane layout (conv stride 1, pools, dense, act)
``lanes_epoch.py``          a block's steps: eight replicas at once
``lanes_batch.py``          one network's minibatch, eight samples at once
``engine.py``               :class:`CompiledEpoch`, the driver (arrays in, state back)
==========================  ===========================================================

Two layouts, one arithmetic. A single network (online) runs the per-replica kernels.
Replicated runs (R >= 2) run in the lane layout: the replica axis innermost, eight
replicas per block, each op one vector instruction per position for all eight, which
amortizes the loop overhead that dominates the article's tiny maps (the lane kernels
cover the ops the studies use; anything else runs per replica). A single network's
minibatches (multiples of eight) put their samples in the lanes. Every lane kernel does
exactly the per-replica kernels' operations in their order, so a replica gets the same
bits alone, among any others, on any number of threads.

Importing this package does not import Numba (nor does importing handprop): only
:func:`compiled_engine` does, when an engine is built. Kernels are compiled on first
use and cached on disk, in a folder named by a hash of every source of this package
(``cache.py``: where it lives, and why a stale or corrupted entry is never run), so
later processes load them in about a second.
"""

from __future__ import annotations

from typing import Any

from ...core.network import Network
from ...rules.base import LearningRule
from . import cache
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
    cache.prepare()  # the kernels, cached where no stale or corrupted entry can run
    from .engine import CompiledEpoch

    return CompiledEpoch(net, rule, optimizer, loss, reduction, batch_size, threads)
