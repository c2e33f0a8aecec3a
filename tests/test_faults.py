"""Issue 9's fault tests, on the real ``handprop`` command in a subprocess: a reader that
goes away (broken pipe), and a study killed with SIGKILL whose workers must not outlive
it. (The interrupt cases are in test_hardening.py and test_sweep.py, the Dask ones in
test_sweep.py.)"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

HANDPROP = [sys.executable, "-m", "handprop.cli"]


# -- (9.5) a closed pipe -------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize(("argv", "written"), [
    (["train", "--epochs", "1", "--json", "o.json"], "o.json"),
    (["rules"], None),
    (["gradcheck", "--net", "seed", "--json", "g.json"], "g.json"),
], ids=["train", "rules", "gradcheck"])
def test_a_closed_pipe_is_quiet_and_loses_nothing(tmp_path, argv, written):
    """``handprop ... | head -0``: the reader is gone before the first line. The command
    finishes its work, writes its files, and exits 0 without a word on stderr."""
    process = subprocess.Popen(HANDPROP + argv, cwd=tmp_path, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE)
    process.stdout.close()  # the reader goes away at once: every write hits a closed pipe
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 0, stderr
    assert stderr == ""
    if written:
        assert json.loads((tmp_path / written).read_text())  # whole, valid JSON


@pytest.mark.slow
def test_head_reads_the_first_line(tmp_path):
    """The shell's ``handprop train --json o.json | head -1``."""
    result = subprocess.run(f"{' '.join(HANDPROP)} train --epochs 1 --json o.json | head -1; "
                            "exit ${PIPESTATUS[0]}", shell=True, executable="/bin/bash",
                            cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("\n") == 1 and result.stderr == ""
    assert json.loads((tmp_path / "o.json").read_text())["cost_history"]


# -- (9.6) workers exit with their parent ----------------------------------------------

def _alive_in_session(session: int) -> dict[int, str]:
    """Processes of a session that are still running (not zombies): pid -> command."""
    found = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
            command = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        state, sid = fields[0], int(fields[3])
        if sid == session and state != "Z":
            found[int(entry)] = command.decode(errors="replace")[:120]
    return found


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_workers_and_trackers_exit_with_a_killed_study(tmp_path):
    """``kill -9`` the study: within a few seconds no worker or resource tracker of it is
    left (they would hold its stdout and stderr, and ``| tee`` would hang)."""
    out = tmp_path / "study"
    process = subprocess.Popen(
        HANDPROP + ["reproduce", "--quick", "--epochs", "400", "--rules", "exact", "--jobs", "2",
                    "--out", str(out), "--quiet"],
        start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    session = process.pid
    try:
        deadline = time.monotonic() + 60
        while True:  # until both workers are training
            workers = [c for pid, c in _alive_in_session(session).items()
                       if pid != process.pid and "loky" in c and "resource_tracker" not in c]
            progress = list((out / ".progress").glob("*")) if (out / ".progress").exists() \
                else []
            if len(workers) >= 2 and progress:
                break
            assert process.poll() is None, "the study ended before it could be killed"
            assert time.monotonic() < deadline, "no workers within 60 s"
            time.sleep(0.1)
        before = _alive_in_session(session)
        assert len(before) >= 3  # the study, its workers (and their resource trackers)
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=10)
        deadline = time.monotonic() + 10
        while _alive_in_session(session) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _alive_in_session(session) == {}, f"left running: {_alive_in_session(session)}"
    finally:
        if process.poll() is None:
            process.kill()
        for pid in _alive_in_session(session):  # only this test's processes
            os.kill(pid, signal.SIGKILL)
