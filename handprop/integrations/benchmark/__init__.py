"""The performance benchmark: handprop's training speed, and PyTorch's on the same work.

    handprop bench

In process (:mod:`.runs`), through the real training loop, best of ``repeats`` runs per
engine (``engines``: ``numpy``, the reference, and ``compiled``, Numba):

(a) ``online_step_us``: microseconds per online SGD step of the article's ``seed`` net
    (float64, batch 1, momentum lr 0.09 alpha 0.0009, L2 loss summed, raw digits 0/1
    pixels); ``online_step_us_raw`` times the bare loop (forward, loss,
    ``backward_flat``, ``optimizer.step``): the difference is what ``fit`` adds;
(b) ``seed_batch32_samples_per_s``: minibatch-32 training of ``seed`` (float64, same
    optimizer, L2 loss averaged over the batch);
* ``replica_step_us_<engine>``: microseconds per replica-step of the seed net trained
  as R = 1, 15, 24 and 120 lockstep replicas (one core);
* ``rule_step_us`` (compiled engine): the work of ``handprop reproduce`` per rule and
  hidden width (R = 24, one core), and ``compile_seconds``: the compiled engine's first
  call in a fresh process with an empty Numba cache (cold) and a filled one (warm).

Keys are suffixed by the engine (``online_step_us_numpy``); the unsuffixed ones hold
the fastest engine's figure.

In fresh processes, as real runs (:mod:`.fresh`): (c) LeNet batch 64, float32, 28x28
(60,000 images per epoch) and (d) ``handprop compare``'s CNN at batch 32 (its 10 seeds
in lockstep), handprop on 1 and 2 cores per engine (``fresh_engines``) and from other
source trees (``baselines``), PyTorch on 1 and 2 threads, in interleaved blocks:
samples/s, page faults per epoch, and paired ratios as min/median/max (``fresh``).

With PyTorch installed (a test and benchmark dependency, imported lazily: :mod:`.torch_rows`
and :mod:`handprop.integrations.torch_twins`), torch's twins of the networks start from
the same weights; (a) is timed on torch's default threads and on one. Targets (see
:mod:`.settings`): (a) <= 10 us and >= 60x torch, R = 15 <= 7 us per replica-step,
R = 24 <= 5 us, (b) >= 10x torch, (c) >= 2x torch per core and >= 2x 2-thread torch on
2 cores, (d) >= 2x a baseline's NumPy engine; :func:`format_bench` (:mod:`.report`)
says whether each is met. Nothing here asserts them: they are measurements of a machine.
"""

from __future__ import annotations

import time
from typing import Any

from .fresh import contenders, run_fresh
from .machine import load_average, machine_info
from .report import format_bench, in_process_ratios, targets
from .runs import bench_data, compile_seconds, measure_engines
from .settings import (
    ENGINES,
    FULL,
    QUICK,
    REPLICAS,
    REPRODUCE_REPLICAS,
    REPRODUCE_SHORT,
    SEED_LR,
    SEED_MOMENTUM,
    Sizes,
)

__all__ = ["compile_seconds", "format_bench", "machine_info", "run_bench"]

FRESH_ENGINES = ("numpy",)


def run_bench(quick: bool = False, with_torch: bool = True, repeats: int = 3,
              engines: tuple[str, ...] | list[str] = ENGINES,
              fresh_engines: tuple[str, ...] | list[str] = FRESH_ENGINES,
              baselines: tuple[str, ...] | list[str] = ()) -> dict:
    """Measure everything the module notes list. ``quick`` runs a few steps of each (a
    smoke test: the numbers are noisy; no compile times). ``engines``: the in-process
    rows; ``fresh_engines``: handprop's engines in the fresh-process rows;
    ``baselines``: other handprop source trees timed there too (NumPy engine). An
    engine that cannot run here (``compiled`` without Numba) is left out with the reason
    in ``engine_errors``.

    Returns a dict: the measurements and ratios, ``fresh`` (per workload: rows and
    ratios), ``targets`` (target, value, met), ``machine``, ``config`` (what was run)
    and ``runs`` (every in-process repeat's seconds).
    """
    started = time.perf_counter()
    sizes = QUICK if quick else FULL
    repeats = max(int(repeats), 1)
    torch_rows, torch_error = _torch_rows() if with_torch else (None, None)
    results: dict[str, Any] = {
        "quick": bool(quick), "repeats": repeats, "fresh_blocks": repeats,
        "machine": machine_info(torch_rows.torch if torch_rows is not None else None),
    }
    if torch_error:
        results["torch_error"] = torch_error
    runs: dict[str, list[float]] = {}
    data = bench_data()
    measure_engines(results, runs, engines, sizes, repeats, data)
    if torch_rows is not None:
        torch_rows.measure_torch(results, runs, sizes, repeats, data)
        in_process_ratios(results)
    order = contenders(fresh_engines, baselines, torch_rows is not None, sizes.malloc_defaults)
    results["fresh"] = run_fresh(sizes.fresh, order, repeats)
    results["config"] = _config_text(sizes, len(data["xd"]))
    results["targets"] = targets(results)
    results["runs"] = runs
    results["seconds_total"] = time.perf_counter() - started
    results["load_average_end"] = load_average()
    return results


def _torch_rows() -> tuple[Any, str | None]:
    """The PyTorch side of the benchmark, or None and why not."""
    try:  # torch only ever comes in through here (and the fresh processes)
        from . import torch_rows
    except ImportError as exc:
        return None, f"torch not importable: {exc}"
    return torch_rows, None


def _config_text(sizes: Sizes, digits: int) -> dict[str, str]:
    """What each measurement ran, in words."""
    return {
        "online": f"seed float64, digits 0/1 ({digits} images) x {sizes.online_epochs} "
                  f"epochs, batch 1, momentum lr {SEED_LR} alpha {SEED_MOMENTUM}, l2 sum",
        "seed_batch32": f"seed float64, digits 0/1 x {sizes.batch32_epochs} epochs, batch 32, "
                        f"momentum lr {SEED_LR} alpha {SEED_MOMENTUM}, l2 mean",
        "replicas": f"seed float64 as R = {', '.join(map(str, REPLICAS))} lockstep replicas, "
                    f"{sizes.replica_images} digits each, 1 online epoch, one core",
        "rules": f"compiled engine, R = {REPRODUCE_REPLICAS} lockstep replicas, half on "
                 f"{sizes.replica_images} digits, half on {REPRODUCE_SHORT}/350 of them "
                 "(frozen in each epoch's last steps), 1 online epoch, one core; ratio: "
                 "torch's online step over it",
        "compiled online": "the compiled engine runs 5x the online epochs (shorter runs "
                           "are dominated by timer noise)",
        "fresh": "each run a new process training from the start (nothing warmed up but a "
                 "compiled engine's kernels); samples/s over the whole run; 1 core: "
                 "threads=1 and BLAS on one thread (torch: 1 thread), 2 cores: threads=2 "
                 "(torch: 2 threads); page faults: minor faults of the process (getrusage) "
                 "in the last epoch",
    }
