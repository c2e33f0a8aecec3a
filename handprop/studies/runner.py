"""Running a study's jobs: in parallel processes (joblib) or on a Dask cluster, with
progress, resumable.

A study (``reproduce``, ``compare``; its skeleton is :mod:`.study`) is a list of
:class:`Job` s. Each job trains a group of runs in lockstep (its replicas) and writes
one record file per run, atomically. A job whose record files all exist is skipped, so
an interrupted study resumes where it stopped. Jobs report progress by writing a small
text file that the parent polls, which gives a progress bar with an ETA across
processes.

Where jobs run is a :class:`Backend`:

* ``loky`` -- local worker processes. Each worker watches its parent and exits when the
  parent is gone (even after ``kill -9``), so no worker outlives a study and holds its
  terminal or pipe (their resource trackers exit with them);
* ``sequential`` -- this process;
* ``dask`` -- the workers of a Dask cluster, through ``dask.distributed`` directly:
  every job runs in a worker process, never in this one. The number of connected
  workers is printed at the start; a warning comes when no worker has been connected
  for ``wait_for_workers`` seconds; a lost scheduler ends the run with
  :class:`BackendError` after the finished jobs are counted.

Every job result carries ``pid``, the process that ran it.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib
import json
import logging
import os
import re
import socket
import struct
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError, HandpropError
from ..core.interrupts import handled, raise_if_interrupted
from ..core.io import atomic_write_text, remove_temporaries, temporary_tag
from ..core.limits import MAX_JOBS, check_int
from .progress import ProgressBar

BACKENDS = ("loky", "sequential", "dask")
WAIT_FOR_WORKERS = 30.0  # seconds without a Dask worker before a warning
PARENT_POLL = 0.2  # seconds between two checks of a worker's parent


class BackendError(HandpropError):
    """Where the jobs run failed: a lost Dask scheduler, a worker that kept dying."""


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
    scratch : folders the job writes in besides its outputs' (e.g. resume points): the
        temporary files a killed writer of this run leaves there are deleted like those
        beside the outputs
    """

    id: str
    target: str
    spec: dict[str, Any]
    outputs: list[Path]
    steps: int = 1
    done: bool = field(default=False)
    fingerprint: str = ""
    scratch: list[Path] = field(default_factory=list)

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


def call_target(target: str, spec: dict[str, Any], tag: str = "") -> dict[str, Any]:
    """Import ``module:function`` and call it with ``spec`` (runs in the worker). The
    result gets ``pid`` (the process that ran the job) and ``notices`` (the engine's
    one-line notices, for the parent to show once). ``tag`` names the job's temporary
    files (see :func:`handprop.core.io.temporary_tag`)."""
    from threadpoolctl import threadpool_limits

    from ..training.epoch import EngineNotice

    module_name, _, function_name = target.partition(":")
    function: Callable[[dict[str, Any]], dict[str, Any]] = getattr(
        importlib.import_module(module_name), function_name
    )
    with warnings.catch_warnings(record=True) as caught, temporary_tag(tag):
        warnings.simplefilter("always", EngineNotice)
        # One BLAS thread per worker: the jobs already use every core.
        with threadpool_limits(limits=1):
            result = function(spec)
    notices = []
    for warning in caught:
        if issubclass(warning.category, EngineNotice):
            if str(warning.message) not in notices:
                notices.append(str(warning.message))
        else:  # any other warning as it would have been shown
            warnings.showwarning(warning.message, warning.category, warning.filename,
                                 warning.lineno)
    return {**result, "pid": os.getpid(), "notices": notices}


# -- workers die with their parent -----------------------------------------------------

def watch_parent(parent: int, poll: float = PARENT_POLL) -> None:
    """Run in each local worker as it starts: exit as soon as ``parent`` (the study's
    process) is gone, however it ended (``kill -9`` included). A worker is re-parented
    when its parent dies, so a changed ``os.getppid()`` is the signal; a daemon thread
    polls it."""
    if os.getppid() != parent:
        os._exit(1)

    def poll_parent() -> None:
        while True:
            time.sleep(poll)
            if os.getppid() != parent:
                os._exit(1)

    threading.Thread(target=poll_parent, name="handprop-watch-parent", daemon=True).start()


# -- progress --------------------------------------------------------------------------

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


# -- backends --------------------------------------------------------------------------

_ADDRESS = re.compile(r"(?:(?P<scheme>[a-z]+)://)?(?P<host>[A-Za-z0-9_.-]+|\[[0-9A-Fa-f:.]+\])"
                      r":(?P<port>\d{1,5})")
CONNECT_TIMEOUT = 10.0  # seconds for a Dask scheduler to answer


def check_scheduler_address(address: Any) -> str:
    """A Dask scheduler address: ``tcp://HOST:PORT`` or ``HOST:PORT``; ``tls://HOST:PORT``
    when Dask's config has TLS certificates (checked when connecting)."""
    match = _ADDRESS.fullmatch(address) if isinstance(address, str) else None
    if match is None or not 1 <= int(match["port"]) <= 65535:
        raise ConfigError(f"{str(address)[:100]!r} is not a Dask scheduler address; expected "
                          "tcp://HOST:PORT (e.g. tcp://127.0.0.1:8786)")
    if match["scheme"] not in (None, "tcp", "tls"):
        raise ConfigError(f"{address}: handprop connects to a Dask scheduler over tcp:// (or "
                          f"tls:// with certificates in Dask's config), not {match['scheme']}://")
    return address


def _check_tls(address: str) -> None:
    """tls:// needs the certificates Dask's config names (``distributed.comm.tls``)."""
    import dask.config

    needed = ("distributed.comm.tls.ca-file", "distributed.comm.tls.client.cert")
    missing = [key for key in needed if not dask.config.get(key, None)]
    if missing:
        raise ConfigError(f"{address}: tls:// needs TLS certificates in Dask's config; set "
                          f"{' and '.join(missing)} (e.g. DASK_DISTRIBUTED__COMM__TLS__CA_FILE"
                          "), or use tcp://")


def probe_scheduler(address: str, timeout: float = CONNECT_TIMEOUT) -> None:
    """Refuse, within ``timeout`` seconds, a tcp:// address where no Dask scheduler
    listens. A scheduler speaks first (its handshake: a frame length, 8 bytes); the
    dashboard's web server, or a port that accepts and stays silent, does not, and Dask's
    own client would wait for it for minutes."""
    match = _ADDRESS.fullmatch(address)
    host, port = match["host"].strip("[]"), int(match["port"])
    deadline = time.monotonic() + timeout
    head = b""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            while len(head) < 8:
                sock.settimeout(max(deadline - time.monotonic(), 0.01))
                chunk = sock.recv(8 - len(head))
                if not chunk:
                    break
                head += chunk
    except TimeoutError:
        raise ConfigError(f"no Dask scheduler answered at {address} within {timeout:g} s (is "
                          "it the dashboard's port? a scheduler listens on 8786 by default)"
                          ) from None
    except OSError as exc:
        raise ConfigError(f"cannot reach the Dask scheduler at {address}: "
                          f"{exc.strerror or exc}") from None
    if len(head) < 8 or not 0 < struct.unpack("<Q", head)[0] < 2**32:
        raise ConfigError(f"{address} is not a Dask scheduler (what answers there does not "
                          "speak Dask's protocol)")


def local_workers(backend: str, n_jobs: int | None, jobs: int) -> int:
    """How many local worker processes a backend starts for ``jobs`` jobs: never more than
    the jobs (0: they run in this process, or on a Dask cluster's own workers)."""
    workers = min(n_jobs or os.cpu_count() or 1, jobs)
    return workers if backend == "loky" and workers > 1 else 0


def _say(message: str) -> None:
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


class Backend:
    """Where a study's jobs run (see the module docstring). Open it (``with``) before
    anything is written: connecting to a Dask cluster can fail."""

    def __init__(self, name: str = "loky", n_jobs: int | None = None,
                 scheduler: str | None = None, wait_for_workers: float = WAIT_FOR_WORKERS,
                 say: Callable[[str], None] = _say, connect_timeout: float | None = None
                 ) -> None:
        if name not in BACKENDS:
            raise ConfigError(f"unknown backend {name!r}; choose from {', '.join(BACKENDS)}")
        if n_jobs is not None:
            check_int(n_jobs, "n_jobs (parallel processes)", 1, MAX_JOBS)
        if name == "dask":
            if not scheduler:
                raise ConfigError("the dask backend needs a scheduler address "
                                  "(e.g. tcp://127.0.0.1:8786)")
            check_scheduler_address(scheduler)
        if not (isinstance(wait_for_workers, int | float) and wait_for_workers > 0):
            raise ConfigError(f"wait_for_workers must be a number of seconds > 0, got "
                              f"{wait_for_workers!r}")
        self.name, self.n_jobs, self.scheduler = name, n_jobs, scheduler
        self.wait_for_workers = float(wait_for_workers)
        self.connect_timeout = CONNECT_TIMEOUT if connect_timeout is None else connect_timeout
        self.say = say
        self.client: Any = None

    # -- opening and closing
    def __enter__(self) -> Backend:
        self.open()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def open(self) -> None:
        if self.name == "dask" and self.client is None:
            # dask.distributed's log stays quiet while the client lives (until close())
            self._quiet = _quiet_dask()
            self._quiet.__enter__()
            try:
                self.client = _dask_client(self.scheduler, self.connect_timeout)
            except BaseException:
                self._quiet.__exit__(None, None, None)
                raise
            workers = self._workers() or {}
            threads = sum(workers.values())
            self.say(f"dask: {len(workers)} worker{'s' if len(workers) != 1 else ''} "
                     f"({threads} thread{'s' if threads != 1 else ''}) connected to "
                     f"{self.scheduler}")

    def close(self) -> None:
        if self.client is not None:
            client, self.client = self.client, None
            # (after a lost scheduler there is nothing left to close)
            with contextlib.suppress(Exception):
                client.close(timeout=5)
            self._quiet.__exit__(None, None, None)

    # -- running jobs
    def workers(self, jobs: int) -> int:
        """The local worker processes ``jobs`` jobs start (see :func:`local_workers`)."""
        return local_workers(self.name, self.n_jobs, jobs)

    def dispatch(self, todo: list[Job], tag: str = "") -> Iterator[tuple[Job, dict[str, Any]]]:
        """Run the jobs; yield ``(job, result)`` as each finishes. ``tag`` names their
        temporary files."""
        workers = self.workers(len(todo))
        if self.name == "dask":
            self.open()
            yield from self._dask(todo, tag)
        elif workers:
            yield from self._loky(todo, workers, tag)
        else:
            for job in todo:
                yield job, call_target(job.target, job.spec, tag)

    def _loky(self, todo: list[Job], n_jobs: int, tag: str
              ) -> Iterator[tuple[Job, dict[str, Any]]]:
        from joblib import Parallel, delayed, parallel_config

        def task(job: Job):
            return job.id, call_target(job.target, job.spec, tag)

        by_id = {job.id: job for job in todo}
        # Every worker runs watch_parent first: none outlives this process.
        with parallel_config(backend="loky", n_jobs=n_jobs, initializer=watch_parent,
                             initargs=(os.getpid(),)):
            runner = Parallel(return_as="generator_unordered", n_jobs=n_jobs)
            for job_id, result in runner(delayed(task)(job) for job in todo):
                yield by_id[job_id], result

    def _workers(self) -> dict[str, int] | None:
        """Connected workers and their threads (None when the scheduler does not answer)."""
        try:
            return dict(self.client.nthreads())
        except Exception:  # a lost scheduler: the caller checks the client's status
            return None

    def _dask(self, todo: list[Job], tag: str) -> Iterator[tuple[Job, dict[str, Any]]]:
        client, run = self.client, uuid.uuid4().hex[:8]
        futures = {client.submit(call_target, job.target, job.spec, tag, pure=False,
                                 key=f"handprop-{run}-{i}"): job for i, job in enumerate(todo)}
        pending = set(futures)
        alone_since: float | None = None  # when the last worker left
        warned, checked = False, 0.0
        try:  # (dask.distributed's log is quiet from open() to close())
            while pending:
                finished = [f for f in pending if f.done()]
                for future in finished:
                    pending.discard(future)
                    yield futures[future], self._result(future, futures[future])
                now = time.monotonic()
                if finished or now - checked < 1.0:
                    time.sleep(0.05 if not finished else 0)
                    continue
                checked = now
                if client.status != "running":
                    raise BackendError(self._lost())
                workers = self._workers()
                if workers is None:
                    continue  # no answer this time
                if workers:
                    alone_since, warned = None, False
                elif alone_since is None:
                    alone_since = now
                elif not warned and now - alone_since >= self.wait_for_workers:
                    warned = True
                    self.say(f"handprop: warning: no Dask worker connected to "
                             f"{self.scheduler} for {now - alone_since:.0f} s; "
                             f"{len(pending)} job{'s' if len(pending) != 1 else ''} "
                             "waiting (Ctrl-C stops and reports what finished)")
        finally:
            if pending and client.status == "running":
                with contextlib.suppress(Exception):
                    client.cancel(list(pending))  # best effort on the way out

    def _lost(self) -> str:
        return f"lost the Dask scheduler at {self.scheduler}"

    def _result(self, future: Any, job: Job) -> dict[str, Any]:
        if future.status == "finished":
            return future.result()
        if future.status == "error":
            error = future.exception()
            if isinstance(error, HandpropError):
                raise error
            if type(error).__name__ == "KilledWorker":
                raise BackendError(f"job {job.id} killed every Dask worker that ran it")
            raise error
        raise BackendError(self._lost())  # cancelled or lost with the scheduler


@contextlib.contextmanager
def _quiet_dask() -> Iterator[None]:
    """Silence dask.distributed's own log (every ``distributed.*`` logger: some have their
    own level) while handprop reports: one line, not a page of reconnection messages."""
    with contextlib.suppress(ImportError):
        import distributed  # noqa: F401 - its loggers exist (and have their levels) once imported
    names = ["distributed", *(name for name in logging.root.manager.loggerDict
                              if name.startswith("distributed."))]
    levels = {name: logging.getLogger(name).level for name in names}
    for name in names:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _dask_client(scheduler: str | None, timeout: float | None = None):
    """A Client of the scheduler, or a ConfigError within about ``timeout`` seconds."""
    check_scheduler_address(scheduler)
    timeout = CONNECT_TIMEOUT if timeout is None else timeout
    try:
        from dask.distributed import Client
    except ImportError:
        raise ConfigError(
            "the dask backend needs dask.distributed: pip install 'handprop[dask]'"
        ) from None
    if scheduler.startswith("tls://"):
        _check_tls(scheduler)
    else:
        probe_scheduler(scheduler, timeout)
    outcome: dict[str, Any] = {}

    def connect() -> None:  # in a thread, so that no handshake can hold this one
        try:
            outcome["client"] = Client(scheduler, timeout=f"{timeout}s")
        except Exception as exc:  # reported below, as one line
            outcome["error"] = exc

    thread = threading.Thread(target=connect, name="handprop-dask-connect", daemon=True)
    thread.start()
    thread.join(timeout + 5)
    if "client" in outcome:
        return outcome["client"]
    error = outcome.get("error")
    detail = f"{type(error).__name__}: {error}"[:200] if error else f"no answer in {timeout:g} s"
    raise ConfigError(f"cannot connect to the Dask scheduler at {scheduler} ({detail})")


# -- running a study's jobs ------------------------------------------------------------

def run_jobs(
    jobs: list[Job],
    out: str | Path,
    backend: str | Backend = "loky",
    n_jobs: int | None = None,
    scheduler: str | None = None,
    show_progress: bool | None = None,
    label: str = "",
    progress: str | None = None,
) -> tuple[list[dict[str, Any]], float]:
    """Run every job that is not done yet; return (their results, seconds).

    backend : ``loky`` (local processes, the default), ``sequential`` (this process),
        ``dask`` (a Dask cluster at ``scheduler``, e.g. ``tcp://host:8786``), or an open
        :class:`Backend`.
    progress : auto | bar | lines | none (see :mod:`.progress`); ``show_progress`` is the
        older switch (False: none).
    """
    if not isinstance(backend, Backend):
        with Backend(backend, n_jobs, scheduler) as opened:
            return run_jobs(jobs, out, opened, show_progress=show_progress, label=label,
                            progress=progress)
    out = Path(out)
    todo = [job for job in jobs if not job.is_done()]
    for job in jobs:
        job.done = job not in todo
    if not todo:
        return [], 0.0
    total = sum(job.steps for job in todo)
    bar = ProgressBar(max(total, 1), label, enabled=show_progress, mode=progress)
    start = time.perf_counter()
    finished_steps = [0]
    stop = threading.Event()
    poller = threading.Thread(target=_poll, args=(out, todo, bar, stop, finished_steps),
                              daemon=True)
    poller.start()
    results: list[dict[str, Any]] = []
    tag, shown = f"run{uuid.uuid4().hex[:12]}", set()  # this run's temporary files
    try:
        for job, result in backend.dispatch(todo, tag):
            job.done = True
            finished_steps[0] += job.steps
            results.append(result)
            for notice in result.get("notices", []):
                if notice not in shown:
                    shown.add(notice)
                    bar.message(f"handprop: note: {notice}")
            raise_if_interrupted()  # a signal lost during the job (core/interrupts.py)
    finally:
        stop.set()
        poller.join()
        # A worker killed mid-write (an interrupt) can leave its temporary file behind:
        # only this run's are deleted (never a user's .tmp file, nor another run's).
        folders = {path.parent for job in todo for path in job.outputs}
        folders |= {Path(folder) for job in todo for folder in job.scratch}
        remove_temporaries(folders | {out, out / ".progress"}, tag)
        remove_progress(out, todo)
        bar.update(finished_steps[0], f"{sum(j.done for j in todo)}/{len(todo)} jobs")
        bar.close()
    return results, time.perf_counter() - start


def remove_progress(out: Path, jobs: list[Job]) -> None:
    """Delete the jobs' progress files, and ``.progress`` once it is empty."""
    for job in jobs:
        progress_path(out, job.id).unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        (Path(out) / ".progress").rmdir()


@dataclass
class StudyRun:
    """How a study's jobs went: for its report."""

    jobs: int
    skipped: int
    finished: int
    interrupted: bool
    seconds: float
    error: HandpropError | None = None  # what ended the run early (a lost scheduler, ...)


def run_study(jobs: list[Job], out: Path, backend: str | Backend, n_jobs: int | None,
              scheduler: str | None, show_progress: bool | None, label: str,
              progress: str | None = None) -> StudyRun:
    """:func:`run_jobs`, turning Ctrl-C/SIGTERM into ``interrupted`` and a failure of
    the backend or of a job (a :class:`HandpropError`) into ``error``, so that the
    caller still writes its report of what finished (then re-raises)."""
    skipped = sum(job.is_done() for job in jobs)
    interrupted, error = False, None
    start = time.perf_counter()
    try:
        run_jobs(jobs, out, backend, n_jobs, scheduler, show_progress, label=label,
                 progress=progress)
    except KeyboardInterrupt:
        handled()
        interrupted = True
    except HandpropError as exc:
        error = exc
    return StudyRun(len(jobs), skipped, sum(job.is_done() for job in jobs), interrupted,
                    time.perf_counter() - start, error)
