"""The benchmark runs and reports what it promises (never how fast: speed targets belong
in the benchmark's output, not in a unit test). Tiny sizes: structure and format only."""

from __future__ import annotations

import importlib.util
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli

from handprop.core.presets import lenet, seed_net
from handprop.integrations.benchmark import format_bench, run_bench
from handprop.integrations.benchmark.fresh import SOURCE, Contender, contenders, run_fresh
from handprop.integrations.benchmark.settings import QUICK, Workload, lenet_workload

HAS_TORCH = importlib.util.find_spec("torch") is not None
TWO_CORES = (os.cpu_count() or 1) >= 2

HANDPROP_KEYS = ("online_step_us", "online_step_us_raw", "seed_batch32_samples_per_s")
TORCH_KEYS = (
    "torch_online_step_us",
    "torch_seed_batch32_samples_per_s",
    "ratio_online",
    "ratio_seed_batch32",
    "torch_1thread_online_step_us",
    "ratio_online_torch_1thread",
)
FRESH = ("lenet_batch64", "compare_cnn_batch32")


def _positive_finite(value) -> bool:
    return isinstance(value, float | int) and math.isfinite(value) and value > 0


@pytest.fixture(scope="module")
def quick_results() -> dict:
    return run_bench(quick=True, repeats=1)


def test_quick_bench_reports_every_measurement(quick_results):
    for key in HANDPROP_KEYS:
        assert _positive_finite(quick_results[key]), (key, quick_results.get(key))
    if HAS_TORCH:
        for key in TORCH_KEYS:
            assert _positive_finite(quick_results[key]), (key, quick_results.get(key))
    machine = quick_results["machine"]
    for key in ("platform", "cpu_count", "numpy", "torch", "load_average"):
        assert key in machine
    assert machine["numpy"] == np.__version__
    assert (machine["torch"] is not None) == HAS_TORCH
    assert quick_results["engines"] == ["numpy", "compiled"]
    for engine in quick_results["engines"]:
        for key in ("online_step_us", "seed_batch32_samples_per_s"):
            assert _positive_finite(quick_results[f"{key}_{engine}"]), (key, engine)
        replicas = quick_results[f"replica_step_us_{engine}"]
        assert set(replicas) == {"1", "15", "24", "120"}
        assert all(_positive_finite(v) for v in replicas.values())
    rules = quick_results["rule_step_us"]  # the reproduce study's rules, compiled
    assert {"seed seed-broken", "seed broken-text", "seed-as-run seed-original"} <= set(rules)
    assert all(_positive_finite(v) for row in rules.values() for v in row.values())
    assert quick_results["online_step_us"] == min(
        quick_results[f"online_step_us_{e}"] for e in quick_results["engines"])


def test_targets_say_what_value_and_bound_say(quick_results):
    found = quick_results["targets"]
    assert set(found) == {
        "online_step_us", "ratio_online", "replica_step_us_r15", "replica_step_us_r24",
        "ratio_seed_batch32", "ratio_lenet_batch64_1core", "ratio_lenet_batch64_2cores",
        "ratio_compare_cnn_batch32_baseline"}
    for key, target in found.items():
        value, bound = target["value"], float(target["target"].split()[1].rstrip("x"))
        below = target["target"].startswith("<=")
        assert target["met"] == (None if value is None else
                                 (value <= bound) if below else (value >= bound)), key
    assert found["ratio_compare_cnn_batch32_baseline"]["value"] is None  # no baseline given
    if HAS_TORCH:  # the median over blocks of the fastest engine's ratio to torch
        lenet_row = quick_results["fresh"]["lenet_batch64"]["ratios"][
            "handprop numpy, 1 core / torch, 1 thread"]
        assert found["ratio_lenet_batch64_1core"]["value"] == lenet_row["summary"]["median"]


def test_fresh_rows_are_real_runs_of_every_contender(quick_results):
    """Every workload by every contender, each block's samples/s and page faults; the
    ratios pair runs of the same block."""
    fresh = quick_results["fresh"]
    assert set(fresh) == set(FRESH)
    expected = ["handprop numpy, 1 core"] + (["torch, 1 thread"] if HAS_TORCH else [])
    if TWO_CORES:
        expected += ["handprop numpy, 2 cores"] + (["torch, 2 threads"] if HAS_TORCH else [])
    for key, work in zip(FRESH, QUICK.fresh, strict=True):
        entry = fresh[key]
        assert entry["workload"] == work.to_dict() and entry["text"] == work.describe()
        assert list(entry["rows"]) == expected
        for label, row in entry["rows"].items():
            assert row["errors"] == [], (label, row["errors"])
            assert len(row["samples_per_s"]) == quick_results["fresh_blocks"] == 1
            assert all(_positive_finite(v) for v in row["samples_per_s"])
            assert all(isinstance(f, int) and f >= 0 for f in row["faults_last_epoch"])
            spread = row["summary"]
            assert spread["min"] <= spread["median"] <= spread["max"]
            if row["library"] == "handprop":
                assert row["engine_used"] == "numpy"
        for ratio in entry["ratios"].values():
            top, bottom = (entry["rows"][ratio[k]] for k in ("numerator", "denominator"))
            assert top["workers"] == bottom["workers"] and bottom["library"] == "torch"
            assert ratio["values"] == [a / b for a, b in zip(
                top["samples_per_s"], bottom["samples_per_s"], strict=True)]
        assert len(entry["ratios"]) == (len(expected) // 2 if HAS_TORCH else 0)


def test_format_bench_shows_every_row(quick_results):
    text = format_bench(quick_results)
    for words in ("online step", "seed batch-32", "lenet batch-64", "compare's CNN", "target",
                  "R=24", "seed-as-run seed-broken", "fresh processes", "page faults"):
        assert words in text, words
    for entry in quick_results["fresh"].values():
        for label in entry["rows"]:
            assert label in text
    if HAS_TORCH:
        assert "torch, 1 thread" in text and "over torch, 1 thread" in text


def test_bench_without_torch():
    results = run_bench(quick=True, with_torch=False, repeats=1, engines=["numpy"])
    for key in HANDPROP_KEYS:
        assert _positive_finite(results[key])
    for key in TORCH_KEYS:
        assert key not in results
    assert results["targets"]["ratio_seed_batch32"]["met"] is None
    assert results["targets"]["ratio_lenet_batch64_1core"]["met"] is None
    for entry in results["fresh"].values():
        assert all(row["library"] == "handprop" for row in entry["rows"].values())
        assert entry["ratios"] == {}
    assert "lenet batch-64" in format_bench(results)
    assert results["engines"] == ["numpy"] and "compile_seconds" not in results


@pytest.mark.skipif(not TWO_CORES, reason="one core: no 2-core contenders")
def test_contenders_alternate_handprop_and_torch():
    order = contenders(["numpy", "compiled"], ["/tmp/base"], with_torch=True,
                       malloc_defaults=True)
    labels = [c.label for c in order]
    one = ["handprop numpy, 1 core", "handprop compiled, 1 core", "handprop numpy @ base, 1 core",
           "torch, 1 thread"]
    two = ["handprop numpy, 2 cores", "handprop compiled, 2 cores",
           "handprop numpy @ base, 2 cores", "handprop numpy, 2 cores, glibc malloc defaults",
           "torch, 2 threads"]
    assert labels == one + two


def test_baselines_and_failed_runs():
    """A baseline tree is timed beside the current one and paired with it; a run that
    fails is reported with its reason, and the others go on."""
    work = Workload("tiny", "tiny lenet", "lenet", (1, 28, 28), 64, 2, 32, "float32",
                    "momentum", 0.01, 0.9, 0, False)
    order = [Contender("handprop", 1), Contender("handprop", 1, source=str(SOURCE)),
             Contender("handprop", 1, engine="no-such-engine")]
    table = run_fresh((work,), order, repeats=2)["tiny"]
    rows = table["rows"]
    assert rows[order[1].label]["handprop"] == str(SOURCE / "handprop")
    assert all(len(rows[c.label]["samples_per_s"]) == 2 for c in order)
    failed = rows[order[2].label]
    assert failed["samples_per_s"] == [None, None] and len(failed["errors"]) == 2
    assert "no-such-engine" in failed["errors"][0]
    ratio = table["ratios"][f"{order[0].label} / {order[1].label}"]
    assert all(_positive_finite(v) for v in ratio["values"])
    assert f"{order[0].label} / {order[2].label}" not in table["ratios"]  # not a baseline


def test_cli_refuses_a_baseline_without_handprop(tmp_path):
    code, _, stderr = run_cli("bench", "--baseline", tmp_path)
    assert code == 2
    assert "holds no handprop package" in stderr and "Traceback" not in stderr


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
        "import sys, handprop, handprop.integrations.benchmark, handprop.training.loop, "
        "handprop.cli.bench; sys.exit(1 if 'torch' in sys.modules else 0)"
    )
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


@pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
def test_torch_twins_compute_what_handprop_computes():
    """The comparison is fair only if the twins are the same networks: same outputs and
    same gradients from the same weights, in the network's dtype."""
    import torch

    from handprop.core.ops.losses import l2_loss, softmax_cross_entropy
    from handprop.integrations import torch_twins

    rng = np.random.default_rng(0)
    cases = [
        (seed_net().init(0), torch_twins.torch_seed_net, rng.random((3, 1, 8, 8)) * 16,
         np.array([[0.0], [1.0], [1.0]])),
        (lenet().init(0, dtype="float32"), torch_twins.torch_twin,
         rng.random((3, 1, 28, 28), dtype=np.float32), np.array([3, 0, 9])),
    ]
    for net, twin, x, target in cases:
        module = twin(net)
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
        t_out = module(torch.from_numpy(x))
        assert t_out.dtype == {np.float64: torch.float64, np.float32: torch.float32}[
            net.dtype.type]
        torch_loss(t_out, t_target).backward()
        tol = 1e-10 if net.dtype == np.float64 else 1e-4
        np.testing.assert_allclose(out, t_out.detach().numpy(), rtol=tol, atol=tol)
        for name, param in module.named_parameters():
            np.testing.assert_allclose(grads[name], param.grad.numpy(), rtol=tol, atol=tol,
                                       err_msg=name)


def test_lenet_workload_is_the_issue_protocol():
    work = lenet_workload(60_000, 2)
    assert (work.batch_size, work.dtype, work.input_shape) == (64, "float32", (1, 28, 28))
    assert (work.optimizer, work.lr, work.momentum, work.replicas) == ("momentum", 0.01, 0.9, 0)
