"""handprop's in-process timings: the online step (a), the seed net's minibatch (b), the
lockstep replicas, the reproduce study's rules, and the compiled engine's compile times.

Each runs the real training loop (:func:`handprop.training.loop.fit`), best of
``repeats`` runs after a short warm-up: these are small steps, where a fresh process
would measure its start-up, not the step.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from typing import Any

import numpy as np

from ...core.network import Network
from ...core.presets import seed_as_run, seed_net
from ...rules import make_rule
from ...training.data import load_digits
from ...training.loop import History, TrainConfig, fit, loss_for, targets_for
from ...training.optim import make_optimizer
from .settings import (
    REPLICAS,
    REPRODUCE_REPLICAS,
    REPRODUCE_RUNS,
    REPRODUCE_SHORT,
    SEED_LR,
    SEED_MOMENTUM,
    THREADS,
    Sizes,
)


def bench_data() -> dict[str, Any]:
    """The digits 0/1 training set and a factory of fresh seed nets."""
    digits = load_digits(seed=0)

    def make_seed() -> Network:
        return seed_net().init(0)

    return {"xd": digits.x_train, "yd": digits.y_train, "make_seed": make_seed}


def samples_done(steps: int, count: int, batch_size: int) -> int:
    """How many samples ``steps`` steps of fixed-order batches over ``count`` covered."""
    per_epoch = math.ceil(count / batch_size)
    full, rest = divmod(steps, per_epoch)
    return full * count + rest * batch_size


def fit_best(
    make_net: Any, x: np.ndarray, labels: np.ndarray, config: TrainConfig, repeats: int,
    warmup: int, engine: str = "numpy", threads: int = THREADS,
) -> tuple[History, list[float]]:
    """Best (shortest) of ``repeats`` fresh-net runs of ``fit``, after a short warm-up."""
    axis = 1 if x.ndim == 5 else 0
    if warmup:
        warm = TrainConfig(**{**config.to_dict(), "epochs": 1})
        part = (slice(None), slice(warmup)) if axis else slice(warmup)
        fit(make_net(), x[part], labels[part], warm, threads=threads, engine=engine)
    best, runs = None, []
    for _ in range(max(int(repeats), 1)):
        history = fit(make_net(), x, labels, config, threads=threads, engine=engine)
        runs.append(history.seconds)
        if best is None or history.seconds < best.seconds:
            best = history
    return best, runs


def raw_online_us(
    make_net: Any, x: np.ndarray, labels: np.ndarray, epochs: int, repeats: int
) -> float:
    """The bare online loop, no bookkeeping: microseconds per step, best of ``repeats``."""
    best = math.inf
    for _ in range(max(int(repeats), 1)):
        net: Network = make_net()
        config = TrainConfig(epochs=epochs, batch_size=1)
        _, loss_fn = loss_for(net, config)
        y = targets_for(net, labels, "l2", net.dtype)
        xs = [x[i : i + 1].astype(net.dtype) for i in range(len(x))]
        ys = [y[i : i + 1] for i in range(len(y))]
        optimizer = make_optimizer("momentum", SEED_LR, SEED_MOMENTUM)
        forward, backward, update = net._forward, net.backward_flat, optimizer.step
        start = time.perf_counter()
        with np.errstate(all="ignore"):
            for _ in range(epochs):
                for xi, yi in zip(xs, ys):  # noqa: B905
                    out, tape = forward(xi)
                    _, out_grad = loss_fn(out, yi)
                    update(net.flat, backward(tape, out_grad))
        best = min(best, (time.perf_counter() - start) / (epochs * len(xs)))
    return best * 1e6


def compile_seconds(cache_dir: str) -> float:
    """Seconds for the compiled engine's first epoch (seed net, float64) in a fresh
    process whose Numba cache is ``cache_dir`` (empty: a cold compile; filled: warm)."""
    code = ("import time; start = time.perf_counter(); "
            "from handprop.integrations.benchmark.runs import first_compiled_epoch; "
            "first_compiled_epoch(); print(time.perf_counter() - start)")
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def first_compiled_epoch() -> None:
    """One tiny epoch on the compiled engine (what :func:`compile_seconds` times)."""
    net = seed_net().init(0)
    x = np.zeros((2, 1, 8, 8))
    fit(net, x, np.array([0, 1]), TrainConfig(epochs=1), engine="compiled")


def _online_config(epochs: int, batch_size: int = 1) -> TrainConfig:
    """The article's protocol (L2 summed online, averaged over a minibatch)."""
    return TrainConfig(epochs=epochs, batch_size=batch_size, optimizer="momentum", lr=SEED_LR,
                       momentum=SEED_MOMENTUM, loss="l2",
                       reduction="sum" if batch_size == 1 else "mean")


def replica_step_us(engine: str, xd: np.ndarray, yd: np.ndarray, replicas: int,
                    repeats: int) -> float:
    """Microseconds per replica-step: the seed net as ``replicas`` lockstep replicas
    (seeds 0..R-1), one online epoch, on one core (BLAS held to one thread)."""
    from threadpoolctl import threadpool_limits

    x = np.broadcast_to(xd, (replicas, *xd.shape)).copy()
    y = np.broadcast_to(yd, (replicas, *yd.shape)).copy()

    def make() -> Network:
        return seed_net().init(0, replicas=list(range(replicas)))

    with threadpool_limits(1):  # one core: NumPy's BLAS would otherwise take both
        history, _ = fit_best(make, x, y, _online_config(1), repeats, warmup=5, engine=engine,
                              threads=1)
    return history.seconds / (history.steps * replicas) * 1e6


def rule_step_us(preset: str, rule: str, fc: tuple[int, int], xd: np.ndarray,
                 yd: np.ndarray, repeats: int) -> float:
    """Microseconds per replica-step of the compiled engine on one core: ``preset`` at
    widths ``fc`` trained with ``rule`` as the reproduce study does (R = 24, half of
    the replicas on 288/350 of the images, so frozen in each epoch's last steps)."""
    replicas, count = REPRODUCE_REPLICAS, len(xd)
    short = min(count, round(count * REPRODUCE_SHORT / 350))
    counts = [count if r % 2 == 0 else short for r in range(replicas)]
    x = np.broadcast_to(xd, (replicas, *xd.shape)).copy()
    y = np.broadcast_to(yd, (replicas, *yd.shape)).copy()
    build = seed_as_run if preset == "seed-as-run" else seed_net
    best = math.inf
    for attempt in range(max(int(repeats), 1) + 1):  # the first run warms up
        net = build(fc).init(0, replicas=list(range(replicas)))
        bound = None if rule == "exact" else make_rule(rule, net, list(range(replicas)))
        history = fit(net, x, y, _online_config(1), rule=bound, counts=counts,
                      engine="compiled")
        if attempt:
            best = min(best, history.seconds / (history.steps * replicas) * 1e6)
    return best


def reproduce_runs(sizes: Sizes, repeats: int, xd: np.ndarray, yd: np.ndarray
                   ) -> dict[str, dict[str, float]]:
    """:func:`rule_step_us` for every (preset, rule) of the study and every width."""
    from threadpoolctl import threadpool_limits

    xs, ys = xd[: sizes.replica_images], yd[: sizes.replica_images]
    with threadpool_limits(1):
        return {f"{preset} {rule}": {f"{a}x{b}": rule_step_us(preset, rule, (a, b), xs, ys,
                                                              repeats)
                                     for a, b in sizes.widths}
                for preset, rule in REPRODUCE_RUNS}


def engine_runs(engine: str, sizes: Sizes, repeats: int, data: dict[str, Any],
                runs: dict[str, list[float]]) -> dict[str, Any]:
    """(a), (b) and the replica timings on one engine."""
    xd, yd = data["xd"], data["yd"]
    # the compiled engine runs 5x the online epochs: shorter runs are timer noise
    epochs = sizes.online_epochs if engine == "numpy" else 5 * sizes.online_epochs
    history, runs[f"online_{engine}"] = fit_best(data["make_seed"], xd, yd,
                                                 _online_config(epochs), repeats, warmup=50,
                                                 engine=engine)
    out: dict[str, Any] = {"online_step_us": history.seconds / history.steps * 1e6}
    out["replica_step_us"] = {
        str(r): replica_step_us(engine, xd[: sizes.replica_images],
                                yd[: sizes.replica_images], r, repeats)
        for r in REPLICAS
    }
    history, runs[f"seed_batch32_{engine}"] = fit_best(
        data["make_seed"], xd, yd, _online_config(sizes.batch32_epochs, 32), repeats,
        warmup=64, engine=engine)
    out["seed_batch32_samples_per_s"] = (samples_done(history.steps, len(xd), 32)
                                         / history.seconds)
    return out


def measure_engines(results: dict[str, Any], runs: dict[str, list[float]],
                    engines: tuple[str, ...] | list[str], sizes: Sizes, repeats: int,
                    data: dict[str, Any]) -> None:
    """Every engine's in-process figures (suffixed by its name), the compile times, the
    per-rule table, and the fastest engine's unsuffixed figures."""
    ran, errors = [], {}
    for engine in engines:
        if engine == "compiled":
            from ...training.compiled import unsupported_reason

            reason = unsupported_reason(data["make_seed"](), None, make_optimizer("sgd", 0.1),
                                        "l2", "sum", 1)
            if reason:
                errors[engine] = reason
                continue
            if sizes.compile_times:
                with tempfile.TemporaryDirectory() as cache:
                    results["compile_seconds"] = {"cold": compile_seconds(cache),
                                                  "warm": compile_seconds(cache)}
        for key, value in engine_runs(engine, sizes, repeats, data, runs).items():
            results[f"{key}_{engine}"] = value
        if engine == "compiled":
            results["rule_step_us"] = reproduce_runs(sizes, repeats, data["xd"], data["yd"])
        ran.append(engine)
    if errors:
        results["engine_errors"] = errors
    results["engines"] = ran
    _fastest(results, ran)
    results["online_step_us_raw"] = raw_online_us(
        data["make_seed"], data["xd"], data["yd"], sizes.online_epochs, repeats
    )


def _fastest(results: dict[str, Any], engines: list[str]) -> None:
    """The unsuffixed keys: the fastest engine's figure, and which engine that was."""
    results["fastest"] = {}
    for key, better in (("online_step_us", min), ("seed_batch32_samples_per_s", max)):
        measured = [e for e in engines if f"{key}_{e}" in results]
        if not measured:
            continue
        engine = better(measured, key=lambda e, k=key: results[f"{k}_{e}"])
        results[key] = results[f"{key}_{engine}"]
        results["fastest"][key] = engine
