"""The memory a training run needs on the engine that runs it, for the budget of
:mod:`handprop.core.limits`.

The NumPy engine's estimate is the core's (:func:`~handprop.core.limits.
estimate_training_bytes`: parameters, optimizer and rule state, what every layer keeps
for its backward pass -- im2col windows, max-pool indices -- the largest backward pass's
temporaries, the data). The compiled engine's is its arenas, as its plan sizes them,
in the layout it would use, plus Numba's own cost in a process (:data:`~handprop.core.
limits.COMPILED_RUNTIME`). Each layout of the compiled engine says what it allocates
(``Layout.workspace`` in :mod:`handprop.training.compiled.capabilities`).

``engine="auto"`` counts the compiled engine where ``auto`` would choose it (a small
step, see :func:`~handprop.training.epoch.compiled_is_faster`), else NumPy.
"""

from __future__ import annotations

from math import prod
from typing import Any

from ..core.limits import COMPILED_RUNTIME, estimate_training_bytes

LANES = 8  # integer arena rows are padded to blocks of eight replicas


def compiled_workspace(net: Any, replicas: int, batch: int, samples: int,
                       itemsize: int, auto: bool = False) -> int | None:
    """Bytes the compiled engine allocates for ``net`` (the most any layout that runs it
    would: each layout's ``values_needed`` for a plan of its own arenas; ``auto``: any
    layout ``auto`` would train in, one made for the work that beats NumPy on it) plus
    Numba's cost in the process; None when it cannot run the network or ``auto`` would
    not use it (NumPy then does)."""
    from .compiled.capabilities import (
        UnsupportedError,
        Workload,
        macs_per_sample,
        runnable_layouts,
    )
    from .compiled.plan import build_plan, survey
    from .optim import make_optimizer

    try:
        found = survey(net, None, make_optimizer("adam", 1e-3), "l2", "sum")
    except UnsupportedError:
        return None
    dtype = "float32" if itemsize == 4 else "float64"
    work = Workload(replicas, batch, dtype, macs_per_sample(net))
    layouts, _ = runnable_layouts(found, dtype)
    if auto:
        layouts = [lay for lay in layouts if lay.fits(work) and lay.beats_numpy(work)]
    if not layouts:
        return None
    needed = []
    for layout in layouts:
        plan = build_plan(found, layout.arena_batch(batch))
        integers = LANES * -(-replicas // LANES) * plan.ints
        needed.append(layout.values_needed(plan, net, replicas, samples) * itemsize
                      + integers * 8)
    return max(needed) + COMPILED_RUNTIME


def estimate_run_bytes(net: Any, replicas: int = 1, batch: int = 1, samples: int = 0,
                       itemsize: int = 8, engine: str = "auto") -> int:
    """Bytes a run of ``net`` needs at its peak on ``engine`` (numpy, compiled or auto),
    a process's baseline aside."""
    from .epoch import compiled_is_faster

    numpy_bytes = estimate_training_bytes(net, replicas, batch, samples, itemsize)
    if engine == "numpy" or (engine == "auto" and not compiled_is_faster(net, batch)):
        return numpy_bytes
    compiled = compiled_workspace(net, replicas, batch, samples, itemsize,
                                  auto=engine == "auto")
    if compiled is None:
        return numpy_bytes
    params = int(net.num_params) + int(getattr(net, "num_state", 0))
    state = (4 * params + 2 * prod(net.input_shape) * samples) * replicas * itemsize
    # auto may still fall back to NumPy for a rule the compiled engine lacks
    return max(state + compiled, numpy_bytes) if engine == "auto" else state + compiled
