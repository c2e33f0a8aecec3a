"""The engine contract: what :func:`handprop.training.loop.fit` needs from an engine,
what an epoch returns, and the notice ``auto`` gives when it keeps NumPy.

A leaf module, so that every engine (the NumPy reference in :mod:`.epoch`, the compiled
engine in :mod:`.compiled`) can import it while :mod:`.epoch` chooses among them
(:func:`~handprop.training.epoch.make_engine`, which exports these names too).
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

import numpy as np

ENGINES = ("auto", "numpy", "compiled")


class EpochResult(NamedTuple):
    """cost (R,) float64: summed step costs; bad_step (R,) int64: first step with a
    non-finite cost (1-based), 0 for none; steps: optimizer steps taken."""

    cost: np.ndarray
    bad_step: np.ndarray
    steps: int


class Engine(Protocol):
    """What :func:`handprop.training.loop.fit` needs from an engine."""

    name: str

    def run_epoch(self, xe: np.ndarray, ye: np.ndarray, sizes: np.ndarray,
                  alive: np.ndarray) -> EpochResult:
        """Train one epoch on ``xe`` (*rep, N, *input_shape) and targets ``ye`` in
        order; ``sizes`` (R,) real samples per replica; ``alive`` (R,) replicas that
        have not diverged (read only)."""
        ...

    def close(self) -> None:
        """Release threads or buffers."""
        ...


class EngineNotice(UserWarning):
    """The engine asked for (``auto``) cannot run a configuration; NumPy runs it."""
