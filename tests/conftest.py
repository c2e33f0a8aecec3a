"""Fixtures shared by several test files; the expensive study runs happen once per
test session."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import pytest
from helpers import run_cli


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
