"""End-to-end tests of the study runner (handprop.studies.runner) through ``handprop reproduce``:
resuming, interrupting (SIGTERM), and the Dask backend."""

from __future__ import annotations

import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from helpers import load_json as load
from helpers import run_cli

QUICK_RULES = "exact,seed-original,seed-broken,broken-upstream,broken-text"  # the defaults
# experiments x (5 rules on the corrected net + 2 on the as-run net + 2 sensitivity jobs);
# a job trains both protocols (article and held-out runs)
QUICK_JOBS = 3 * (5 + 2 + 2)
QUICK_RECORDS = 3 * (5 + 2) * 2 * 2 + 3 * 2 * 2  # ... x seeds x protocols; sensitivity
INTERRUPT_EPOCHS = 10
SAME = ("cost", "test_accuracy", "test_correct", "test_raw", "alignment", "diverged",
        "fingerprint", "seed", "config")






def record_files(out: Path) -> list[Path]:
    return sorted((out / "runs").rglob("*.json"))


def mtimes(paths) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in paths}


def temporary_files(out: Path) -> list[str]:
    return [os.path.join(root, name) for root, _, names in os.walk(out)
            for name in names if name.endswith(".tmp")]


def jobs_of(out: Path) -> list:
    from handprop.studies.reproduce import build_jobs, load_config

    return build_jobs(load_config(out / "config.toml"), out)


@pytest.fixture
def local_run(reproduce_quick_copy) -> Path:
    """``reproduce --quick`` with the default (loky) backend (a private copy of the
    session's run)."""
    return reproduce_quick_copy


# -- resume ----------------------------------------------------------------------------

def test_second_run_reuses_every_job(local_run):
    records = record_files(local_run)
    assert len(records) == QUICK_RECORDS
    before = mtimes(records)
    contents = {p: p.read_bytes() for p in records}
    summary_before = load(local_run / "summary.json")
    code, stdout, stderr = run_cli("reproduce", "--quick", "--rules", QUICK_RULES, "--out",
                                   local_run, "--quiet")
    assert code == 0, stderr
    assert mtimes(records) == before
    assert {p: p.read_bytes() for p in records} == contents
    summary = load(local_run / "summary.json")
    meta = summary["meta"]
    assert meta["skipped_jobs"] == QUICK_JOBS and meta["finished_jobs"] == QUICK_JOBS
    assert meta["jobs"] == QUICK_JOBS and meta["interrupted"] is False
    assert f"{QUICK_JOBS}/{QUICK_JOBS} jobs finished, {QUICK_JOBS} reused" in \
        (local_run / "summary.txt").read_text()
    assert summary["variants"] == summary_before["variants"]
    assert f"{QUICK_JOBS} reused" in stdout


def test_moved_folder_resumes_and_new_settings_rerun(local_run, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(local_run, moved)
    records = record_files(moved)
    before = mtimes(records)
    fingerprints = {p: load(p)["fingerprint"] for p in records}
    code, _, stderr = run_cli("reproduce", "--quick", "--rules", QUICK_RULES, "--out", moved,
                              "--quiet")
    assert code == 0, stderr
    assert load(moved / "summary.json")["meta"]["skipped_jobs"] == QUICK_JOBS
    assert mtimes(records) == before
    # other settings -> other fingerprints -> every job runs again (the ablations have their
    # own length)
    code, _, stderr = run_cli("reproduce", "--quick", "--rules", QUICK_RULES, "--epochs", "1",
                              "--ablation-epochs", "1", "--out", moved, "--quiet")
    assert code == 0, stderr
    meta = load(moved / "summary.json")["meta"]
    assert meta["skipped_jobs"] == 0 and meta["finished_jobs"] == QUICK_JOBS
    assert record_files(moved) == records
    for path in records:
        record = load(path)
        assert path.stat().st_mtime_ns != before[path], path
        assert record["fingerprint"] != fingerprints[path]
        assert len(record["cost"]) == 1 and record["config"]["epochs"] == 1


# -- interrupt -------------------------------------------------------------------------

def interrupt_study(out: Path, argv: list[str]) -> list:
    """Run ``handprop ARGV`` in a subprocess, SIGTERM it once a job has written all its
    records, check what it leaves behind; return the jobs that had finished."""
    process = subprocess.Popen([sys.executable, "-m", "handprop.cli", *argv],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not (record_files(out) and any(job.is_done() for job in jobs_of(out))):
            assert process.poll() is None, "the study ended before it could be interrupted"
            assert time.monotonic() < deadline, "no job finished within 60 s"
            time.sleep(0.02)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    assert "handprop: interrupted" in stderr
    assert temporary_files(out) == []
    kept = record_files(out)
    assert kept
    for path in kept:
        record = load(path)  # whole files only (atomic writes)
        assert record["diverged"] is None and len(record["cost"]) == INTERRUPT_EPOCHS
    jobs = jobs_of(out)
    finished = [job for job in jobs if job.is_done()]
    assert 1 <= len(finished) < len(jobs)
    summary = load(out / "summary.json")
    meta = summary["meta"]
    assert meta["interrupted"] is True
    assert meta["finished_jobs"] == len(finished) and meta["jobs"] == len(jobs)
    for experiment, data in summary["variants"]["corrected"].items():
        present = len(list((out / "runs" / "corrected" / experiment / "exact").glob(
            "article-seed*.json")))
        assert data["rules"]["exact"]["runs"] == present, experiment
    assert "Interrupted" in (out / "report.md").read_text()
    assert f"{len(finished)}/{len(jobs)} jobs finished" in (out / "summary.txt").read_text()
    return finished



def interrupt_argv(out: Path, *extra: str) -> list[str]:
    return ["reproduce", "--quick", "--epochs", str(INTERRUPT_EPOCHS), "--ablation-epochs",
            str(INTERRUPT_EPOCHS), "--rules", "exact", "--out", str(out), "--quiet", *extra]


@pytest.mark.slow
def test_sigterm_keeps_finished_work_and_resume_completes(tmp_path):
    out = tmp_path / "study"
    argv = interrupt_argv(out, "--jobs", "1")
    finished = interrupt_study(out, argv)
    finished_records = [path for job in finished for path in job.outputs]
    before = mtimes(finished_records)
    code, _, stderr = run_cli(*argv)
    assert code == 0, stderr
    assert mtimes(finished_records) == before  # finished jobs are skipped
    meta = load(out / "summary.json")["meta"]
    jobs = jobs_of(out)
    assert meta["skipped_jobs"] == len(finished)
    assert meta["finished_jobs"] == len(jobs) and meta["interrupted"] is False
    assert all(job.is_done() for job in jobs)
    assert "Interrupted" not in (out / "report.md").read_text()
    assert temporary_files(out) == []


@pytest.mark.slow
def test_sigterm_with_worker_processes(tmp_path):
    """The default backend (loky, one process per core): same guarantees."""
    out = tmp_path / "study"
    interrupt_study(out, interrupt_argv(out))


# -- Dask ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def unreachable(tmp_path_factory):
    """``--backend dask --scheduler tcp://127.0.0.1:1`` (nothing listens there), started in
    the background: it mostly waits for Dask's connect timeout, so it runs beside the Dask
    test instead of after it."""
    out = tmp_path_factory.mktemp("sweep") / "unreachable"
    process = subprocess.Popen(
        [sys.executable, "-m", "handprop.cli", "reproduce", "--quick", "--rules", "exact",
         "--backend", "dask", "--scheduler", "tcp://127.0.0.1:1", "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    yield process, out
    if process.poll() is None:
        process.kill()
        process.communicate()


@pytest.mark.slow
def test_dask_backend_runs_on_the_workers_and_gives_the_local_results(local_run, unreachable,
                                                                     tmp_path):
    """One worker with one thread (where joblib used to run every job in this process):
    every job runs in the worker's process, and the results are the local ones."""
    # (``unreachable`` only starts the background check of the next test)
    distributed = pytest.importorskip("dask.distributed")
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    try:
        with distributed.Client(cluster) as client:
            worker_pids = set(client.run(os.getpid).values())
        out = tmp_path / "dask"
        code, _, stderr = run_cli("reproduce", "--quick", "--rules", QUICK_RULES, "--backend",
                                  "dask", "--scheduler", cluster.scheduler_address, "--out",
                                  out, "--quiet")
    finally:
        cluster.close()
    assert code == 0, stderr
    assert f"dask: 1 worker (1 thread) connected to {cluster.scheduler_address}" in stderr
    assert len(worker_pids) == 1 and os.getpid() not in worker_pids
    local, remote = record_files(local_run), record_files(out)
    assert [p.relative_to(local_run) for p in local] == [p.relative_to(out) for p in remote]
    for a, b in zip(local, remote, strict=True):
        first, second = load(a), load(b)
        assert second["pid"] in worker_pids, b  # trained in the worker, not in this process
        for key in SAME:
            assert first.get(key) == second.get(key), (a, key)
    summary = load(out / "summary.json")
    assert summary["meta"]["backend"] == "dask"
    assert summary["meta"]["finished_jobs"] == QUICK_JOBS
    assert summary["variants"] == load(local_run / "summary.json")["variants"]


def _lines(stream, into: queue.Queue) -> None:
    for line in stream:
        into.put(line)


def _wait_for(lines: queue.Queue, seen: list[str], text: str, seconds: float) -> str:
    deadline = time.monotonic() + seconds
    while True:
        for line in seen:
            if text in line:
                return line
        try:
            seen.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
        except queue.Empty:
            raise AssertionError(f"no {text!r} within {seconds} s: {seen}") from None


@pytest.mark.slow
def test_dask_no_workers_warning_then_workers_then_a_lost_scheduler(tmp_path):
    """A cluster without workers: the count (0) is printed, then a warning after
    --wait-workers; a worker joins and runs the jobs (its PID is in the records); the
    scheduler goes away: one line, exit 2, and a report of what finished."""
    distributed = pytest.importorskip("dask.distributed")
    cluster = distributed.LocalCluster(n_workers=0, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    out = tmp_path / "dask"
    process = subprocess.Popen(
        [sys.executable, "-m", "handprop.cli", "reproduce", "--quick", "--epochs", "30",
         "--rules", "exact", "--backend", "dask", "--scheduler", cluster.scheduler_address,
         "--wait-workers", "1", "--out", str(out), "--quiet"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=_lines, args=(process.stderr, lines), daemon=True).start()
    seen: list[str] = []
    try:
        _wait_for(lines, seen, "dask: 0 workers (0 threads) connected", 60)
        _wait_for(lines, seen, "handprop: warning: no Dask worker connected", 30)
        cluster.scale(1)
        with distributed.Client(cluster) as client:
            client.wait_for_workers(1, timeout=60)
            worker_pids = set(client.run(os.getpid).values())
        deadline = time.monotonic() + 90
        while not any(job.is_done() for job in jobs_of(out)):
            assert process.poll() is None, "the study ended before the scheduler was lost"
            assert time.monotonic() < deadline, "no job finished within 90 s"
            time.sleep(0.1)
    finally:
        cluster.close()  # the scheduler goes away
    try:
        code = process.wait(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    time.sleep(0.2)  # the reader thread drains the pipe
    while not lines.empty():
        seen.append(lines.get())
    errors = [line for line in seen if line.startswith("handprop: error:")]
    assert code == 2, seen
    assert len(errors) == 1 and "lost the Dask scheduler" in errors[0], seen
    assert not any("Traceback" in line for line in seen), "".join(seen)
    summary = load(out / "summary.json")
    jobs = jobs_of(out)
    finished = [job for job in jobs if job.is_done()]
    assert 1 <= summary["meta"]["finished_jobs"] == len(finished) < len(jobs)
    assert summary["meta"]["interrupted"] is True
    assert "lost the Dask scheduler" in (out / "report.md").read_text()
    for path in record_files(out):
        assert load(path)["pid"] in worker_pids and load(path)["pid"] != process.pid


@pytest.mark.slow
def test_unreachable_dask_scheduler_is_a_one_line_error(unreachable):
    process, out = unreachable
    _, stderr = process.communicate(timeout=90)
    assert process.returncode == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("handprop: error:") and "tcp://127.0.0.1:1" in lines[0]
    assert "Traceback" not in stderr
    assert not out.exists()  # not even config.toml: nothing ran


def test_dask_without_scheduler_is_refused(tmp_path):
    code, _, stderr = run_cli("reproduce", "--quick", "--backend", "dask", "--out",
                              tmp_path / "out", "--quiet")
    assert code == 2 and "--scheduler" in stderr
    assert not (tmp_path / "out").exists()


def test_unknown_backend_is_refused(tmp_path):
    code, _, stderr = run_cli("reproduce", "--quick", "--backend", "ray", "--out",
                              tmp_path / "out", "--quiet")
    assert code == 2 and "backend" in stderr and len(stderr.strip().splitlines()) == 1
