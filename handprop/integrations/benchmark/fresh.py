"""Real runs in fresh processes: samples/s and page faults, handprop beside PyTorch.

A long benchmark process is not what a user runs: its allocator has settled, its caches
are warm, and a reference that collapses under load (2-thread PyTorch on a busy 2-core
machine) makes any single ratio meaningless. So each workload (:class:`.Workload`) is
trained from the start in a new process (:mod:`.fresh_child`), by every *contender*:

* handprop, per engine (a parameter: any name ``fit`` accepts, so a new compiled layout
  is one more row), on 1 core (``threads=1``, BLAS on one thread) and on 2 cores
  (``threads=2``, BLAS on two);
* handprop from other source trees (``baselines``: a git worktree of an earlier commit),
  NumPy engine, on the same cores;
* optionally the NumPy engine with glibc's malloc defaults (``HANDPROP_MALLOC=system``,
  see :mod:`handprop.training.allocator`), to show what keeping freed memory gives;
* PyTorch on 1 thread and on 2 threads.

One *block* runs every contender once, in the order handprop 1 core, torch 1 thread,
handprop 2 cores, torch 2 threads; ``repeats`` blocks follow one another, so every ratio
is taken between runs of the same block (interleaved, under the same load) and reported
as min/median/max over the blocks. Nothing is warmed up in the child process (only a
compiled engine's kernels are loaded first); each epoch's minor page faults are counted
(``getrusage``), the last epoch's being the steady state.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .settings import Workload

CHILD = Path(__file__).with_name("fresh_child.py")
SOURCE = Path(__file__).resolve().parents[3]  # the tree this handprop is imported from
BLAS_THREADS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")
TIMEOUT_S = 3600


@dataclass(frozen=True)
class Contender:
    """Who trains a workload: ``library`` handprop or torch, on ``workers`` cores (torch:
    threads); handprop's ``engine``, its ``source`` tree (None: this one) and ``malloc``
    ("system": glibc's defaults)."""

    library: str
    workers: int
    engine: str = "numpy"
    source: str | None = None
    malloc: str | None = None

    @property
    def label(self) -> str:
        plural = "s" if self.workers > 1 else ""
        if self.library == "torch":
            return f"torch, {self.workers} thread{plural}"
        where = f" @ {Path(self.source).name}" if self.source else ""
        malloc = ", glibc malloc defaults" if self.malloc == "system" else ""
        return f"handprop {self.engine}{where}, {self.workers} core{plural}{malloc}"

    @property
    def current(self) -> bool:
        """handprop as it is here (this tree, its own allocator settings)."""
        return self.library == "handprop" and self.source is None and self.malloc is None


def contenders(engines: tuple[str, ...] | list[str], baselines: list[str] | tuple[str, ...],
               with_torch: bool, malloc_defaults: bool) -> list[Contender]:
    """Every contender of a block, in running order (see the module notes)."""
    cores = (1, 2) if (os.cpu_count() or 1) >= 2 else (1,)
    order: list[Contender] = []
    for workers in cores:
        order += [Contender("handprop", workers, engine) for engine in engines]
        order += [Contender("handprop", workers, source=str(tree)) for tree in baselines]
        if malloc_defaults and workers == cores[-1]:
            order.append(Contender("handprop", workers, malloc="system"))
        if with_torch:
            order.append(Contender("torch", workers))
    return order


def run_child(contender: Contender, work: Workload) -> dict[str, Any]:
    """One fresh process training ``work``: its result, or {"error": why it failed}."""
    source = contender.source or str(SOURCE)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (source, os.environ.get("PYTHONPATH")) if p)}
    env.update({name: str(contender.workers) for name in BLAS_THREADS})
    env.pop("HANDPROP_MALLOC", None)
    if contender.malloc:
        env["HANDPROP_MALLOC"] = contender.malloc
    job = {"library": contender.library, "workers": contender.workers,
           "engine": contender.engine, "workload": work.to_dict()}
    try:
        done = subprocess.run([sys.executable, str(CHILD), json.dumps(job)], env=env,
                              capture_output=True, text=True, timeout=TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {TIMEOUT_S} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        return {"error": why}
    return _epochs(json.loads(lines[-1]), work)


def _epochs(run: dict[str, Any], work: Workload) -> dict[str, Any]:
    """A child's marks as per-epoch seconds and faults, and the whole run's samples/s."""
    marks = run.pop("marks")
    seconds = [b[0] - a[0] for a, b in zip(marks, marks[1:])]  # noqa: B905
    faults = [b[1] - a[1] if a[1] >= 0 else None for a, b in zip(marks, marks[1:])]  # noqa: B905
    samples = work.images * max(work.replicas, 1) * len(seconds)
    return {**run, "epoch_seconds": seconds, "epoch_faults": faults,
            "samples_per_s": samples / (marks[-1][0] - marks[0][0])}


def spread(values: list[float | None]) -> dict[str, float] | None:
    """min, median and max of the values measured (None where a run failed)."""
    got = [v for v in values if v is not None]
    if not got:
        return None
    return {"min": min(got), "median": statistics.median(got), "max": max(got)}


def run_fresh(workloads: tuple[Workload, ...], order: list[Contender],
              repeats: int) -> dict[str, Any]:
    """Every workload by every contender, ``repeats`` interleaved blocks (see the module
    notes): per workload its description, a row per contender and the paired ratios."""
    table = {work.key: {"label": work.label, "text": work.describe(),
                        "workload": work.to_dict(), "rows": {}} for work in workloads}
    for work in workloads:
        for contender in order:
            table[work.key]["rows"][contender.label] = {
                "library": contender.library, "workers": contender.workers,
                "engine": contender.engine, "source": contender.source,
                "current": contender.current, "samples_per_s": [],
                "faults_first_epoch": [], "faults_last_epoch": [], "errors": []}
    for _ in range(repeats):
        for work in workloads:
            for contender in order:
                _record(table[work.key]["rows"][contender.label], run_child(contender, work))
    for work in workloads:
        entry = table[work.key]
        entry["ratios"] = _ratios(entry["rows"], order)
        for row in entry["rows"].values():
            row["summary"] = spread(row["samples_per_s"])
    return table


def _record(row: dict[str, Any], run: dict[str, Any]) -> None:
    """One block's result in its row (None where the run failed, to keep blocks paired)."""
    failed = "error" in run
    if failed:
        row["errors"].append(run["error"])
    else:
        row["engine_used"] = run.get("engine")
        row["handprop"] = run.get("handprop")
    row["samples_per_s"].append(None if failed else run["samples_per_s"])
    row["faults_first_epoch"].append(None if failed else run["epoch_faults"][0])
    row["faults_last_epoch"].append(None if failed else run["epoch_faults"][-1])


def _ratios(rows: dict[str, dict[str, Any]], order: list[Contender]) -> dict[str, Any]:
    """Paired per block: each current handprop row over torch on as many threads as it
    has cores, over each baseline tree on the same cores, and the NumPy engine over
    itself with glibc's malloc defaults. > 1: the numerator is faster."""
    pairs = []
    for ours in (c for c in order if c.current):
        for other in order:
            same_cores = other.workers == ours.workers and other != ours
            if same_cores and (other.library == "torch" or other.source is not None
                               or (other.malloc and ours.engine == "numpy")):
                pairs.append((ours.label, other.label))
    out = {}
    for top, bottom in pairs:
        values = [a / b if a is not None and b is not None else None
                  for a, b in zip(rows[top]["samples_per_s"], rows[bottom]["samples_per_s"],
                                  strict=True)]
        out[f"{top} / {bottom}"] = {"numerator": top, "denominator": bottom,
                                    "values": values, "summary": spread(values)}
    return out


def best_ratio(entry: dict[str, Any], workers: int, library: str | None = None,
               baseline: bool = False) -> dict[str, float] | None:
    """The ratio summary of the fastest current handprop row on ``workers`` cores (by
    median samples/s) over torch (``library="torch"``) or a baseline tree."""
    ours = [(label, row) for label, row in entry["rows"].items()
            if row["current"] and row["workers"] == workers and row["summary"]]
    if not ours:
        return None
    fastest = max(ours, key=lambda item: item[1]["summary"]["median"])[0]
    for ratio in entry["ratios"].values():
        other = entry["rows"][ratio["denominator"]]
        wanted = other["source"] is not None if baseline else other["library"] == library
        if ratio["numerator"] == fastest and wanted and ratio["summary"]:
            return ratio["summary"]
    return None
