"""The performance benchmark: handprop's training speed, and PyTorch's on the same work.

Three measurements, each through the real training loop (:func:`handprop.training.loop.fit`),
best of ``repeats`` runs:

(a) ``online_step_us``: microseconds per online SGD step of the article's ``seed`` net
    (float64, batch 1, momentum lr 0.09 alpha 0.0009, L2 loss summed, raw digits 0/1
    pixels), ``history.seconds / history.steps``. ``online_step_us_raw`` times the bare
    loop (forward, loss, ``backward_flat``, ``optimizer.step``) for comparison: the
    difference is what ``fit`` adds per step.
(b) ``seed_batch32_samples_per_s``: minibatch-32 training of ``seed`` (float64, same
    optimizer, L2 loss averaged over the batch).
(c) ``lenet_batch64_samples_per_s``: minibatch-64 training of ``lenet()`` in float32 on
    synthetic 28x28 images (softmax cross-entropy, momentum lr 0.01 alpha 0.9).

Each is measured per training engine (``engines``: ``numpy``, the reference, and
``compiled``, Numba), as ``<key>_<engine>``; the unsuffixed keys hold the fastest
engine's figure. Also per engine: ``replica_step_us_<engine>``, microseconds per
replica-step of the seed net trained as R = 1, 15, 24 and 120 lockstep replicas (one
core), and ``compile_seconds``: the compiled engine's first call in a fresh process
with an empty Numba cache (cold) and with the cache on disk (warm).

``rule_step_us`` (compiled engine): the work of ``handprop reproduce``, microseconds per
replica-step at R = 24 lockstep replicas (half of them on 288 of the 350 images, so
frozen in each epoch's last steps, as the study's held-out runs are) for each of its
rules on the seed net and on the net as the article's code ran it (``seed-as-run``), at
the three hidden widths the study trains; ``ratio_rule_step``: PyTorch's online step
(same run) over it.

With PyTorch installed (a benchmark-only dependency, imported lazily), the same three
with twins of the networks (:mod:`.torch_twins`) started from the same weights
and trained by a plain torch loop, in the same run, and the ratios (> 1: handprop is
faster); the online step also with torch held to one thread (``torch_1thread_*``: on a
busy machine torch's default two threads wait on each other at every small op).
Targets: (a) <= 10 us and >= 60x torch, R = 15 <= 7 us per replica-step, R = 24 <= 5 us
(the reproduce study's budget), (b) >= 10x torch, (c) >= 1x torch; :func:`format_bench`
says whether each is met.
Nothing here asserts them: they are measurements of a machine.

    handprop bench
"""

from __future__ import annotations

import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...core.network import Network
from ...core.presets import lenet, seed_as_run, seed_net
from ...rules import make_rule
from ...training.data import load_digits
from ...training.loop import History, TrainConfig, fit, loss_for, targets_for
from ...training.optim import make_optimizer

# The article's momentum optimizer.
SEED_LR, SEED_MOMENTUM = 0.09, 0.0009
LENET_LR, LENET_MOMENTUM = 0.01, 0.9
LENET_CLASSES = 10

TARGET_ONLINE_US = 10.0
TARGET_ONLINE_RATIO = 60.0
TARGET_REPLICA15_US = 7.0
TARGET_REPLICA24_US = 5.0
TARGET_SEED_BATCH32_RATIO = 10.0
TARGET_LENET_BATCH64_RATIO = 1.0
ENGINES = ("numpy", "compiled")
REPLICAS = (1, 15, 24, 120)
# The reproduce study's work: (preset, rule) at its hidden widths, R = 24 replicas of
# which half see 288 of the 350 images.
REPRODUCE_RUNS = (("seed", "exact"), ("seed", "seed-original"), ("seed", "seed-broken"),
                  ("seed", "broken-upstream"), ("seed", "broken-text"),
                  ("seed-as-run", "seed-original"), ("seed-as-run", "seed-broken"))
REPRODUCE_WIDTHS = ((18, 20), (28, 36), (48, 56))
REPRODUCE_REPLICAS, REPRODUCE_SHORT = 24, 288
# Large exact-rule batches may use a second thread (results do not depend on it).
THREADS = 2
# Repeats whose slowest/fastest ratio exceeds this are flagged as measured on a busy machine.
NOISY_SPREAD = 1.5
LABEL = 56  # width of format_bench's first column


@dataclass(frozen=True)
class _Sizes:
    online_epochs: int  # passes over the 350 digits training images, batch 1
    batch32_epochs: int
    lenet_images: int
    lenet_epochs: int
    replica_images: int  # images per replica in the lockstep-replica timings (1 epoch)
    compile_times: bool  # measure cold and warm compile times (fresh processes)
    compiled_lenet: bool  # LeNet on the compiled engine (its float32 kernels: a compile)
    widths: tuple[tuple[int, int], ...]  # hidden widths of the per-rule timings


FULL = _Sizes(online_epochs=20, batch32_epochs=100, lenet_images=2048, lenet_epochs=3,
              replica_images=350, compile_times=True, compiled_lenet=True,
              widths=REPRODUCE_WIDTHS)
QUICK = _Sizes(online_epochs=1, batch32_epochs=2, lenet_images=256, lenet_epochs=1,
               replica_images=20, compile_times=False, compiled_lenet=False,
               widths=((28, 36),))


def machine_info(torch_module: Any = None) -> dict[str, Any]:
    """Where the numbers come from: platform, CPUs, NumPy (and its BLAS), torch."""
    info: dict[str, Any] = {
        "platform": platform.platform(),
        "machine": platform.machine(),
        "processor": platform.processor() or None,
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "numpy": np.__version__,
        "blas": None,
        "torch": None,
        "torch_threads": None,
    }
    if hasattr(os, "sched_getaffinity"):
        info["cpus_usable"] = len(os.sched_getaffinity(0))
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    info["cpu_model"] = line.partition(":")[2].strip()
                    break
    except OSError:
        pass
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        info["blas"] = " ".join(str(blas.get(k, "")) for k in ("name", "version")).strip()
    except Exception:  # older NumPy or an unusual build: not worth failing
        pass
    if torch_module is not None:
        info["torch"] = torch_module.__version__
        info["torch_threads"] = torch_module.get_num_threads()
    return info


def _samples(steps: int, count: int, batch_size: int) -> int:
    """How many samples ``steps`` steps of fixed-order batches over ``count`` covered."""
    per_epoch = math.ceil(count / batch_size)
    full, rest = divmod(steps, per_epoch)
    return full * count + rest * batch_size


def _fit_best(
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


def _raw_online_us(
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


def lenet_data(count: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``count`` random float32 images (N, 1, 28, 28) in [0, 1) and random labels 0-9."""
    rng = np.random.default_rng(seed)
    x = rng.random((count, 1, 28, 28), dtype=np.float32)
    return x, rng.integers(0, LENET_CLASSES, count)


def compile_seconds(cache_dir: str) -> float:
    """Seconds for the compiled engine's first epoch (seed net, float64) in a fresh
    process whose Numba cache is ``cache_dir`` (empty: a cold compile; filled: warm)."""
    code = ("import time; start = time.perf_counter(); "
            "from handprop.integrations.benchmark import _first_compiled_epoch; "
            "_first_compiled_epoch(); print(time.perf_counter() - start)")
    env = {**os.environ, "NUMBA_CACHE_DIR": cache_dir}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, check=True)
    return float(done.stdout.strip().splitlines()[-1])


def _first_compiled_epoch() -> None:
    """One tiny epoch on the compiled engine (what :func:`compile_seconds` times)."""
    net = seed_net().init(0)
    x = np.zeros((2, 1, 8, 8))
    fit(net, x, np.array([0, 1]), TrainConfig(epochs=1), engine="compiled")


def _replica_step_us(engine: str, xd: np.ndarray, yd: np.ndarray, replicas: int,
                     repeats: int) -> float:
    """Microseconds per replica-step: the seed net as ``replicas`` lockstep replicas
    (seeds 0..R-1), one online epoch, on one core (BLAS held to one thread)."""
    x = np.broadcast_to(xd, (replicas, *xd.shape)).copy()
    y = np.broadcast_to(yd, (replicas, *yd.shape)).copy()
    config = TrainConfig(epochs=1, batch_size=1, optimizer="momentum", lr=SEED_LR,
                         momentum=SEED_MOMENTUM, loss="l2", reduction="sum")

    def make() -> Network:
        return seed_net().init(0, replicas=list(range(replicas)))

    from threadpoolctl import threadpool_limits

    with threadpool_limits(1):  # one core: NumPy's BLAS would otherwise take both
        history, _ = _fit_best(make, x, y, config, repeats, warmup=5, engine=engine,
                               threads=1)
    return history.seconds / (history.steps * replicas) * 1e6


def _rule_step_us(preset: str, rule: str, fc: tuple[int, int], xd: np.ndarray,
                  yd: np.ndarray, repeats: int) -> float:
    """Microseconds per replica-step of the compiled engine on one core: ``preset`` at
    widths ``fc`` trained with ``rule`` as the reproduce study does (see the module notes)."""
    replicas, count = REPRODUCE_REPLICAS, len(xd)
    short = min(count, round(count * REPRODUCE_SHORT / 350))
    counts = [count if r % 2 == 0 else short for r in range(replicas)]
    x = np.broadcast_to(xd, (replicas, *xd.shape)).copy()
    y = np.broadcast_to(yd, (replicas, *yd.shape)).copy()
    config = TrainConfig(epochs=1, batch_size=1, optimizer="momentum", lr=SEED_LR,
                         momentum=SEED_MOMENTUM, loss="l2", reduction="sum")
    build = seed_as_run if preset == "seed-as-run" else seed_net
    best = math.inf
    for attempt in range(max(int(repeats), 1) + 1):  # the first run warms up
        net = build(fc).init(0, replicas=list(range(replicas)))
        bound = None if rule == "exact" else make_rule(rule, net, list(range(replicas)))
        history = fit(net, x, y, config, rule=bound, counts=counts, engine="compiled")
        if attempt:
            best = min(best, history.seconds / (history.steps * replicas) * 1e6)
    return best


def _reproduce_runs(sizes: _Sizes, repeats: int, xd: np.ndarray, yd: np.ndarray
                    ) -> dict[str, dict[str, float]]:
    """:func:`_rule_step_us` for every (preset, rule) of the study and every width."""
    from threadpoolctl import threadpool_limits

    out: dict[str, dict[str, float]] = {}
    with threadpool_limits(1):
        for preset, rule in REPRODUCE_RUNS:
            out[f"{preset} {rule}"] = {
                f"{a}x{b}": _rule_step_us(preset, rule, (a, b), xd[: sizes.replica_images],
                                          yd[: sizes.replica_images], repeats)
                for a, b in sizes.widths}
    return out


def _engine_runs(engine: str, sizes: _Sizes, repeats: int, data: dict[str, Any],
                 runs: dict[str, list[float]]) -> dict[str, Any]:
    """(a), (b), (c) and the replica timings on one engine."""
    xd, yd, xl, yl = data["xd"], data["yd"], data["xl"], data["yl"]
    out: dict[str, Any] = {}
    online = TrainConfig(epochs=sizes.online_epochs, batch_size=1, optimizer="momentum",
                         lr=SEED_LR, momentum=SEED_MOMENTUM, loss="l2", reduction="sum")
    epochs = sizes.online_epochs if engine == "numpy" else 5 * sizes.online_epochs
    online = TrainConfig(**{**online.to_dict(), "epochs": epochs})  # short runs are noisy
    history, runs[f"online_{engine}"] = _fit_best(data["make_seed"], xd, yd, online, repeats,
                                                  warmup=50, engine=engine)
    out["online_step_us"] = history.seconds / history.steps * 1e6
    out["replica_step_us"] = {
        str(r): _replica_step_us(engine, xd[: sizes.replica_images],
                                 yd[: sizes.replica_images], r, repeats)
        for r in REPLICAS
    }
    batch32 = TrainConfig(epochs=sizes.batch32_epochs, batch_size=32, optimizer="momentum",
                          lr=SEED_LR, momentum=SEED_MOMENTUM, loss="l2", reduction="mean")
    history, runs[f"seed_batch32_{engine}"] = _fit_best(data["make_seed"], xd, yd, batch32,
                                                        repeats, warmup=64, engine=engine)
    out["seed_batch32_samples_per_s"] = _samples(history.steps, len(xd), 32) / history.seconds
    if engine == "compiled" and not sizes.compiled_lenet:
        return out
    lenet64 = TrainConfig(epochs=sizes.lenet_epochs, batch_size=64, optimizer="momentum",
                          lr=LENET_LR, momentum=LENET_MOMENTUM, dtype="float32",
                          loss="softmax_ce", reduction="mean")
    history, runs[f"lenet_batch64_{engine}"] = _fit_best(data["make_lenet"], xl, yl, lenet64,
                                                         repeats, warmup=128, engine=engine)
    out["lenet_batch64_samples_per_s"] = _samples(history.steps, len(xl), 64) / history.seconds
    return out


def _fastest(results: dict[str, Any], engines: list[str]) -> None:
    """The unsuffixed keys: the fastest engine's figure, and which engine that was."""
    results["fastest"] = {}
    for key, better in (("online_step_us", min), ("seed_batch32_samples_per_s", max),
                        ("lenet_batch64_samples_per_s", max)):
        measured = [e for e in engines if f"{key}_{e}" in results]
        engine = better(measured, key=lambda e, k=key: results[f"{k}_{e}"])
        results[key] = results[f"{key}_{engine}"]
        results["fastest"][key] = engine


def run_bench(quick: bool = False, with_torch: bool = True, repeats: int = 3,
              engines: tuple[str, ...] | list[str] = ENGINES) -> dict:
    """Measure (a), (b), (c) (see the module docstring) per engine for handprop and, if
    available, PyTorch. ``quick`` runs a few steps of each (a smoke test: the numbers
    are noisy; compile times and LeNet on the compiled engine, which would compile its
    float32 kernels, are left out). An engine that cannot run here
    (``compiled`` without Numba) is left out with the reason in ``engine_errors``.

    Returns a dict: the measurements and ratios (``online_step_us``, ...; per engine
    ``online_step_us_numpy``, ...), ``targets`` (target, value, met), ``machine``,
    ``config`` (what was run) and ``runs`` (every repeat's seconds).
    """
    started = time.perf_counter()
    sizes = QUICK if quick else FULL
    repeats = max(int(repeats), 1)
    twins, torch_error = _torch_twins() if with_torch else (None, None)
    results: dict[str, Any] = {
        "quick": bool(quick),
        "repeats": repeats,
        "machine": machine_info(twins.torch if twins is not None else None),
    }
    if torch_error:
        results["torch_error"] = torch_error
    runs: dict[str, list[float]] = {}
    data = _bench_data(sizes)
    _measure_engines(results, runs, engines, sizes, repeats, data)
    results["config"] = _config_text(sizes, len(data["xd"]))
    if twins is not None:
        _measure_torch(twins, results, runs, sizes, repeats, data)
        _ratios(results)
    results["targets"] = _targets(results)
    results["runs"] = runs
    results["seconds_total"] = time.perf_counter() - started
    return results


def _torch_twins() -> tuple[Any, str | None]:
    """The PyTorch twins module, or None and why not."""
    try:  # torch only ever comes in through the benchmark's twins module
        from . import torch_twins
    except ImportError as exc:
        return None, f"torch not importable: {exc}"
    return torch_twins, None


def _bench_data(sizes: Any) -> dict[str, Any]:
    """The digits, LeNet's images and the two networks' factories."""
    digits = load_digits(seed=0)
    xl, yl = lenet_data(sizes.lenet_images)

    def make_seed() -> Network:
        return seed_net().init(0)

    def make_lenet() -> Network:
        return lenet().init(0, dtype="float32")

    return {"xd": digits.x_train, "yd": digits.y_train, "xl": xl, "yl": yl,
            "make_seed": make_seed, "make_lenet": make_lenet}


def _measure_engines(results: dict[str, Any], runs: dict[str, list[float]],
                     engines: tuple[str, ...] | list[str], sizes: Any, repeats: int,
                     data: dict[str, Any]) -> None:
    """Every engine's figures (suffixed by its name), the compile times, the per-rule
    table, and the fastest engine's unsuffixed figures."""
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
        for key, value in _engine_runs(engine, sizes, repeats, data, runs).items():
            results[f"{key}_{engine}"] = value
        if engine == "compiled":
            results["rule_step_us"] = _reproduce_runs(sizes, repeats, data["xd"], data["yd"])
        ran.append(engine)
    if errors:
        results["engine_errors"] = errors
    results["engines"] = ran
    _fastest(results, ran)
    results["online_step_us_raw"] = _raw_online_us(
        data["make_seed"], data["xd"], data["yd"], sizes.online_epochs, repeats
    )


def _config_text(sizes: Any, digits: int) -> dict[str, str]:
    """What each measurement ran, in words."""
    return {
        "online": f"seed float64, digits 0/1 ({digits} images) x {sizes.online_epochs} "
                  f"epochs, batch 1, momentum lr {SEED_LR} alpha {SEED_MOMENTUM}, l2 sum",
        "seed_batch32": f"seed float64, digits 0/1 x {sizes.batch32_epochs} epochs, batch 32, "
                        f"momentum lr {SEED_LR} alpha {SEED_MOMENTUM}, l2 mean",
        "lenet_batch64": f"lenet float32, {sizes.lenet_images} random 1x28x28 images x "
                         f"{sizes.lenet_epochs} epochs, batch 64, momentum lr {LENET_LR} "
                         f"alpha {LENET_MOMENTUM}, softmax_ce mean",
        "replicas": f"seed float64 as R = {', '.join(map(str, REPLICAS))} lockstep replicas, "
                    f"{sizes.replica_images} digits each, 1 online epoch, one core",
        "rules": f"compiled engine, R = {REPRODUCE_REPLICAS} lockstep replicas, half on "
                 f"{sizes.replica_images} digits, half on {REPRODUCE_SHORT}/350 of them "
                 "(frozen in each epoch's last steps), 1 online epoch, one core; ratio: "
                 "torch's online step over it",
        "compiled online": "the compiled engine runs 5x the online epochs (shorter runs "
                           "are dominated by timer noise)",
    }


def _measure_torch(twins: Any, results: dict[str, Any], runs: dict[str, list[float]],
                   sizes: Any, repeats: int, data: dict[str, Any]) -> None:
    """The PyTorch twins of (a), (b) and (c), measured in this run."""
    xd, yd = data["xd"], data["yd"]
    seed_params = data["make_seed"]().get_params()
    online = {"epochs": sizes.online_epochs, "params": seed_params, "lr": SEED_LR,
              "momentum": SEED_MOMENTUM, "repeats": repeats}
    timing = twins.time_torch_online(xd, yd, **online)
    results["torch_online_step_us"], runs["torch_online"] = timing.step_us, timing.runs
    # One intra-op thread too: on a busy machine torch's default two threads wait on
    # each other at every small op, which a single thread does not.
    threads = twins.torch.get_num_threads()
    twins.torch.set_num_threads(1)
    try:
        timing = twins.time_torch_online(xd, yd, **online)
    finally:
        twins.torch.set_num_threads(threads)
    results["torch_1thread_online_step_us"] = timing.step_us
    runs["torch_1thread_online"] = timing.runs
    timing = twins.time_torch_seed_batch(
        xd, yd, epochs=sizes.batch32_epochs, batch_size=32, reduction="mean",
        params=seed_params, lr=SEED_LR, momentum=SEED_MOMENTUM, repeats=repeats,
    )
    results["torch_seed_batch32_samples_per_s"] = timing.samples_per_s
    runs["torch_seed_batch32"] = timing.runs
    timing = twins.time_torch_lenet_batch(
        data["xl"], data["yl"], epochs=sizes.lenet_epochs, batch_size=64,
        params=data["make_lenet"]().get_params(), lr=LENET_LR, momentum=LENET_MOMENTUM,
        repeats=repeats,
    )
    results["torch_lenet_batch64_samples_per_s"] = timing.samples_per_s
    runs["torch_lenet_batch64"] = timing.runs


def _ratios(results: dict[str, Any]) -> None:
    """torch over handprop for times, handprop over torch for rates (> 1: we are faster)."""
    if "rule_step_us" in results:
        results["ratio_rule_step"] = {
            name: {width: results["torch_online_step_us"] / us for width, us in row.items()}
            for name, row in results["rule_step_us"].items()}
    for suffix in ["", *(f"_{e}" for e in results["engines"])]:
        results[f"ratio_online{suffix}"] = (
            results["torch_online_step_us"] / results[f"online_step_us{suffix}"])
        results[f"ratio_online_torch_1thread{suffix}"] = (
            results["torch_1thread_online_step_us"] / results[f"online_step_us{suffix}"])
        results[f"ratio_seed_batch32{suffix}"] = (
            results[f"seed_batch32_samples_per_s{suffix}"]
            / results["torch_seed_batch32_samples_per_s"])
        if f"lenet_batch64_samples_per_s{suffix}" in results:
            results[f"ratio_lenet_batch64{suffix}"] = (
                results[f"lenet_batch64_samples_per_s{suffix}"]
                / results["torch_lenet_batch64_samples_per_s"])


def _target(text: str, value: float | None, met: bool | None) -> dict[str, Any]:
    return {"target": text, "value": value, "met": None if value is None else bool(met)}


def _targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with its value (the fastest engine's) and whether it is met."""
    online = results["online_step_us"]
    r15, r24 = (min((results[f"replica_step_us_{e}"][r] for e in results["engines"]),
                    default=None) for r in ("15", "24"))
    ratio_a, ratio_b, ratio_c = (results.get(k) for k in (
        "ratio_online", "ratio_seed_batch32", "ratio_lenet_batch64"))
    return {
        "online_step_us": _target(f"<= {TARGET_ONLINE_US:g} us", online,
                                  online <= TARGET_ONLINE_US),
        "ratio_online": _target(f">= {TARGET_ONLINE_RATIO:g}x torch", ratio_a,
                                ratio_a is not None and ratio_a >= TARGET_ONLINE_RATIO),
        "replica_step_us_r15": _target(f"<= {TARGET_REPLICA15_US:g} us", r15,
                                       r15 is not None and r15 <= TARGET_REPLICA15_US),
        "replica_step_us_r24": _target(f"<= {TARGET_REPLICA24_US:g} us", r24,
                                       r24 is not None and r24 <= TARGET_REPLICA24_US),
        "ratio_seed_batch32": _target(f">= {TARGET_SEED_BATCH32_RATIO:g}x torch", ratio_b,
                                      ratio_b is not None
                                      and ratio_b >= TARGET_SEED_BATCH32_RATIO),
        "ratio_lenet_batch64": _target(f">= {TARGET_LENET_BATCH64_RATIO:g}x torch", ratio_c,
                                       ratio_c is not None
                                       and ratio_c >= TARGET_LENET_BATCH64_RATIO),
    }


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if value < 1000 else f"{value:,.0f}"


def _met(target: dict[str, Any]) -> str:
    return {True: "yes", False: "NO", None: "n/a"}[target["met"]]


def _row(label: str, ours: float | None, theirs: float | None, ratio: float | None,
         targets: list[dict[str, Any]]) -> str:
    ratio_text = "-" if ratio is None else f"{ratio:.2f}x"
    target_text = ", ".join(t["target"] for t in targets)
    met = "/".join(_met(t) for t in targets)
    return (f"{label:<{LABEL}}{_num(ours):>11}{_num(theirs):>11}{ratio_text:>10}  "
            f"{target_text:<24}{met}")


def _rule_lines(results: dict) -> list[str]:
    """The per-rule table: us per replica-step at each width (and torch's ratio)."""
    table, ratios = results.get("rule_step_us"), results.get("ratio_rule_step", {})
    if not table:
        return []
    widths = list(next(iter(table.values())))
    lines = ["", f"{'us per replica-step, R=24, compiled (x torch online)':<{LABEL}}"
             + "".join(f"{w:>16}" for w in widths)]
    for name, row in table.items():
        cells = []
        for width in widths:
            ratio = ratios.get(name, {}).get(width)
            cells.append(f"{_num(row[width], 2)}" + (f" ({ratio:.0f}x)" if ratio else ""))
        lines.append(f"{'    ' + name:<{LABEL}}" + "".join(f"{c:>16}" for c in cells))
    return lines


def format_bench(results: dict) -> str:
    """A readable table of :func:`run_bench`'s results, with the targets and whether each
    is met."""
    lines = _header_lines(results) + _main_rows(results) + _replica_lines(results)
    lines += _rule_lines(results) + _footer_lines(results)
    return "\n".join(lines)


def _header_lines(results: dict) -> list[str]:
    machine = results.get("machine", {})
    cpu = machine.get("cpu_model") or machine.get("processor") or machine.get("machine")
    torch_text = (
        f"torch {machine['torch']} ({machine['torch_threads']} threads)"
        if machine.get("torch") else results.get("torch_error", "torch not run")
    )
    return [
        "handprop benchmark" + ("  [quick: smoke-test sizes, numbers are noisy]"
                                if results.get("quick") else ""),
        f"machine: {machine.get('platform')}, {cpu}, {machine.get('cpu_count')} CPUs",
        f"numpy {machine.get('numpy')} (BLAS: {machine.get('blas') or 'unknown'}), {torch_text}",
        f"best of {results.get('repeats')} runs each; ratio > 1 means handprop is faster",
        "",
        f"{'measurement':<{LABEL}}{'handprop':>11}{'torch':>11}{'ratio':>10}  "
        f"{'target':<24}met",
    ]


_MAIN_ROWS = [
    ("(a) seed online step, batch 1, f64 (us/step)", "online_step_us",
     "torch_online_step_us", "ratio_online", ("online_step_us", "ratio_online")),
    ("(b) seed batch-32, f64 (samples/s)", "seed_batch32_samples_per_s",
     "torch_seed_batch32_samples_per_s", "ratio_seed_batch32", ("ratio_seed_batch32",)),
    ("(c) lenet batch-64, f32 (samples/s)", "lenet_batch64_samples_per_s",
     "torch_lenet_batch64_samples_per_s", "ratio_lenet_batch64", ("ratio_lenet_batch64",)),
]


def _main_rows(results: dict) -> list[str]:
    """(a), (b), (c): the fastest engine against torch, then each engine."""
    targets, engines, lines = results.get("targets", {}), results.get("engines", []), []
    for label, ours, theirs, ratio, target_keys in _MAIN_ROWS:
        fastest = results.get("fastest", {}).get(ours)
        lines.append(_row(label + (f" [{fastest}]" if fastest else ""), results.get(ours),
                          results.get(theirs), results.get(ratio),
                          [targets.get(k, {"target": "", "met": None}) for k in target_keys]))
        for engine in engines:
            lines.append(_row(f"    {engine} engine", results.get(f"{ours}_{engine}"), None,
                              results.get(f"{ratio}_{engine}"), []))
        if ours == "online_step_us" and "torch_1thread_online_step_us" in results:
            lines.append(_row("    torch on one thread (fastest engine)", None,
                              results["torch_1thread_online_step_us"],
                              results.get("ratio_online_torch_1thread"), []))
        if ours == "online_step_us":
            lines.append(
                f"{'    numpy bare loop, no fit bookkeeping':<{LABEL}}"
                f"{_num(results.get('online_step_us_raw')):>11}"
            )
    return lines


def _replica_lines(results: dict) -> list[str]:
    """us per replica-step at each R, per engine, with the R=15 and R=24 targets."""
    engines, targets = results.get("engines", []), results.get("targets", {})
    if not engines:
        return []
    lines = ["", f"{'us per replica-step, seed, one core':<{LABEL}}"
             + "".join(f"{'R=' + r:>9}" for r in map(str, REPLICAS))]
    for engine in engines:
        per = results.get(f"replica_step_us_{engine}", {})
        lines.append(f"{'    ' + engine + ' engine':<{LABEL}}"
                     + "".join(f"{_num(per.get(str(r)), 2):>9}" for r in REPLICAS))
    for r in ("15", "24"):
        target = targets.get(f"replica_step_us_r{r}")
        if target:
            lines.append(f"{'    target at R=' + r:<{LABEL}}{target['target']:>9}  met: "
                         f"{_met(target)}")
    return lines


def _footer_lines(results: dict) -> list[str]:
    """Compile times, engines not measured, noisy repeats, what ran, the total time."""
    lines = []
    compile_time = results.get("compile_seconds")
    if compile_time:
        lines.append(f"compiled engine, first epoch in a fresh process: cold (empty Numba "
                     f"cache) {compile_time['cold']:.1f} s, warm (cached) "
                     f"{compile_time['warm']:.1f} s")
    for engine, reason in results.get("engine_errors", {}).items():
        lines.append(f"{engine} engine not measured: {reason}")
    noisy = [
        f"{name} ({max(times) / min(times):.1f}x)"
        for name, times in results.get("runs", {}).items()
        if len(times) > 1 and min(times) > 0 and max(times) / min(times) > NOISY_SPREAD
    ]
    if noisy:
        lines.append(
            f"warning: repeats varied by more than {NOISY_SPREAD:g}x (slowest/fastest) for "
            f"{', '.join(noisy)}: the machine was busy; the best run is reported, but rerun "
            "to confirm"
        )
    config = results.get("config", {})
    if config:
        lines.append("")
        lines.extend(f"{key}: {text}" for key, text in config.items())
    if "seconds_total" in results:
        lines.append(f"total benchmark time: {results['seconds_total']:.1f} s")
    return lines
