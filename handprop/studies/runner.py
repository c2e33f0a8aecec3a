"""Running a study's jobs: in parallel processes (joblib), with progress, resumable.

A study (``reproduce``, ``compare``; its skeleton is :mod:`.study`) is a list of
:class:`Job` s. Each job trains a group of runs in lockstep (its replicas) and writes
one record file per run, atomically. A job whose record files all exist is skipped, so
an interrupted study resumes where it stopped. Jobs report progress by writing a small
text file that the parent polls, which gives a progress bar with an ETA across
processes.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError
from ..core.io import atomic_write_text
from .progress import ProgressBar

BACKENDS = ("loky", "sequential", "dask")


@dataclass
class Job:
    """One unit of work.

    id : unique, filesystem-safe name (e.g. ``fc18-20/seed-broken/article``)
    target : ``"module:function"`` called as ``function(spec)`` in the worker
    spec : JSON-able arguments (must include everything the job needs)
    outputs : record files the job writes; all present means the job is done
    steps : amount of work (training steps), for the ETA
    fingerprint : the job's settings; a record written with other settings does not count
        as done (set automatically from ``spec``; records store it as "fingerprint")
    """

    id: str
    target: str
    spec: dict[str, Any]
    outputs: list[Path]
    steps: int = 1
    done: bool = field(default=False)
    fingerprint: str = ""

    def __post_init__(self) -> None:
        if not self.fingerprint:
            self.fingerprint = fingerprint(self.spec)
        self.spec["fingerprint"] = self.fingerprint

    def is_done(self) -> bool:
        for path in self.outputs:
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                return False
            if not isinstance(record, dict) or record.get("fingerprint") != self.fingerprint:
                return False
        return True


def fingerprint(spec: dict[str, Any]) -> str:
    """A short hash of a job's settings (paths excluded, so a moved folder still resumes)."""
    settings = {k: v for k, v in spec.items() if k not in ("out", "outputs", "fingerprint")}
    text = json.dumps(settings, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def progress_path(out: str | Path, job_id: str) -> Path:
    return Path(out) / ".progress" / re.sub(r"[^A-Za-z0-9_.-]+", "_", job_id)


class JobProgress:
    """What a running job calls to report how many of its steps are done."""

    def __init__(self, out: str | Path, job_id: str, total: int) -> None:
        self.path = progress_path(out, job_id)
        self.total = total
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._last = 0.0

    def __call__(self, done: int) -> None:
        now = time.perf_counter()
        if now - self._last >= 0.5 or done >= self.total:
            self._last = now
            atomic_write_text(self.path, f"{done} {self.total}\n")


def call_target(target: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Import ``module:function`` and call it with ``spec`` (runs in the worker)."""
    module_name, _, function_name = target.partition(":")
    function: Callable[[dict[str, Any]], dict[str, Any]] = getattr(
        importlib.import_module(module_name), function_name
    )
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - shipped with scikit-learn
        return function(spec)
    # One BLAS thread per worker: the jobs already use every core.
    with threadpool_limits(limits=1):
        return function(spec)


def _poll(out: Path, jobs: list[Job], bar: ProgressBar, stop: threading.Event,
          finished_steps: list[int]) -> None:
    while not stop.wait(0.5):
        running = 0
        for job in jobs:
            if job.done:
                continue
            try:
                done, _ = progress_path(out, job.id).read_text().split()
                running += min(int(done), job.steps)
            except (OSError, ValueError):
                pass
        total_done = finished_steps[0] + running
        bar.update(total_done, f"{sum(j.done for j in jobs)}/{len(jobs)} jobs")


def run_jobs(
    jobs: list[Job],
    out: str | Path,
    backend: str = "loky",
    n_jobs: int | None = None,
    scheduler: str | None = None,
    show_progress: bool | None = None,
    label: str = "",
) -> tuple[list[dict[str, Any]], float]:
    """Run every job that is not done yet; return (their results, seconds).

    backend : ``loky`` (local processes, the default), ``sequential`` (this process) or
        ``dask`` (a Dask cluster at ``scheduler``, e.g. ``tcp://host:8786``).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    out = Path(out)
    todo = [job for job in jobs if not job.is_done()]
    for job in jobs:
        job.done = job not in todo
    total = sum(job.steps for job in todo)
    bar = ProgressBar(max(total, 1), label, enabled=show_progress)
    start = time.perf_counter()
    if not todo:
        return [], 0.0
    finished_steps = [0]
    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(out, todo, bar, stop, finished_steps),
                              daemon=True)
    poller.start()
    results: list[dict[str, Any]] = []
    try:
        for job, result in _dispatch(todo, backend, n_jobs, scheduler):
            job.done = True
            finished_steps[0] += job.steps
            results.append(result)
    finally:
        stop.set()
        poller.join()
        # A worker killed mid-write (interrupt) can leave its temporary file behind.
        for leftover in out.rglob(".*.tmp"):
            leftover.unlink(missing_ok=True)
        bar.update(finished_steps[0], f"{sum(j.done for j in todo)}/{len(todo)} jobs")
        bar.close()
    return results, time.perf_counter() - start


@dataclass
class StudyRun:
    """How a study's jobs went: for its report."""

    jobs: int
    skipped: int
    finished: int
    interrupted: bool
    seconds: float


def run_study(jobs: list[Job], out: Path, backend: str, n_jobs: int | None,
              scheduler: str | None, show_progress: bool | None, label: str) -> StudyRun:
    """:func:`run_jobs`, turning Ctrl-C/SIGTERM into ``interrupted`` so that the caller
    still writes its report of what finished (then re-raises)."""
    skipped = sum(job.is_done() for job in jobs)
    interrupted = False
    start = time.perf_counter()
    try:
        run_jobs(jobs, out, backend, n_jobs, scheduler, show_progress, label=label)
    except KeyboardInterrupt:
        interrupted = True
    return StudyRun(len(jobs), skipped, sum(job.is_done() for job in jobs), interrupted,
                    time.perf_counter() - start)


def _dispatch(todo: list[Job], backend: str, n_jobs: int | None,
              scheduler: str | None) -> Iterable[tuple[Job, dict[str, Any]]]:
    if backend == "sequential" or (n_jobs == 1 and backend == "loky"):
        for job in todo:
            yield job, call_target(job.target, job.spec)
        return
    from joblib import Parallel, delayed, parallel_config

    def task(job: Job):
        return job.id, call_target(job.target, job.spec)

    by_id = {job.id: job for job in todo}
    if backend == "dask":
        client = _dask_client(scheduler)
        context = parallel_config(backend="dask", wait_for_workers_timeout=60)
    else:
        client = None
        context = parallel_config(backend="loky", n_jobs=n_jobs or os.cpu_count() or 1)
    try:
        with context:
            runner = Parallel(return_as="generator_unordered",
                              n_jobs=-1 if backend == "dask" else (n_jobs or os.cpu_count()))
            for job_id, result in runner(delayed(task)(job) for job in todo):
                yield by_id[job_id], result
    finally:
        if client is not None:
            client.close()


def _dask_client(scheduler: str | None):
    if not scheduler:
        raise ConfigError("--backend dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
    try:
        from dask.distributed import Client
    except ImportError:
        raise ConfigError(
            "--backend dask needs dask.distributed: pip install 'handprop[dask]'"
        ) from None
    try:
        return Client(scheduler, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
