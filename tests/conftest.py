"""Shared fixtures: the expensive study runs happen once per test session."""

from __future__ import annotations

import shutil
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
