"""Keep freed memory in the process while training (Linux with glibc only).

Why: every NumPy step allocates its temporaries afresh (the ops return new arrays, and
what the backward pass needs stays on the tape). glibc's ``malloc`` serves blocks above
its *mmap threshold* with fresh ``mmap`` pages and returns heap memory to the kernel
once more than its *trim threshold* sits free at the top of the heap. Both adapt to the
program at run time, and a training step's mix of sizes keeps defeating them: measured
here, a LeNet batch-64 float32 epoch took 64 to 2,500 minor page faults per step (the
kernel zeroing every page again), which halved its speed, and the small CNN of
``handprop compare`` took 1,800 per step (10 replicas, batch 32). The zeroing costs
more than the arithmetic when the machine is busy.

What :func:`keep_freed_memory` does, once a training engine starts:

* ``mallopt(M_MMAP_THRESHOLD, 32 MiB)``: blocks below 32 MiB (every temporary of
  LeNet at batch 64) come from the heap, where a freed block is reused, instead of
  fresh pages;
* ``mallopt(M_TRIM_THRESHOLD, T)``: the heap keeps up to T of free memory at its top
  instead of returning it, with T twice the training step's memory estimate
  (:func:`handprop.core.limits.estimate_training_bytes`), at least 64 MiB and at most
  1 GiB (only ever raised within a process).

What it changes for the process that trains (the user's): after training, its resident
memory stays near its peak (up to T above what glibc would have kept) until the process
exits or frees more than T; the settings apply to every allocation of the process
(they are glibc's, process-wide, and cannot be read back, so they are not undone);
glibc's own adaptation of both thresholds is switched off. Results never change: only
where memory comes from.

It does nothing on other platforms or C libraries, when the environment already sets
glibc's malloc thresholds (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_``,
``GLIBC_TUNABLES``), or when ``HANDPROP_MALLOC=system`` (glibc's defaults, e.g. to
measure the difference).
"""

from __future__ import annotations

import ctypes
import os
import sys
import threading
from collections.abc import Callable

MIB = 1 << 20
MMAP_THRESHOLD = 32 * MIB  # glibc's largest allowed value on 64-bit systems
TRIM_MIN, TRIM_MAX = 64 * MIB, 1024 * MIB
OPT_OUT = "HANDPROP_MALLOC"
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "MALLOC_TOP_PAD_")

_lock = threading.Lock()
_trim_set = 0  # the trim threshold this process set (0: none yet)


def _mallopt() -> Callable[[int, int], int] | None:
    """glibc's ``mallopt``, or None where there is no glibc."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 -- present in glibc only (not musl)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return None
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return mallopt


def _left_to_user() -> bool:
    """Whether the user chose glibc's behaviour (see the module notes)."""
    if os.environ.get(OPT_OUT, "").strip().lower() == "system":
        return True
    if any(name in os.environ for name in _USER_SETTINGS):
        return True
    return "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")


def keep_freed_memory(step_bytes: int = 0) -> bool:
    """Set glibc's thresholds for a training step of about ``step_bytes`` (see the module
    notes). Returns whether the thresholds are now handprop's; safe from any thread and
    to call again (the trim threshold is only ever raised)."""
    global _trim_set
    trim = min(max(2 * int(step_bytes), TRIM_MIN), TRIM_MAX)
    with _lock:
        if trim <= _trim_set:
            return True
        if _left_to_user():
            return False
        mallopt = _mallopt()
        if mallopt is None:
            return False
        if not (mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD) and mallopt(_M_TRIM_THRESHOLD, trim)):
            return False
        _trim_set = trim
        return True
