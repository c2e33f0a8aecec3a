"""The benchmark runs and reports what it promises (never how fast: speed targets belong
in the benchmark's output, not in a unit test)."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from handprop.core.presets import lenet, seed_net
from handprop.integrations.benchmark import format_bench, lenet_data, run_bench

HAS_TORCH = importlib.util.find_spec("torch") is not None

HANDPROP_KEYS = (
    "online_step_us",
    "online_step_us_raw",
    "seed_batch32_samples_per_s",
    "lenet_batch64_samples_per_s",
)
TORCH_KEYS = (
    "torch_online_step_us",
    "torch_seed_batch32_samples_per_s",
    "torch_lenet_batch64_samples_per_s",
    "ratio_online",
    "ratio_seed_batch32",
    "ratio_lenet_batch64",
    "torch_1thread_online_step_us",
    "ratio_online_torch_1thread",
)


def _positive_finite(value) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_results() -> dict:
    return run_bench(quick=True)


def test_quick_bench_reports_every_measurement(quick_results):
    for key in HANDPROP_KEYS:
        assert _positive_finite(quick_results[key]), (key, quick_results.get(key))
    if HAS_TORCH:
        for key in TORCH_KEYS:
            assert _positive_finite(quick_results[key]), (key, quick_results.get(key))
    machine = quick_results["machine"]
    for key in ("platform", "cpu_count", "numpy", "torch"):
        assert key in machine
    assert machine["numpy"] == np.__version__
    assert (machine["torch"] is not None) == HAS_TORCH
    assert set(quick_results["targets"]) == {
        "online_step_us", "ratio_online", "replica_step_us_r15", "replica_step_us_r24",
        "ratio_seed_batch32", "ratio_lenet_batch64",
    }
    assert quick_results["engines"] == ["numpy", "compiled"]
    for engine in quick_results["engines"]:
        for key in HANDPROP_KEYS[:1] + HANDPROP_KEYS[2:]:
            if engine == "compiled" and key.startswith("lenet"):
                continue  # quick runs leave out the compiled engine's float32 kernels
            assert _positive_finite(quick_results[f"{key}_{engine}"]), (key, engine)
        replicas = quick_results[f"replica_step_us_{engine}"]
        assert set(replicas) == {"1", "15", "24", "120"}
        assert all(_positive_finite(v) for v in replicas.values())
    rules = quick_results["rule_step_us"]  # the reproduce study's rules, compiled
    assert {"seed seed-broken", "seed broken-text", "seed-as-run seed-original"} <= set(rules)
    assert all(_positive_finite(v) for row in rules.values() for v in row.values())
    assert quick_results["online_step_us"] == min(
        quick_results[f"online_step_us_{e}"] for e in quick_results["engines"])
    for key, target in quick_results["targets"].items():  # met says what value and target say
        value, bound = target["value"], float(target["target"].split()[1].rstrip("x"))
        below = target["target"].startswith("<=")
        assert target["met"] == (None if value is None else
                                 (value <= bound) if below else (value >= bound)), key


def test_format_bench_mentions_the_three_measurements(quick_results):
    text = format_bench(quick_results)
    assert "online step" in text
    assert "seed batch-32" in text
    assert "lenet batch-64" in text
    assert "target" in text
    assert "R=24" in text and "seed-as-run seed-broken" in text
    if HAS_TORCH:
        assert "torch" in text


def test_bench_without_torch():
    results = run_bench(quick=True, with_torch=False, repeats=1, engines=["numpy"])
    for key in HANDPROP_KEYS:
        assert _positive_finite(results[key])
    for key in TORCH_KEYS:
        assert key not in results
    assert results["targets"]["ratio_seed_batch32"]["met"] is None
    assert "lenet batch-64" in format_bench(results)
    assert results["engines"] == ["numpy"] and "compile_seconds" not in results


@pytest.mark.slow
def test_compile_seconds_in_a_fresh_process(compile_times):
    """What bench reports as compile times: the first compiled epoch of a new process,
    with an empty Numba cache (cold: a full compile) and then with it filled (warm).
    conftest.py runs ``compile_seconds`` beside the other tests (it needs a core for
    about 30 s); this checks what it measured."""
    assert _positive_finite(compile_times["cold"])
    assert any(Path(compile_times["cache"]).rglob("*.nbi"))  # the cache went where told
    assert _positive_finite(compile_times["warm"])
    assert compile_times["warm"] < compile_times["cold"]  # loaded, not compiled again


def test_importing_the_package_and_bench_does_not_import_torch():
    code = (
        "import sys, handprop, handprop.integrations.benchmark, handprop.training.loop; "
        "sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_torch_twins_compute_what_handprop_computes():
    """The comparison is fair only if the twins are the same networks: same outputs and
    same gradients from the same weights."""
    import torch

    from handprop.core.ops.losses import l2_loss, softmax_cross_entropy
    from handprop.integrations.benchmark import torch_twins

    rng = np.random.default_rng(0)
    cases = [
        (seed_net().init(0), torch_twins.torch_seed_module(), rng.random((3, 1, 8, 8)) * 16,
         np.array([[0.0], [1.0], [1.0]])),
        (lenet().init(0, dtype="float32"), torch_twins.torch_lenet_module(),
         *lenet_data(3)),
    ]
    for net, module, x, target in cases:
        torch_twins.load_handprop_params(module, net.get_params())
        out, tape = net.forward(x)
        if net.loss == "l2":
            _, out_grad = l2_loss(out, target, "sum")
            torch_loss = torch_twins.l2_loss("sum")
            t_target = torch.from_numpy(target)
        else:
            _, out_grad = softmax_cross_entropy(out, target, "mean")
            torch_loss = torch.nn.functional.cross_entropy
            t_target = torch.from_numpy(target.astype(np.int64))
        grads = net.backward(tape, out_grad)
        t_out = module(torch.from_numpy(x.astype(net.dtype)))
        torch_loss(t_out, t_target).backward()
        tol = 1e-10 if net.dtype == np.float64 else 1e-4
        np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=tol, atol=tol)
        for name, param in module.named_parameters():
            np.testing.assert_allclose(grads[name], param.grad.numpy(), rtol=tol, atol=tol,
                                       err_msg=name)
