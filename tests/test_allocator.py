"""The NumPy engine does not take page faults step after step (it keeps freed memory,
:mod:`handprop.training.allocator`), and that changes where memory comes from, never a
result.

Counted, not timed: minor page faults of a fresh process (``getrusage``) in the last
epoch of a short real run, through the benchmark's own fresh-process runner. Measured
here with glibc's defaults (``HANDPROP_MALLOC=system``), one core: about 3,400 faults
per step for LeNet batch 64 float32 and 3,200 for compare's CNN (10 seeds, batch 32);
on two threads anywhere from 0 to 2,500 (it depends on the threads' timing). With the
engine's settings: 0-3 per step.
"""

from __future__ import annotations

import platform
import sys

import pytest

from handprop.integrations.benchmark.fresh import Contender, run_child
from handprop.integrations.benchmark.settings import compare_workload, lenet_workload
from handprop.training import allocator

GLIBC = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
STEPS = 10  # per epoch
MAX_FAULTS_PER_STEP = 20  # in steady state (the last epoch)
WORKLOADS = {"lenet": lenet_workload(64 * STEPS, 3), "compare": compare_workload(32 * STEPS, 3)}


@pytest.mark.skipif(not GLIBC, reason="the page-fault figures are glibc's")
@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_steady_state_epochs_take_almost_no_page_faults(name, workers):
    work = WORKLOADS[name]
    run = run_child(Contender("handprop", workers=workers), work)
    assert "error" not in run, run
    faults = run["epoch_faults"]
    assert len(faults) == work.epochs * work.runs and all(f >= 0 for f in faults)
    assert faults[-1] <= MAX_FAULTS_PER_STEP * STEPS, faults


@pytest.mark.skipif(not GLIBC, reason="the page-fault figures are glibc's")
def test_with_glibc_defaults_the_same_run_faults_every_step():
    """What the bound above guards against (so the test can fail): the same run with the
    engine's settings switched off, and the same numbers computed. (One core: with two
    threads, glibc's adaptive thresholds settle or not depending on the threads' timing,
    which is what makes the defaults slow on a busy machine and this figure unsteady.)"""
    work = WORKLOADS["lenet"]
    kept = run_child(Contender("handprop", workers=1), work)
    system = run_child(Contender("handprop", workers=1, malloc="system"), work)
    assert "error" not in system, system
    assert system["epoch_faults"][-1] > 10 * MAX_FAULTS_PER_STEP * STEPS, system
    assert system["cost"] == kept["cost"]  # only where memory comes from changed


def test_settings_are_left_to_the_user(monkeypatch):
    monkeypatch.setattr(allocator, "_trim_set", 0)
    calls = []
    monkeypatch.setattr(allocator, "_mallopt", lambda: lambda *args: calls.append(args) or 1)
    for name, value in (("HANDPROP_MALLOC", "system"), ("MALLOC_TRIM_THRESHOLD_", "1000"),
                        ("GLIBC_TUNABLES", "glibc.malloc.mmap_threshold=4096")):
        with monkeypatch.context() as env:
            env.setenv(name, value)
            assert allocator.keep_freed_memory(1 << 20) is False
    assert calls == []
    for name in ("HANDPROP_MALLOC", "MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_",
                 "MALLOC_TOP_PAD_", "GLIBC_TUNABLES"):
        monkeypatch.delenv(name, raising=False)
    assert allocator.keep_freed_memory(1 << 20) is True
    assert calls == [(allocator._M_MMAP_THRESHOLD, allocator.MMAP_THRESHOLD),
                     (allocator._M_TRIM_THRESHOLD, allocator.TRIM_MIN)]
    assert allocator.keep_freed_memory(1 << 20) is True  # already set: nothing more
    allocator.keep_freed_memory(100 << 20)  # a bigger step raises the trim threshold
    assert calls[-1] == (allocator._M_TRIM_THRESHOLD, 200 << 20)
    allocator.keep_freed_memory(100 << 30)
    assert calls[-1] == (allocator._M_TRIM_THRESHOLD, allocator.TRIM_MAX)


def test_nothing_happens_without_glibc(monkeypatch):
    monkeypatch.setattr(allocator, "_trim_set", 0)
    monkeypatch.setattr(sys, "platform", "darwin")
    monkeypatch.delenv("HANDPROP_MALLOC", raising=False)
    assert allocator._mallopt() is None
    assert allocator.keep_freed_memory(1 << 20) is False
