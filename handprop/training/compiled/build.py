"""The compiled engine's entry points: whether it can run a configuration, and building
it (see the package notes, :mod:`handprop.training.compiled`)."""

from __future__ import annotations

import importlib.util
from typing import Any

from ...core.network import Network
from ...rules.base import LearningRule
from .cache import load_kernels, note_if_in_memory
from .capabilities import UnsupportedError, Workload, choose_layout

__all__ = ["UnsupportedError", "compiled_engine", "numba_missing", "unsupported_reason"]


def numba_missing() -> str | None:
    """Why Numba cannot be used (not installed), or None."""
    if importlib.util.find_spec("numba") is None:
        return "numba is not installed"
    return None


def unsupported_reason(net: Network, rule: LearningRule | None, optimizer: Any, loss: str,
                       reduction: str, batch_size: int) -> str | None:
    """Why the compiled engine cannot run this configuration, or None if it can."""
    missing = numba_missing()
    if missing:
        return missing
    from .plan import survey

    try:
        found = survey(net, rule, optimizer, loss, reduction)
        choose_layout(Workload.of(net, batch_size), found)
    except UnsupportedError as exc:
        return str(exc)
    return None


def compiled_engine(net: Network, rule: LearningRule | None, optimizer: Any, loss: str,
                    reduction: str, batch_size: int, threads: int = 1,
                    layout: str | None = None) -> Any:
    """A :class:`~.engine.CompiledEpoch` (in the layout called ``layout``, else the one
    chosen for the work); raises :class:`UnsupportedError` (with the reason) for a
    configuration it cannot run."""
    missing = numba_missing()
    if missing:
        raise UnsupportedError(missing)
    load_kernels()
    note_if_in_memory()
    from .engine import CompiledEpoch

    return CompiledEpoch(net, rule, optimizer, loss, reduction, batch_size, threads, layout)
