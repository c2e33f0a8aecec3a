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

With PyTorch installed (a benchmark-only dependency, imported lazily), the same three
with twins of the networks (:mod:`.torch_twins`) started from the same weights
and trained by a plain torch loop, and the ratios (> 1: handprop is faster).
Targets: (a) <= 100 us, (b) >= 2x torch, (c) >= 1x torch; :func:`format_bench` says
whether each is met. Nothing here asserts them: they are measurements of a machine.

    handprop bench
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from ...core.network import Network
from ...core.presets import lenet, seed_net
from ...training.data import load_digits
from ...training.loop import History, TrainConfig, fit, loss_for, targets_for
from ...training.optim import make_optimizer

# The article's momentum optimizer.
SEED_LR, SEED_MOMENTUM = 0.09, 0.0009
LENET_LR, LENET_MOMENTUM = 0.01, 0.9
LENET_CLASSES = 10

TARGET_ONLINE_US = 100.0
TARGET_SEED_BATCH32_RATIO = 2.0
TARGET_LENET_BATCH64_RATIO = 1.0
# Large exact-rule batches may use a second thread (results do not depend on it).
THREADS = 2
# Repeats whose slowest/fastest ratio exceeds this are flagged as measured on a busy machine.
NOISY_SPREAD = 1.5


@dataclass(frozen=True)
class _Sizes:
    online_epochs: int  # passes over the 350 digits training images, batch 1
    batch32_epochs: int
    lenet_images: int
    lenet_epochs: int


FULL = _Sizes(online_epochs=20, batch32_epochs=100, lenet_images=2048, lenet_epochs=3)
QUICK = _Sizes(online_epochs=1, batch32_epochs=2, lenet_images=256, lenet_epochs=1)


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
    warmup: int,
) -> tuple[History, list[float]]:
    """Best (shortest) of ``repeats`` fresh-net runs of ``fit``, after a short warm-up."""
    if warmup:
        warm = TrainConfig(**{**config.to_dict(), "epochs": 1})
        fit(make_net(), x[:warmup], labels[:warmup], warm, threads=THREADS)
    best, runs = None, []
    for _ in range(max(int(repeats), 1)):
        history = fit(make_net(), x, labels, config, threads=THREADS)
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


def run_bench(quick: bool = False, with_torch: bool = True, repeats: int = 3) -> dict:
    """Measure (a), (b), (c) (see the module docstring) for handprop and, if available,
    PyTorch. ``quick`` runs a few steps of each (a smoke test: the numbers are noisy).

    Returns a dict: the measurements and ratios (``online_step_us``, ...), ``targets``
    (target, value, met), ``machine``, ``config`` (what was run) and ``runs`` (every
    repeat's seconds).
    """
    started = time.perf_counter()
    sizes = QUICK if quick else FULL
    repeats = max(int(repeats), 1)
    twins, torch_error = None, None
    if with_torch:
        try:  # torch only ever comes in through the benchmark's twins module
            from . import torch_twins as twins
        except ImportError as exc:
            twins, torch_error = None, f"torch not importable: {exc}"
    results: dict[str, Any] = {
        "quick": bool(quick),
        "repeats": repeats,
        "machine": machine_info(twins.torch if twins is not None else None),
    }
    if torch_error:
        results["torch_error"] = torch_error
    runs: dict[str, list[float]] = {}

    digits = load_digits(seed=0)
    xd, yd = digits.x_train, digits.y_train

    def make_seed() -> Network:
        return seed_net().init(0)

    seed_params = make_seed().get_params()

    # (a) online SGD of the seed net: the article's protocol.
    online = TrainConfig(epochs=sizes.online_epochs, batch_size=1, optimizer="momentum",
                         lr=SEED_LR, momentum=SEED_MOMENTUM, loss="l2", reduction="sum")
    history, runs["online"] = _fit_best(make_seed, xd, yd, online, repeats, warmup=50)
    results["online_step_us"] = history.seconds / history.steps * 1e6
    results["online_step_us_raw"] = _raw_online_us(
        make_seed, xd, yd, sizes.online_epochs, repeats
    )

    # (b) minibatch 32 of the seed net.
    batch32 = TrainConfig(epochs=sizes.batch32_epochs, batch_size=32, optimizer="momentum",
                          lr=SEED_LR, momentum=SEED_MOMENTUM, loss="l2", reduction="mean")
    history, runs["seed_batch32"] = _fit_best(make_seed, xd, yd, batch32, repeats, warmup=64)
    results["seed_batch32_samples_per_s"] = (
        _samples(history.steps, len(xd), 32) / history.seconds
    )

    # (c) minibatch 64 of LeNet-5, float32, synthetic 28x28 images.
    xl, yl = lenet_data(sizes.lenet_images)

    def make_lenet() -> Network:
        return lenet().init(0, dtype="float32")

    lenet64 = TrainConfig(epochs=sizes.lenet_epochs, batch_size=64, optimizer="momentum",
                          lr=LENET_LR, momentum=LENET_MOMENTUM, dtype="float32",
                          loss="softmax_ce", reduction="mean")
    history, runs["lenet_batch64"] = _fit_best(make_lenet, xl, yl, lenet64, repeats, warmup=128)
    results["lenet_batch64_samples_per_s"] = (
        _samples(history.steps, len(xl), 64) / history.seconds
    )

    results["config"] = {
        "online": f"seed float64, digits 0/1 ({len(xd)} images) x {sizes.online_epochs} "
                  f"epochs, batch 1, momentum lr {SEED_LR} alpha {SEED_MOMENTUM}, l2 sum",
        "seed_batch32": f"seed float64, digits 0/1 x {sizes.batch32_epochs} epochs, batch 32, "
                        f"momentum lr {SEED_LR} alpha {SEED_MOMENTUM}, l2 mean",
        "lenet_batch64": f"lenet float32, {sizes.lenet_images} random 1x28x28 images x "
                         f"{sizes.lenet_epochs} epochs, batch 64, momentum lr {LENET_LR} "
                         f"alpha {LENET_MOMENTUM}, softmax_ce mean",
    }

    if twins is not None:
        timing = twins.time_torch_online(
            xd, yd, epochs=sizes.online_epochs, params=seed_params, lr=SEED_LR,
            momentum=SEED_MOMENTUM, repeats=repeats,
        )
        results["torch_online_step_us"] = timing.step_us
        runs["torch_online"] = timing.runs
        timing = twins.time_torch_seed_batch(
            xd, yd, epochs=sizes.batch32_epochs, batch_size=32, reduction="mean",
            params=seed_params, lr=SEED_LR, momentum=SEED_MOMENTUM, repeats=repeats,
        )
        results["torch_seed_batch32_samples_per_s"] = timing.samples_per_s
        runs["torch_seed_batch32"] = timing.runs
        timing = twins.time_torch_lenet_batch(
            xl, yl, epochs=sizes.lenet_epochs, batch_size=64, params=make_lenet().get_params(),
            lr=LENET_LR, momentum=LENET_MOMENTUM, repeats=repeats,
        )
        results["torch_lenet_batch64_samples_per_s"] = timing.samples_per_s
        runs["torch_lenet_batch64"] = timing.runs
        results["ratio_online"] = results["torch_online_step_us"] / results["online_step_us"]
        results["ratio_seed_batch32"] = (
            results["seed_batch32_samples_per_s"] / results["torch_seed_batch32_samples_per_s"]
        )
        results["ratio_lenet_batch64"] = (
            results["lenet_batch64_samples_per_s"] / results["torch_lenet_batch64_samples_per_s"]
        )

    ratio_b, ratio_c = results.get("ratio_seed_batch32"), results.get("ratio_lenet_batch64")
    results["targets"] = {
        "online_step_us": {
            "target": f"<= {TARGET_ONLINE_US:g} us",
            "value": results["online_step_us"],
            "met": bool(results["online_step_us"] <= TARGET_ONLINE_US),
        },
        "ratio_seed_batch32": {
            "target": f">= {TARGET_SEED_BATCH32_RATIO:g}x torch",
            "value": ratio_b,
            "met": None if ratio_b is None else bool(ratio_b >= TARGET_SEED_BATCH32_RATIO),
        },
        "ratio_lenet_batch64": {
            "target": f">= {TARGET_LENET_BATCH64_RATIO:g}x torch",
            "value": ratio_c,
            "met": None if ratio_c is None else bool(ratio_c >= TARGET_LENET_BATCH64_RATIO),
        },
    }
    results["runs"] = runs
    results["seconds_total"] = time.perf_counter() - started
    return results


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if value < 1000 else f"{value:,.0f}"


def _met(target: dict[str, Any]) -> str:
    return {True: "yes", False: "NO", None: "n/a"}[target["met"]]


def format_bench(results: dict) -> str:
    """A readable table of :func:`run_bench`'s results, with the targets and whether each
    is met."""
    machine = results.get("machine", {})
    targets = results.get("targets", {})
    cpu = machine.get("cpu_model") or machine.get("processor") or machine.get("machine")
    torch_text = (
        f"torch {machine['torch']} ({machine['torch_threads']} threads)"
        if machine.get("torch") else results.get("torch_error", "torch not run")
    )
    lines = [
        "handprop benchmark" + ("  [quick: smoke-test sizes, numbers are noisy]"
                                if results.get("quick") else ""),
        f"machine: {machine.get('platform')}, {cpu}, {machine.get('cpu_count')} CPUs",
        f"numpy {machine.get('numpy')} (BLAS: {machine.get('blas') or 'unknown'}), {torch_text}",
        f"best of {results.get('repeats')} runs each; ratio > 1 means handprop is faster",
        "",
        f"{'measurement':<44}{'handprop':>11}{'torch':>11}{'ratio':>8}  {'target':<14}met",
    ]
    rows = [
        ("(a) seed online step, batch 1, f64 (us/step)", "online_step_us",
         "torch_online_step_us", "ratio_online", "online_step_us"),
        ("(b) seed batch-32, f64 (samples/s)", "seed_batch32_samples_per_s",
         "torch_seed_batch32_samples_per_s", "ratio_seed_batch32", "ratio_seed_batch32"),
        ("(c) lenet batch-64, f32 (samples/s)", "lenet_batch64_samples_per_s",
         "torch_lenet_batch64_samples_per_s", "ratio_lenet_batch64", "ratio_lenet_batch64"),
    ]
    for label, ours, theirs, ratio, target_key in rows:
        ratio_value = results.get(ratio)
        ratio_text = "-" if ratio_value is None else f"{ratio_value:.2f}x"
        target = targets.get(target_key, {"target": "", "met": None})
        lines.append(
            f"{label:<44}{_num(results.get(ours)):>11}{_num(results.get(theirs)):>11}"
            f"{ratio_text:>8}  {target['target']:<14}{_met(target)}"
        )
        if ours == "online_step_us":
            lines.append(
                f"{'    bare loop, no fit bookkeeping (us/step)':<44}"
                f"{_num(results.get('online_step_us_raw')):>11}"
            )
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
    return "\n".join(lines)
