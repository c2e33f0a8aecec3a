"""The batched layout's runner: its buffers, the rule's derived arrays, its threads.

:class:`BatchedRunner` is the ``runner`` of the batched layout (registered in
:mod:`.capabilities`): :class:`~.engine.CompiledEpoch` builds the engine's plan for half a
batch per arena, and the runner extends it (:mod:`.batched_plan`), allocates its
buffers and calls :func:`~.batched_step.train_batched`. Everything the kernels change
lives in the engine's rows (parameters, optimizer state, the rule's fixed matrices: a
learning B is written back into the rule by the engine after each call), so checkpoints
do not know which layout made them.

Threads: one network's step runs its two half-batches on two threads (the halves and
the order in which their gradients are added never depend on the thread count);
replicated networks run on disjoint ranges of replicas, each thread with its own
buffers. BLAS is held to one thread meanwhile: two threads of our own on two cores,
never BLAS threads on top.
"""

from __future__ import annotations

from math import prod
from typing import Any, NamedTuple

import numpy as np

from ...core.ops import Conv2d
from ...core.ops.conv import Conv2dCache, conv2d_geometry, conv2d_input_grad
from .batched_plan import batched_plan
from .batched_step import FINISH, HALF, PREPARE, WHOLE, train_batched
from .engine import EpochArrays

_BLAS_CONTROL: list[Any] = []


def one_blas_thread() -> Any:
    """A context holding every BLAS library (Numba calls scipy's) to one thread."""
    if not _BLAS_CONTROL:
        import scipy.linalg.cython_blas  # noqa: F401  (loaded first, so that it is found)
        from threadpoolctl import ThreadpoolController

        _BLAS_CONTROL.append(ThreadpoolController())
    return _BLAS_CONTROL[0].limit(limits=1, user_api="blas")


class Work(NamedTuple):
    """Each worker's buffers (``slots`` workers; the halves' second axis): activation and
    gradient arenas, max-pool winners and parameter gradients per half; the summed
    gradient, what the step forms from the parameters (``prep``) and the halves' loss
    terms."""

    arena: np.ndarray  # (slots, 2, arena)
    garena: np.ndarray
    ints: np.ndarray  # (slots, 2, ints) int64
    grads: np.ndarray  # (slots, 2, params)
    gsum: np.ndarray  # (slots, params)
    prep: np.ndarray  # (slots, prep)
    halves: np.ndarray  # (slots, 2) float64


class BatchedRunner:
    """One network's batches as two halves side by side, or replicas side by side."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine
        net, replicas = engine.net, engine.replicas
        self.plan = batched_plan(engine.plan, net)
        slots = 1 if replicas == 1 else min(engine.threads, replicas)
        plan, dtype = self.plan, net.dtype
        self.work = Work(np.zeros((slots, 2, plan.arena), dtype),
                         np.zeros((slots, 2, plan.arena), dtype),
                         np.zeros((slots, 2, plan.ints), np.int64),
                         np.zeros((slots, 2, net.num_params), dtype),
                         np.zeros((slots, net.num_params), dtype),
                         np.zeros((slots, plan.prep), dtype), np.zeros((slots, 2)))
        self.derived = np.zeros((replicas, plan.derived), dtype)
        self.consts = np.array([1.0, 0.0], dtype)  # GEMM's alpha and beta

    def run(self, data, model, steps, chunk, hyper, corrections):
        engine = self.engine
        x, y, sizes, settings = data
        self._derive(model.fixed)
        cost, bad = np.zeros(engine.replicas), np.zeros(engine.replicas, np.int64)
        with one_blas_thread():
            for first in range(0, steps, chunk):
                todo = min(chunk, steps - first)
                arrays = EpochArrays(x, y, sizes, hyper, corrections,
                                     engine.draw(first, todo, sizes), cost, bad)
                head = (self.plan.tables, settings, self.plan.extras, model, self.work,
                        arrays, self.derived, self.consts, first)
                if engine.replicas == 1 and engine.threads > 1:
                    self._halves_side_by_side(head, first, todo)
                else:
                    engine.side_by_side(lambda *rest: train_batched(WHOLE, *rest, 0),
                                        (*head, first, todo), engine.replicas, worker=True)
        return cost, bad

    def _halves_side_by_side(self, head: tuple, first: int, todo: int) -> None:
        """One network: each step prepared, its two halves on two threads, finished."""
        pool = self.engine.helpers()
        for step in range(first, first + todo):
            part = (*head, step, 1, 0, 1, 0)  # one step of replica 0, worker 0
            train_batched(PREPARE, *part, 0)
            waiting = pool.submit(train_batched, HALF, *part, 1)
            train_batched(HALF, *part, 0)
            waiting.result()
            train_batched(FINISH, *part, 0)

    def _derive(self, fixed: np.ndarray) -> None:
        """The rule's arrays as the batched kernels read them (``derived_rows``), from
        the engine's fixed rows: DFA's B_l with its columns in NHWC order, and the
        output error's projection to a weight layer's input (a conv's as a matrix)."""
        net, rows = self.engine.net, self.engine.replicas
        slots = self.engine.plan.fixed_slots
        for row, (offset, size) in self.plan.derived_rows.items():
            layer = net.layers[row]
            start, length = slots[row]
            matrix = fixed[:, start : start + length]
            if self.plan.tables.ops[row]["inject_offset"] >= 0:  # (K, this layer's output)
                shape = net.shapes[row + 1]
                value = nhwc_columns(matrix.reshape(rows, -1, prod(shape)), shape)
            elif isinstance(layer, Conv2d):
                kernel = (-1, layer.in_shape[0], *layer.kernel_size)
                value = nhwc_columns(projection(layer, matrix.reshape(rows, *kernel)),
                                     layer.in_shape)
            else:
                value = matrix
            self.derived[:, offset : offset + size] = value.reshape(rows, size)


def nhwc_columns(matrix: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(R, K, C*H*W) with columns in (C, H, W) order -> (H, W, C) order."""
    if len(shape) != 3:
        return matrix
    rows, classes = matrix.shape[:2]
    maps = matrix.reshape(rows, classes, *shape)
    return np.ascontiguousarray(maps.transpose(0, 1, 3, 4, 2)).reshape(rows, classes, -1)


def projection(layer: Any, matrix: np.ndarray) -> np.ndarray:
    """dfa-biotorch's conv projection as a matrix: row k is the input gradient the rule
    sends for the output error e = unit vector k (the reference's own function)."""
    rows, classes = matrix.shape[:2]
    geometry = conv2d_geometry(layer.in_shape, layer.kernel_size, layer.stride,
                               layer.padding, 1)
    unit = np.broadcast_to(np.eye(classes, dtype=matrix.dtype)[None, :, :, None, None],
                           (rows, classes, classes, *geometry.out_hw))
    fake = Conv2dCache(None, geometry, (rows, classes, *layer.in_shape))
    return conv2d_input_grad(np.ascontiguousarray(unit), matrix, fake).reshape(rows, classes,
                                                                                -1)
