"""The batched layout's plan: the engine's plan (:mod:`.plan`) with the columns and the
arenas its kernels add.

The batched layout (registered in :mod:`.capabilities`) trains a minibatch step as a few
large matrix products. Its activations are *position-major*: a layer's maps for ``n``
samples are one ``(n*H*W, C)`` matrix (NHWC), so that im2col copies long runs, a
convolution is one GEMM over a half-batch, and a layer's channels sit side by side for
the pools and the activations. Flat tensors (after ``Flatten``) are ``(n, D)``, as in
the reference. A step's batch is always computed as two *halves* (the first
``nb // 2`` samples, then the rest), whose gradients are added at the end: the split
depends on the batch only, never on the threads.

The engine's plan is built for half a batch per arena (the layout's ``arena_batch``),
so its columns (geometry, parameter offsets, the rule's feedback, DFA's injection) and
its arena offsets serve as they are: a layer's NHWC maps take the room its NCHW maps
had. :func:`batched_plan` copies its op table into rows of :data:`BATCHED_ROW`, which add
the columns of :data:`BATCHED_COLUMNS`, and gives ``Flatten`` an output of its own (it
reorders NHWC into the reference's (C, H, W) order).
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod
from typing import Any, NamedTuple

import numpy as np

from .batched_direct import POOL_LANES, direct_work
from .kernels_activation import ACT
from .kernels_conv import CONV
from .kernels_dense import DENSE, FLAT
from .kernels_pool import POOL
from .plan import FROM_WEIGHT, OP_ROW, Plan, Tables

BATCHED_COLUMNS = {
    "cols_offset": "a GEMM conv: its input windows (im2col) for a chunk of samples, group "
                   "after group (ga: their gradient)",
    "chunk": "a GEMM conv: samples per im2col chunk",
    "weight_prep": "a GEMM conv: W permuted to (O, KH, KW, C/groups) in prep (the column "
                   "order of im2col's rows)",
    "dx_prep": "a weight layer: B, what its input gradient goes back through, in prep in "
               "the layer's working layout (-1: W in the flat buffer)",
    "routed": "a conv followed by an activation and a max-pool: the pool's row (the conv's "
              "backward runs from the pool's winners)",
    "covered": "1: an activation or pool row whose backward its routed conv does",
    "winners_offset": "a routed conv: z at each pool window's winner (ga: the gradient there)",
    "direct": "1: a routed conv computed directly on per-sample planes (no im2col)",
    "fused": "1: an activation or pool row whose forward its direct conv does",
    "work_offset": "a direct conv: its planes for a block of samples (padded input, its "
                   "gradient, z, f(z))",
    "block": "a direct conv: samples per block",
    "derived_offset": "DFA's B_l with NHWC columns (an injecting activation), or the output "
                      "error's projection to a weight layer's input (dfa-biotorch), in the "
                      "derived row",
}
BATCHED_ROW = np.dtype(OP_ROW.descr + [(name, np.int64) for name in BATCHED_COLUMNS])
_NONE = ("cols_offset", "weight_prep", "dx_prep", "routed", "winners_offset", "work_offset",
         "derived_offset")  # -1: none

# A GEMM conv's im2col is built this many bytes at most at a time (whole samples; at
# least one), so that a big layer's cols need not fit in memory at once. Smaller chunks
# were measured slower (LeNet conv2: cols of 3 samples, 180 KB, in cache: the backward
# pass then rebuilds them, and the GEMMs get shorter), so a half-batch of LeNet or of
# compare's CNN is one chunk, whose cols the backward pass reuses.
CHUNK_BYTES = 8 << 20
# A routed conv of stride 1 with at most this many taps per output (C/groups*KH*KW) runs
# directly, sample by sample on whole planes (:mod:`.batched_direct`): im2col would copy
# each input value KH*KW times for a GEMM too thin to pay for it (LeNet's conv1: 25).
DIRECT_TAPS = 32
# A direct conv stacks this many bytes of samples' planes at most (at least one sample):
# small maps (compare's 8x8 digits) then run many samples per call; LeNet's 28x28 one.
DIRECT_BYTES = 96 << 10


class Extras(NamedTuple):
    """The scalars the batched kernels read beside the engine's ``Settings``."""

    channels: int  # the input's channels, laid out NHWC (1: a flat input)
    plane: int  # the input's H*W (a flat input: its size)
    prep_scratch: int  # prep: room to form one layer's B in the reference layout
    learns: int  # 1: some feedback matrix learns (Kolen-Pollack)


@dataclass
class BatchedPlan:
    """The batched layout's tables and sizes.

    tables : the engine's tables with the op rows in :data:`BATCHED_ROW`
    arena : float arena values per half; ints : integer arena values per half
    prep : values formed from the parameters every step (permuted W, B), per worker
    derived : values per replica of the arrays derived from the rule's (DFA's B_l with
        NHWC columns, dfa-biotorch's projections), rebuilt every epoch; ``derived_rows``:
        {row: (offset, size)} of them
    """

    tables: Tables
    extras: Extras
    arena: int
    ints: int
    prep: int
    derived: int
    derived_rows: dict[int, tuple[int, int]]


@dataclass
class _Sizes:
    arena: int
    prep: int = 0
    derived: int = 0
    scratch: int = 1

    def take(self, which: str, size: int) -> int:
        offset = getattr(self, which)
        setattr(self, which, offset + size)
        return offset


def batched_plan(plan: Plan, net: Any) -> BatchedPlan:
    """The batched layout's plan from the engine's (built for half a batch per arena)."""
    half, itemsize = plan.settings.batch, np.dtype(net.dtype).itemsize
    ops = np.zeros(len(plan.tables.ops), BATCHED_ROW)
    for name in OP_ROW.names:
        ops[name] = plan.tables.ops[name]
    for name in _NONE:
        ops[name] = -1
    sizes = _Sizes(plan.arena)
    derived: dict[int, tuple[int, int]] = {}
    classes = plan.settings.error_size
    for index in range(len(ops)):
        op = ops[index]  # a view: what is written here lands in the table
        if op["kind"] == FLAT:  # NHWC -> (C, H, W): an output of its own
            op["out_offset"] = sizes.take("arena", half * int(op["out_size"]))
            if index + 1 < len(ops):
                ops[index + 1]["in_offset"] = op["out_offset"]
        elif op["kind"] == CONV:
            _conv(ops, index, half, itemsize, sizes)
        if op["kind"] in (CONV, DENSE):
            _feedback(op, sizes)
            if op["project_offset"] >= 0:
                op["derived_offset"] = sizes.take("derived", classes * int(op["in_size"]))
        elif op["kind"] == ACT and op["inject_offset"] >= 0:
            op["derived_offset"] = sizes.take("derived", classes * int(op["out_size"]))
        if op["derived_offset"] >= 0:
            derived[index] = (int(op["derived_offset"]), sizes.derived - int(op["derived_offset"]))
    maps = len(net.input_shape) == 3
    extras = Extras(net.input_shape[0] if maps else 1,
                    prod(net.input_shape[1:]) if maps else prod(net.input_shape),
                    sizes.take("prep", sizes.scratch), int(bool(plan.learned_slots)))
    tables = plan.tables._replace(ops=ops)
    return BatchedPlan(tables, extras, sizes.arena + 1, plan.ints, max(sizes.prep, 1),
                       max(sizes.derived, 1), derived)


def _conv(ops: np.ndarray, index: int, half: int, itemsize: int, sizes: _Sizes) -> None:
    """A conv's extra columns: routed (an activation and a max-pool above it, no DFA
    injection between), direct (few taps), or GEMM (im2col chunks)."""
    op = ops[index]
    taps = int(op["in_c"] // op["groups"] * op["kernel_h"] * op["kernel_w"])
    routed = (index + 2 < len(ops) and ops[index + 1]["kind"] == ACT
              and ops[index + 2]["kind"] == POOL and ops[index + 1]["inject_offset"] < 0)
    op["direct"] = routed and op["stride_h"] == op["stride_w"] == 1 and taps <= DIRECT_TAPS
    if routed:
        op["routed"] = index + 2
        ops[index + 1]["covered"] = ops[index + 2]["covered"] = 1
        ops[index + 1]["fused"] = ops[index + 2]["fused"] = op["direct"]
        op["winners_offset"] = sizes.take("arena", half * int(ops[index + 2]["out_size"]))
    if op["direct"]:  # a block's padded input and its gradient, z and f(z): a plane each
        plane = (op["in_h"] + 2 * op["pad_h"]) * (op["in_w"] + 2 * op["pad_w"])
        per_sample = int(2 * (op["in_c"] + op["out_c"]) * plane)
        op["block"] = min(half, max(1, DIRECT_BYTES // (per_sample * itemsize)))
        geometry = [int(op[name]) for name in ("in_c", "out_c", "in_h", "in_w", "pad_h",
                                               "pad_w", "block")]
        geometry.append(int(ops[index + 2]["stride_w"]))  # the max-pool's
        op["work_offset"] = sizes.take("arena", direct_work(*geometry) + 3 * POOL_LANES)
        return
    op["weight_prep"] = sizes.take("prep", int(op["weight_size"]))
    per_sample = int(op["out_h"] * op["out_w"]) * taps * int(op["groups"])
    op["chunk"] = min(half, max(1, CHUNK_BYTES // (per_sample * itemsize)))
    op["cols_offset"] = sizes.take("arena", int(op["chunk"]) * per_sample)


def _feedback(op: np.void, sizes: _Sizes) -> None:
    """Where a weight layer's B sits for its kernels: W itself (permuted with the
    forward's weight for a GEMM conv), or formed in prep every step."""
    if op["project_offset"] >= 0:  # nothing goes back through B
        return
    is_weight = (op["feedback_base"] == FROM_WEIGHT and op["feedback_offset"] < 0
                 and op["feedback_scale"] < 0)
    if is_weight:
        op["dx_prep"] = op["weight_prep"]  # (-1, W itself, unless permuted)
        return
    op["dx_prep"] = sizes.take("prep", int(op["weight_size"]))
    sizes.scratch = max(sizes.scratch, int(op["weight_size"]))


def values_needed(plan: Plan, net: Any, replicas: int, samples: int) -> int:
    """The floats the batched layout allocates for a run (its ``workspace``, for the
    memory estimate): per worker (at most two) two halves' arenas and gradients, the
    summed gradient and prep; per replica the rule's fixed, drawn and derived arrays."""
    extended = batched_plan(plan, net)
    workers = min(max(replicas, 1), 2)
    per_worker = 4 * extended.arena + 3 * net.num_params + extended.prep
    return workers * per_worker + replicas * (plan.fixed + plan.drawn + extended.derived)
