"""The compiled training engine (Numba): a whole epoch per call, R replicas side by side.

==========================  ===========================================================
module                      what
==========================  ===========================================================
``capabilities.py``         what the engine supports, said once: op specs (registered
                            by the kernel modules), layouts, rules, losses, optimizers
``plan.py``                 network + rule description + optimizer + loss -> named tables
``slots.py``                the slot API every kernel is written against (width 1 or 8)
``kernels_<ops>.py``        one per family of ops (conv, pool, dense, norm, activation,
                            scale, ...): each op's OpSpec and kernels; every such module
                            is loaded by :func:`load_kernels`
``special.py``              arctan and tanh in plain (vectorizable) arithmetic
``kernels_step.py``         the loss and the optimizer update
``kernels_epoch.py``        the epoch: forward walk, the rule's backward walk, a row's
                            steps (a replica, or a block of eight)
``kernels_batch.py``        one network's minibatch, eight samples at once; the lane entry
``engine.py``               :class:`CompiledEpoch`, the driver, and each layout's runner
==========================  ===========================================================

Layouts, one arithmetic. A single network (online) runs per replica; replicated runs
(R >= 3) run in *lanes*: the replica axis innermost, eight replicas per block, each op
one vector instruction per position for all eight, which amortizes the loop overhead
that dominates the article's tiny maps; a single network's minibatches (multiples of
eight) put their samples in the lanes. Every kernel is written once against
:mod:`.slots` and compiled for each layout, so a replica gets the same bits alone,
among any others, on any number of threads; the few inner loops written separately per
width (marked ``hand-specialised``) do the same operations in another loop order.

Importing this package does not import Numba (nor does importing handprop): only
building an engine or a plan does, through :func:`load_kernels`. Kernels are compiled on
first use and cached on disk (``__pycache__``), so later processes load them in about a
second. :func:`prepare_cache` runs before any kernel module is imported: Numba keys a
cached function on its own file only, not on the files of the functions it calls, so
an edited kernel module could leave the epoch kernel running the old code; it clears
the package's Numba cache whenever any of its source files changed.
"""

from __future__ import annotations

import hashlib
import importlib
import pkgutil
from pathlib import Path
from typing import Any

from ...core.network import Network
from ...rules.base import LearningRule
from .capabilities import UnsupportedError

__all__ = ["UnsupportedError", "compiled_engine", "load_kernels", "prepare_cache",
           "unsupported_reason"]
_prepared = _loaded = False


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
    from .capabilities import Workload, choose_layout
    from .plan import survey

    try:
        found = survey(net, rule, optimizer, loss, reduction)
        choose_layout(Workload.of(net, batch_size), found)
    except UnsupportedError as exc:
        return str(exc)
    return None


def prepare_cache() -> None:
    """Make the on-disk Numba cache safe to load (once per process, before any kernel
    module is imported)."""
    global _prepared
    if not _prepared:
        _drop_stale_cache()
        _prepared = True


def load_kernels() -> None:
    """Import every kernel module (each registers the ops it compiles), after
    :func:`prepare_cache` (once per process)."""
    global _loaded
    if _loaded:
        return
    prepare_cache()
    for module in pkgutil.iter_modules(__path__):
        if module.name.startswith("kernels_"):
            importlib.import_module(f"{__name__}.{module.name}")
    _loaded = True


def _drop_stale_cache() -> None:
    """Delete this package's Numba cache files if its sources changed since they were
    written (a digest of every module is kept beside the cache)."""
    here = Path(__file__).parent
    digest = hashlib.sha256()
    for source in sorted(here.glob("*.py")):
        digest.update(source.read_bytes())
    cache = here / "__pycache__"
    stamp = cache / "kernels.sha256"
    try:
        if stamp.read_text() == digest.hexdigest():
            return
    except OSError:
        pass
    try:
        for stale in [*cache.glob("*.nbi"), *cache.glob("*.nbc")]:
            stale.unlink(missing_ok=True)
        cache.mkdir(exist_ok=True)
        stamp.write_text(digest.hexdigest())
    except OSError:  # a read-only install: Numba then compiles in memory (or elsewhere)
        pass


def compiled_engine(net: Network, rule: LearningRule | None, optimizer: Any, loss: str,
                    reduction: str, batch_size: int, threads: int = 1) -> Any:
    """A :class:`~.engine.CompiledEpoch`; raises :class:`UnsupportedError` (with the reason)
    for a configuration it cannot run."""
    missing = _numba_missing()
    if missing:
        raise UnsupportedError(missing)
    load_kernels()
    from .engine import CompiledEpoch

    return CompiledEpoch(net, rule, optimizer, loss, reduction, batch_size, threads)
