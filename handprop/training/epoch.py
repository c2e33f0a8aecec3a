"""One epoch of training: the contract every engine keeps, the NumPy reference, and the
choice of engine.

An *engine* trains for one epoch per call. For each batch, in the order given::

    out, tape = net.forward(xb)                        # forward, keeping what backward needs
    cost, out_grad = loss(out, yb)                     # the loss and its gradient
    rule.begin_step(active)                            # e.g. brSF redraws its feedback
    grads = net.backward_flat(tape, out_grad, rule)    # the hand-written chain rule
    optimizer.step(net.flat, grads, frozen)            # update every parameter in place

With replicas (R independent networks in lockstep) every array has a leading axis R.
Replica r has ``sizes[r]`` real samples (the rest of its rows are padding): in the
epoch's last steps, the replicas whose data has run out are *frozen*: their cost counts
0 and their parameters, state buffers (running statistics), optimizer state and rule
state stay exactly as they were, so each replica ends as it would alone.

:class:`EpochResult` is what an epoch returns: each replica's summed cost (float64),
the first step whose cost was not finite (1-based; 0 = none) and how many steps ran.
The epoch stops early once every replica still ``alive`` has a non-finite cost.

:class:`NumpyEpoch` is the reference engine: the ops of :mod:`handprop.core.ops`, one
NumPy call after another. Faster engines are proven against it step by step: the
compiled engine (:mod:`handprop.training.compiled`) runs whole epochs in Numba.
:func:`make_engine` builds the engine a run asks for (``auto``: the compiled engine
where it supports the configuration and expects to be faster, else NumPy, with an
:class:`EngineNotice` saying why). The contract itself (:class:`Engine`,
:class:`EpochResult`, :class:`EngineNotice`) is defined in :mod:`.contract`, which the
engines import without importing this module, and is exported here beside them.
"""


from __future__ import annotations

import contextlib
import contextvars
import math
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.limits import estimate_training_bytes
from ..core.network import Network
from ..core.ops.losses import get_loss
from ..rules.base import LearningRule
from .allocator import keep_freed_memory
from .contract import ENGINES, Engine, EngineNotice, EpochResult
from .optim import Optimizer
from .preflight import stop_if_checking

__all__ = ["ENGINES", "Engine", "EngineNotice", "EpochResult", "NumpyEpoch",
           "compiled_is_faster", "make_engine"]

# Batches of at least this many input values (batch x sample size) are computed in two
# halves (exact rule only), which two threads can run side by side. The split depends
# only on the sizes, never on the threads, so results are the same either way.
HALVES_MIN = 1 << 14

LossFn = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


class NumpyEpoch:
    """The reference engine (see the module notes).

    ``threads=2`` runs the second half of large exact-rule batches in a helper thread
    (NumPy and single-threaded BLAS release the GIL); it changes speed, never results.
    Each step allocates its arrays afresh: on Linux the engine first asks glibc to keep
    freed memory for reuse (:mod:`handprop.training.allocator`).
    """

    name = "numpy"
    notice: str | None = None  # why the compiled engine was not used (``auto``), if so

    def __init__(self, net: Network, rule: LearningRule | None, optimizer: Optimizer,
                 loss_fn: LossFn, batch_size: int, threads: int = 1) -> None:
        self.net, self.rule, self.optimizer = net, rule, optimizer
        self.loss_fn, self.batch_size = loss_fn, batch_size
        keep_freed_memory(estimate_training_bytes(net, math.prod(net.rep_shape), batch_size,
                                                  itemsize=net.dtype.itemsize))
        # Batch statistics (batch norm) are over the whole batch: such a batch is never split.
        coupled = any(layer.batch_coupled for layer in net.layers)
        self.halves = (rule is None and not coupled
                       and batch_size * math.prod(net.input_shape) >= HALVES_MIN)
        self._threads = contextlib.ExitStack()
        self._helper: ThreadPoolExecutor | None = None
        if self.halves and threads > 1:
            from threadpoolctl import threadpool_limits

            self._helper = self._threads.enter_context(ThreadPoolExecutor(1))
            self._threads.enter_context(threadpool_limits(1, "blas"))  # no BLAS threads on top

    def close(self) -> None:
        self._threads.close()

    def run_epoch(self, xe, ye, sizes, alive) -> EpochResult:
        rep = self.net.rep_shape
        count = xe.shape[len(rep)]
        replicas = len(sizes)
        cost = np.zeros(replicas)
        bad_step = np.zeros(replicas, dtype=np.int64)
        shortest = int(sizes.min())
        steps = 0
        for number, start in enumerate(range(0, count, self.batch_size), start=1):
            part = slice(start, min(start + self.batch_size, count))
            sel = (slice(None), part) if rep else part
            # replicas past the end of their data (only in an epoch's last steps)
            frozen = sizes < start + 1 if start + 1 > shortest else None
            value = self.step(xe[sel], ye[sel], frozen)
            steps += 1
            value = np.atleast_1d(np.where(frozen, 0.0, value) if frozen is not None else value)
            cost += value
            bad = ~np.isfinite(value) & (bad_step == 0)
            if bad.any():
                bad_step[bad] = number
                if not (alive & (bad_step == 0)).any():
                    break  # every replica has diverged: nothing left to train
        return EpochResult(cost, bad_step, steps)

    def step(self, xb: np.ndarray, yb: np.ndarray, frozen: np.ndarray | None) -> np.ndarray:
        """One optimizer step on one batch; returns its cost (per replica)."""
        net = self.net
        # A frozen replica only sees padding: its state (running statistics) must not move.
        kept = net.buffer_flat[frozen] if frozen is not None and net.num_state else None
        if self.halves and xb.shape[len(net.rep_shape)] > 1:
            value, grads = self._in_halves(xb, yb)
        else:
            out, tape = net._forward(xb)
            value, out_grad = self.loss_fn(out, yb)
            if self.rule is not None:
                self.rule.begin_step(None if frozen is None else ~frozen)
            grads = net._backward_flat(tape, out_grad, self.rule)
        if kept is not None:
            net.buffer_flat[frozen] = kept
        self.optimizer.step(net.flat, grads, frozen)
        return value

    def _in_halves(self, xb: np.ndarray, yb: np.ndarray) -> tuple[Any, np.ndarray]:
        """One step's cost and gradient, computed on the two halves of the batch."""
        net, axis = self.net, len(self.net.rep_shape)
        lead = (slice(None),) * axis
        cut = xb.shape[axis] // 2
        first, second = (*lead, slice(None, cut)), (*lead, slice(cut, None))
        forward_second = self._aside(net._forward, xb[second])
        out_first, tape_first = net._forward(xb[first])
        out_second, tape_second = forward_second()
        value, out_grad = self.loss_fn(np.concatenate([out_first, out_second], axis), yb)
        backward_second = self._aside(net._backward_flat, tape_second, out_grad[second])
        grads = net._backward_flat(tape_first, out_grad[first])
        grads += backward_second()
        return value, grads

    def _aside(self, function: Callable, *args: Any) -> Callable[[], Any]:
        """``function(*args)`` started in the helper thread (or run now): call to wait."""
        if self._helper is None:
            result = function(*args)
            return lambda: result
        context = contextvars.copy_context()  # the helper computes under our errstate
        return self._helper.submit(context.run, function, *args).result


def make_engine(engine: str, net: Network, rule: LearningRule | None, optimizer: Any,
                loss: str, reduction: str, batch_size: int, threads: int = 1) -> Engine:
    """The engine that runs the epochs.

    ``numpy``: the reference. ``compiled``: the Numba engine, or a ConfigError naming
    what it does not support. ``auto``: the compiled engine where it supports the
    configuration and its layout expects to beat NumPy on this work
    (:func:`compiled_is_faster`, then the layout's own estimate), else NumPy; a
    configuration the compiled engine cannot run, or that the layouts made for its
    work cannot (e.g. a rule only a slower layout computes), also warns
    (:class:`EngineNotice`) and leaves the reason in the engine's ``notice``.
    """
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; choose from {', '.join(ENGINES)}")
    stop_if_checking(engine, net, rule, optimizer, loss, reduction, batch_size)
    notice = None
    if engine != "numpy":
        from .compiled.build import UnsupportedError, compiled_engine
        from .compiled.cache import unusable_reason
        from .compiled.capabilities import Workload, passed_over

        try:
            if engine == "compiled" or compiled_is_faster(net, batch_size):
                no_cache = unusable_reason() if engine == "auto" else None
                if no_cache:  # no kernel cache: NumPy (see compiled/cache.py)
                    raise UnsupportedError(no_cache)
                runner = compiled_engine(net, rule, optimizer, loss, reduction, batch_size,
                                         threads)
                work = Workload.of(net, batch_size)
                if engine == "compiled" or runner.layout.beats_numpy(work):
                    return runner
                runner.close()
                reason = passed_over(work, runner.survey)  # the fast layouts cannot run it
                if reason:
                    raise UnsupportedError(reason)
        except UnsupportedError as exc:
            if engine == "compiled":
                raise ConfigError(f"the compiled engine cannot run this: {exc}") from None
            notice = f"compiled engine not used ({exc}); training with the numpy engine"
            warnings.warn(notice, EngineNotice, stacklevel=3)
    runner = NumpyEpoch(net, rule, optimizer, get_loss(loss, reduction), batch_size, threads)
    runner.notice = notice
    return runner


def compiled_is_faster(net: Network, batch_size: int) -> bool:
    """``auto``'s first check, before any kernel is loaded: whether some compiled layout
    expects to beat NumPy on this work (explicit loops win on small work per step, where
    NumPy's cost is its per-call overhead; BLAS wins on wide layers and big
    convolutions). See :mod:`handprop.training.compiled.capabilities`."""
    from .compiled.capabilities import Workload
    from .compiled.capabilities import compiled_is_faster as any_layout_faster

    return any_layout_faster(Workload.of(net, batch_size))
