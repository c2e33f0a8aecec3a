"""Fixtures shared by several test files; the expensive study runs happen once per
test session.

On a fresh clone the compiled engine's Numba cache is empty, and filling it costs about
120 s of one core. The session starts ``warm_numba.py`` in a background process at once,
and runs the modules that use the compiled engine most (``LATE``) last, so that the
compile overlaps the other tests; a test that needs a kernel before the warm-up has
cached it compiles it itself. (Making the tests wait for the warm-up did not help: on
cold clones here the suite took 322-412 s with or without waiting, a run-to-run spread
larger than any difference.) Results do not depend on it: a kernel loaded from the cache
is the kernel compiled in place.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path

import pytest
from helpers import run_cli

# Modules that train on the compiled engine from their first tests: run after the others.
# (compare's CNN and BioTorch's LeNet train in the batched layout under ``auto``.)
LATE = ("test_bad_input", "test_bench", "test_biotorch", "test_checkpoint", "test_compare",
        "test_compiled_batched", "test_compiled_coverage", "test_compiled_engine",
        "test_compiled_lanes", "test_compiled_special", "test_faults", "test_hardening",
        "test_train", "test_sklearn", "test_tracking")
_warm_up: subprocess.Popen | None = None
_compile_times: dict = {}  # bench's cold/warm compile, measured beside the tests


def pytest_sessionstart(session) -> None:
    global _warm_up
    if not os.environ.get("HANDPROP_NO_WARM_UP"):
        _warm_up = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("warm_numba.py"))],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _measure_compile_times() -> None:
    """``compile_seconds`` cold (an empty cache of its own: a full compile in a fresh
    process, ~30 s of one core) and warm, once the warm-up no longer needs the core."""
    from handprop.integrations.benchmark import compile_seconds

    try:
        if _warm_up is not None:
            _warm_up.wait()
        if _compile_times.get("stop"):  # the session ended first (e.g. -x)
            raise RuntimeError("the session ended before the compile times were measured")
        cache = tempfile.mkdtemp(prefix="handprop-numba-")
        _compile_times.update(cache=cache, cold=compile_seconds(cache),
                              warm=compile_seconds(cache))
    except BaseException as exc:  # reported by the test that reads the result
        _compile_times["error"] = exc


@pytest.fixture
def compile_times() -> dict:
    """The cold and warm compile times measured since the session started (waits)."""
    _compile_times["thread"].join()
    if "error" in _compile_times:
        raise _compile_times["error"]
    return _compile_times


def pytest_sessionfinish(session, exitstatus) -> None:
    _compile_times["stop"] = True
    if _warm_up is not None and _warm_up.poll() is None:
        _warm_up.kill()
        _warm_up.wait()
    if "cache" in _compile_times:
        shutil.rmtree(_compile_times["cache"], ignore_errors=True)


def pytest_collection_modifyitems(session, config, items) -> None:
    """The LATE modules last, everything else in its usual order; bench's compile times
    measured from now on if their test was collected."""
    items.sort(key=lambda item: getattr(getattr(item, "module", None), "__name__", "") in LATE)
    if any("compile_times" in getattr(item, "fixturenames", ()) for item in items):
        # not a daemon: the session ends after it, leaving no compile process behind
        thread = threading.Thread(target=_measure_compile_times)
        _compile_times["thread"] = thread
        thread.start()


@pytest.fixture(scope="session")
def reproduce_quick(tmp_path_factory) -> Path:
    """One ``handprop reproduce --quick`` run (default rules, loky backend) shared by every
    test that reads its output. Read only: tests that change it use
    ``reproduce_quick_copy``."""
    out = tmp_path_factory.mktemp("reproduce") / "quick"
    code, _, stderr = run_cli("reproduce", "--quick", "--out", out, "--quiet")
    assert code == 0, stderr
    assert "Traceback" not in stderr
    return out


@pytest.fixture
def reproduce_quick_copy(reproduce_quick, tmp_path) -> Path:
    """A private copy of the shared ``reproduce --quick`` results."""
    copy = tmp_path / "quick"
    shutil.copytree(reproduce_quick, copy)
    return copy


@pytest.fixture(scope="module")
def one_torch_thread():
    """Run a module's tiny tensors on one torch thread (faster, and immune to a busy
    machine: two spinning OpenMP workers on two shared cores made it 5x slower); the
    previous setting is restored for other test files. torch is imported here, not at
    collection, so files that do not use it never load it."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def digits():
    """200 training images of digits10 (all ten classes), pixels in [0, 1]."""
    from handprop.training.data import load_digits10

    data = load_digits10(seed=0)
    return data.x_train[:200], data.y_train[:200]


@pytest.fixture
def python_sigint():
    """Python's own SIGINT handler (it raises KeyboardInterrupt), whatever the test run
    inherited: a shell that starts a job in the background without job control ignores
    SIGINT in it, and Python then leaves it ignored."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, previous)
