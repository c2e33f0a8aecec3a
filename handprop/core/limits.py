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


def memory_budget() -> tuple[int, str]:
    """(bytes, where that number comes from) of memory one run may need."""
    text = os.environ.get(BUDGET_ENV, "").strip()
    if text:
        match = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KMGT]?)B?", text.upper())
        if not match:
            raise ConfigError(f"{BUDGET_ENV} must be a size like 8G or 512M, got {text!r}")
        size = int(float(match[1]) * _UNITS[match[2]])
        return size, f"{BUDGET_ENV}={text}"
    ram = physical_memory()
    if ram is None:
        return 16 * 10**9, "the default (this system does not report its memory)"
    return int(ram * MEMORY_FRACTION), f"half of this machine's {format_bytes(ram)} RAM"


def estimate_training_bytes(net: Any, replicas: int = 1, batch: int = 1, samples: int = 0,
                            itemsize: int = 8) -> int:
    """The memory training ``net`` needs, roughly (within a small factor), computed from
    its shapes alone (nothing is allocated):

    * parameters x 6 (the weights, their gradient, two optimizer slots, a rule's
      feedback arrays and a spare), per replica;
    * every layer's output for one batch x 4 (the output, what backward keeps, its
      gradient, convolution gather tables), per replica;
    * the data: ``samples`` inputs, twice (the stored set and its shuffled copy).
    """
    params = int(net.num_params) + int(getattr(net, "num_state", 0))
    activations = sum(prod(shape) for shape in net.shapes)
    inputs = prod(net.input_shape)
    per_replica = 6 * params + 4 * activations * max(int(batch), 1) + 2 * inputs * samples
    return int(per_replica * max(int(replicas), 1) * itemsize)


def check_memory(needed: int, what: str) -> None:
    """Refuse ``what`` (e.g. "network 'seed' with widths 100000 100000") when it needs more
    memory than the budget."""
    budget, source = memory_budget()
    if needed > budget:
        raise LimitError(f"{what} needs about {format_bytes(needed)} of memory, more than the "
                         f"budget of {format_bytes(budget)} ({source})")
