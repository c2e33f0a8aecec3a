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
first use and cached on disk, in a folder named by a hash of every source of this
package (``cache.py``: where it lives, and why a stale or corrupted entry is never
run), so later processes load them in about a second.
"""

from __future__ import annotations

from .build import compiled_engine, unsupported_reason
from .cache import load_kernels
from .capabilities import UnsupportedError

__all__ = ["UnsupportedError", "compiled_engine", "load_kernels", "unsupported_reason"]
