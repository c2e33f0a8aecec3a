"""The IDX reader bounds its memory: declared sizes are checked before anything is
inflated, a stream that inflates past its declared size is stopped, and the peak memory
of a gzip load stays within 1.5x the estimate (measured in a fresh process)."""

from __future__ import annotations

import gzip
import json
import os
import struct
import subprocess
import sys
import textwrap
import zlib
from pathlib import Path

import numpy as np
import pytest

from handprop.core.errors import DataError
from handprop.core.limits import LimitError
from handprop.training.idx import CHUNK, MAX_IDX_DIMS, idx_read_bytes, read_idx, write_idx

ROOT = Path(__file__).resolve().parents[1]


def _header(code: int, dims: tuple[int, ...]) -> bytes:
    return bytes([0, 0, code, len(dims)]) + struct.pack(f">{len(dims)}I", *dims)


def _gzip_stream(header: bytes, zeros: int) -> bytes:
    """A gzip member of ``header`` and ``zeros`` zero bytes, compressed without ever
    holding the zeros (so a test can build a bomb cheaply)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    parts = [packer.compress(header)]
    block = bytes(CHUNK)
    left = zeros
    while left:
        take = min(left, len(block))
        parts.append(packer.compress(block[:take]))
        left -= take
    parts.append(packer.flush())
    return b"".join(parts)


def test_declared_size_above_the_budget_is_refused_before_inflating(tmp_path, monkeypatch):
    monkeypatch.setenv("HANDPROP_MEMORY_BUDGET", "50M")
    path = tmp_path / "bomb-idx3-ubyte.gz"
    path.write_bytes(_gzip_stream(_header(0x08, (1000, 1000, 1000)), 0))  # declares 1 GB
    with pytest.raises(LimitError, match="declared") as info:
        read_idx(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_stream_that_inflates_past_its_declared_size_is_stopped(tmp_path):
    path = tmp_path / "long.gz"
    path.write_bytes(_gzip_stream(_header(0x08, (4, 8, 8)), 4 * 64 + 50 * CHUNK))
    with pytest.raises(DataError, match="inflates past its declared size"):
        read_idx(path)


@pytest.mark.parametrize(("dims", "words"), [((1,) * (MAX_IDX_DIMS + 1), "dimensions"),
                                             ((2**31, 1), "dimension of")])
def test_header_limits(tmp_path, dims, words):
    path = tmp_path / "big"
    path.write_bytes(_header(0x08, dims))
    with pytest.raises(DataError, match=words):
        read_idx(path)


def test_gzip_members_one_after_another_are_read(tmp_path):
    array = np.arange(3 * 5 * 7, dtype=np.int16).reshape(3, 5, 7)
    whole = _header(0x0B, array.shape) + array.astype(">i2").tobytes()
    path = tmp_path / "two-members.gz"
    path.write_bytes(gzip.compress(whole[:37]) + gzip.compress(whole[37:]))
    assert np.array_equal(read_idx(path), array)


def test_trailing_garbage_after_the_stream_is_refused(tmp_path):
    path = tmp_path / "garbage.gz"
    path.write_bytes(gzip.compress(_header(0x08, (2,)) + b"\x01\x02") + b"not gzip")
    with pytest.raises(DataError, match="after the end"):
        read_idx(path)


def test_multi_byte_types_come_back_native_without_a_second_copy(tmp_path):
    array = np.linspace(-3, 3, 60, dtype=np.float64).reshape(3, 4, 5)
    write_idx(tmp_path / "f.gz", array)
    back = read_idx(tmp_path / "f.gz")
    assert back.dtype.isnative and np.array_equal(back, array)
    assert back.base is not None and back.base.dtype == np.uint8  # a view of the one buffer


_PEAK = textwrap.dedent(
    """
    import json, sys
    from handprop.training.idx import read_idx

    def status(field):  # this address space's (ru_maxrss would be inherited over exec)
        with open("/proc/self/status") as f:
            line = next(line for line in f if line.startswith(field + ":"))
        return int(line.split()[1]) * 1024

    before, peak_before = status("VmRSS"), status("VmHWM")
    try:
        array = read_idx(sys.argv[1])
        size, error = array.nbytes, None
    except Exception as exc:
        size, error = 0, type(exc).__name__
    print(json.dumps({"before": before, "peak_before": peak_before, "peak": status("VmHWM"),
                      "bytes": size, "error": error}))
    """
)


def _peak(path: Path, budget: str | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    if budget:
        env["HANDPROP_MEMORY_BUDGET"] = budget
    done = subprocess.run([sys.executable, "-c", _PEAK, str(path)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
def test_peak_memory_of_a_gzip_load_within_one_and_a_half_times_the_estimate(tmp_path):
    """A 150 MB gzip IDX (0.15 MB on disk): the process's peak grows by at most 1.5x
    ``idx_read_bytes`` of the declared size; a bomb declaring 4 GB is refused with the
    peak where it was."""
    declared = 150 * 10**6
    path = tmp_path / "zeros.gz"
    path.write_bytes(_gzip_stream(_header(0x08, (declared // 1000, 1000)), declared))
    measured = _peak(path)
    assert measured["error"] is None and measured["bytes"] == declared
    growth = measured["peak"] - measured["before"]
    assert growth <= 1.5 * idx_read_bytes(declared), measured
    assert growth >= 0.9 * declared  # the array itself was really built
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(_gzip_stream(_header(0x08, (4000, 1000, 1000)), 2 * CHUNK))
    refused = _peak(bomb, budget="1G")
    assert refused["error"] == "LimitError"
    assert refused["peak"] - refused["peak_before"] < 8 * 10**6, refused  # nothing inflated
