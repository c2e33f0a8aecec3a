"""Size limits, in one place.

Every size a user can type (a seed, a number of epochs or seeds, a layer width, a batch)
is checked against a limit before anything is allocated, so a typo (``--seeds
1000000000``) ends in one line naming the value and the limit instead of filling the
machine's memory. The limits are generous for real use:

==================  ================  ==============================================
limit               value             what it bounds
==================  ================  ==============================================
MAX_SEED            2**32 - 1         any seed (NumPy's and scikit-learn's range)
MAX_EPOCHS          1,000,000         epochs of a run (the article trains 500)
MAX_SEEDS           10,000            seeds of a study (runs trained in lockstep)
MAX_WIDTH           1,000,000         units of a dense layer (``--fc``)
MAX_BATCH           1,000,000         minibatch size
MAX_JOBS            256               parallel worker processes
MAX_PROBE           100,000           images in a study's alignment probe
MAX_CHECK_BATCH     1,024             images of a gradient check
MAX_CHECK_ENTRIES   1,000,000         entries checked per parameter array
MAX_PICTURES        1,000             images drawn in one picture
MAX_TOML_BYTES      1,000,000         size of a TOML file (a config, a network)
MAX_NESTING         32                tables and lists nested in a TOML file
memory budget       half the RAM      what a run may need (``HANDPROP_MEMORY_BUDGET``)
==================  ================  ==============================================

The memory a run needs is estimated from its network before the network is allocated
(parameters, gradients, optimizer and rule state, activations for one batch, the data,
all times the number of replicas) and refused above the budget: half of this machine's
physical memory, or the ``HANDPROP_MEMORY_BUDGET`` environment variable (bytes, or with
a unit: ``512M``, ``8G``).
"""

from __future__ import annotations

import os
import re
from math import prod
from typing import Any

from .errors import ConfigError

MAX_SEED = 2**32 - 1
MAX_EPOCHS = 1_000_000
MAX_SEEDS = 10_000
MAX_WIDTH = 1_000_000
MAX_BATCH = 1_000_000
MAX_JOBS = 256
MAX_PROBE = 100_000
MAX_CHECK_BATCH = 1_024
MAX_CHECK_ENTRIES = 1_000_000
MAX_PICTURES = 1_000
MAX_TOML_BYTES = 1_000_000
MAX_NESTING = 32

MEMORY_FRACTION = 0.5
BUDGET_ENV = "HANDPROP_MEMORY_BUDGET"
_UNITS = {"": 1, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12}


class LimitError(ConfigError):
    """A size beyond a limit, or a run that would need more memory than the budget."""


def check_int(value: Any, name: str, low: int, high: int) -> int:
    """``value`` as an int in ``low..high``; a LimitError naming ``name`` otherwise."""
    import numpy as np

    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise ConfigError(f"{name} must be an integer in {low}..{high}, got {value!r}")
    if not low <= value <= high:
        raise LimitError(f"{name} must be an integer in {low}..{high}, got {value}")
    return int(value)


def check_seed(seed: Any, name: str = "seed") -> int:
    """A seed: an integer in 0..MAX_SEED."""
    return check_int(seed, name, 0, MAX_SEED)


def format_bytes(size: float) -> str:
    """``1.5 GB``-style (decimal units)."""
    for unit in ("bytes", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "bytes" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} PB"  # pragma: no cover


def physical_memory() -> int | None:
    """This machine's RAM in bytes (None when the system does not say)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


MAX_BUDGET_TEXT = 32  # characters of HANDPROP_MEMORY_BUDGET


def memory_budget() -> tuple[int, str]:
    """(bytes, where that number comes from) of memory one run may need."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    if text:
        shown = text if len(text) <= MAX_BUDGET_TEXT else f"{text[:MAX_BUDGET_TEXT]}..."
        match = re.fullmatch(r"(\d{1,15}(?:\.\d{1,6})?)\s*([KMGT]?)B?", text.upper())
        if not match:
            raise ConfigError(f"{BUDGET_ENV} must be a size like 8G or 512M (at most 15 "
                              f"digits), got {shown!r}")
        size = int(float(match[1]) * _UNITS[match[2]])
        return size, f"{BUDGET_ENV}={shown}"
    ram = physical_memory()
    if ram is None:
        return 16 * 10**9, "the default (this system does not report its memory)"
    return int(ram * MEMORY_FRACTION), f"half of this machine's {format_bytes(ram)} RAM"


# What a process costs before it trains anything, measured here (Linux x86-64, Python
# 3.11, numpy 2.4, numba 0.68; resident set sizes): a handprop process with numpy, scipy,
# scikit-learn and matplotlib imported 154 MB, a study's parent or worker after its
# jobs 165-186 MB; loky's own two helper processes 54 MB; a process that loads the
# compiled kernels from the cache 250 MB, one that compiles them 396-452 MB.
PROCESS_BASELINE = 200 * 10**6
WORKER_POOL_BASELINE = 60 * 10**6
COMPILED_RUNTIME = 250 * 10**6
"""What the compiled engine adds to a process: Numba, LLVM and the machine code (a
compile's peak)."""


def processes_bytes(workers: int) -> int:
    """This process, and ``workers`` local worker processes (with their pool's helpers)."""
    return PROCESS_BASELINE * (1 + workers) + (WORKER_POOL_BASELINE if workers else 0)


def estimate_training_bytes(net: Any, replicas: int = 1, batch: int = 1, samples: int = 0,
                            itemsize: int = 8) -> int:
    """The memory training ``net`` on the NumPy engine (the reference) needs at its peak,
    computed from its shapes alone (nothing is allocated), per replica:

    * parameters x 6 (the weights, their gradient, two optimizer slots, a rule's
      feedback arrays and the update's temporary);
    * for one batch, what every layer keeps from the forward pass until the backward pass
      (its output, its cache: im2col windows, max-pool indices) plus the largest
      backward pass's temporaries (:meth:`~handprop.core.layers.Layer.workspace`);
    * the data: ``samples`` inputs, twice (the stored set and its shuffled copy).

    A process's own baseline is not included (see :func:`processes_bytes`); another
    engine adds its own (``handprop.training.memory``).
    """
    params = int(net.num_params) + int(getattr(net, "num_state", 0))
    per_sample = activation_values(net, itemsize)
    inputs = prod(net.input_shape)
    per_replica = 6 * params + per_sample * max(int(batch), 1) + 2 * inputs * samples
    return int(per_replica * max(int(replicas), 1) * itemsize)


def activation_values(net: Any, itemsize: int = 8) -> int:
    """Values per sample of a training step: the input, what every layer keeps, and the
    largest backward pass's work (see :meth:`~handprop.core.layers.Layer.workspace`)."""
    needs = getattr(net, "_need_input_grad", None) or [True] * len(net.layers)
    kept, work = prod(net.input_shape), 0
    for layer, need in zip(net.layers, needs, strict=True):
        layer_kept, layer_work = layer.workspace(bool(need), itemsize)
        kept, work = kept + layer_kept, max(work, layer_work)
    return kept + work


def check_memory(needed: int, what: str, hint: str = "") -> None:
    """Refuse ``what`` (e.g. "network 'seed' with widths 100000 100000") when it needs more
    memory than the budget; ``hint`` says what would fit."""
    budget, source = memory_budget()
    if needed > budget:
        raise LimitError(f"{what} needs about {format_bytes(needed)} of memory, more than the "
                         f"budget of {format_bytes(budget)} ({source}){hint}")
