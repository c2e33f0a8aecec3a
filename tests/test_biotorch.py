"""``handprop biotorch``: BioTorch's LeNet table with seeds. The network and schedule it
needs, its config and claims checks, the claims machinery on its records (stuck seeds
included), a quick run on the real Fashion-MNIST files that leaves nothing behind,
resume (bit-identical) and the Dask backend (same records as locally)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
from helpers import run_cli
from test_fashion_mnist import needs_installed_files

from handprop.core import io as core_io
from handprop.core.errors import ConfigError
from handprop.core.presets import lenet_biotorch
from handprop.studies import biotorch
from handprop.studies.biotorch import BiotorchStudy, build_jobs, run_job
from handprop.studies.biotorch_base import BiotorchConfig, is_stuck
from handprop.studies.biotorch_claims import evaluate_claims, summarize
from handprop.training.optim import Momentum, make_schedule

QUICK = ["--rules", "exact,fa,usf"]  # the config's claims on fa and usf; the rest untested
VOLATILE = ("pid", "epoch_seconds", "versions")


def _records(out: Path) -> dict[str, dict]:
    return {str(p.relative_to(out)): json.loads(p.read_text())
            for p in sorted((out / "runs").rglob("*.json"))}


def _same(a: dict, b: dict) -> bool:
    return {k: v for k, v in a.items() if k not in VOLATILE} == \
        {k: v for k, v in b.items() if k not in VOLATILE}


# -- the network and the schedule ------------------------------------------------------

def test_lenet_biotorch_is_biotorchs_lenet_mnist():
    torch = pytest.importorskip("torch")
    net = lenet_biotorch().init(3)
    assert net.shapes[-1] == (10,) and net.num_params == 61706  # BioTorch's LeNetMNIST
    conv3 = [layer for layer in net.layers if layer.name == "conv3"][0]
    assert conv3.fan_out() == 120 * 25  # a convolution: its Glorot scale uses 3000
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(6, 16, 5), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Conv2d(16, 120, 5), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(120, 84), torch.nn.ReLU(), torch.nn.Linear(84, 10)).double()
    weights = [m for m in model if hasattr(m, "weight")]
    names = ["conv1", "conv2", "conv3", "fc4", "fc5"]
    with torch.no_grad():
        for module, name in zip(weights, names, strict=True):
            module.weight.copy_(torch.tensor(net.params[f"{name}.weight"]))
            module.bias.copy_(torch.tensor(net.params[f"{name}.bias"]))
    x = np.random.default_rng(0).standard_normal((4, 1, 32, 32))
    assert np.allclose(net.predict(x), model(torch.tensor(x)).detach().numpy(), atol=1e-12)


def test_multistep_schedule_drops_at_half_and_three_quarters():
    optimizer, schedule = Momentum(0.1, 0.9), make_schedule("multistep", 100)
    seen = []
    for epoch in range(100):
        seen.append(optimizer.lr)
        schedule.end_epoch(optimizer, epoch)
    assert seen[49] == 0.1 and math.isclose(seen[50], 0.01) and math.isclose(seen[74], 0.01)
    assert math.isclose(seen[75], 0.001) and math.isclose(seen[99], 0.001)


# -- config and claims ------------------------------------------------------------------

def _config(**changes) -> BiotorchConfig:
    config = BiotorchStudy.load_config()
    for key, value in changes.items():
        setattr(config, key, value)
    return config


@pytest.mark.parametrize(("changes", "words"), [
    ({"learning_rates": ["exact=0.1"]}, "no learning rate for fa"),
    ({"learning_rates": ["exact=-1"]}, "LR > 0"),
    ({"rules": ["exact", "nope"]}, "unknown rule"),
    ({"schedule": "sometimes"}, "schedule"),
])
def test_config_errors_name_the_problem(changes, words):
    with pytest.raises(ConfigError, match=words):
        BiotorchStudy.check_config(_config(**changes))


_CLAIM = ('[[biotorch.claims]]\nstatement = "s"\na = "fa"\nb = "exact"\nmetric = "{metric}"\n'
          'direction = "{direction}"\ntest = "{test}"\n')


@pytest.mark.parametrize(("fields", "words"), [
    ({"metric": "accuracy"}, "metric must be one of test_error"),
    ({"b": "dfb"}, "unknown rule 'dfb'"),
    ({"test": "tost"}, "equivalence claim takes the tost test"),
    ({"direction": "differ"}, "is exploratory"),
])
def test_claims_in_a_config_are_checked_before_anything_runs(tmp_path, fields, words):
    values = {"metric": "test_error", "direction": "higher", "test": "mean", **fields}
    text = _CLAIM.format(**values).replace('b = "exact"', f'b = "{values.get("b", "exact")}"')
    (tmp_path / "c.toml").write_text('[biotorch]\nrules = ["exact", "fa"]\n'
                                     'learning_rates = ["exact=0.1", "fa=0.01"]\n' + text)
    code, _, err = run_cli("biotorch", "--config", tmp_path / "c.toml", "--out",
                           tmp_path / "out")
    assert code == 2 and err.count("\n") == 1 and words in err, err
    assert not (tmp_path / "out").exists()


def test_the_default_claims_are_biotorchs_table():
    config = _config()
    family = [c for c in config.claims if c.role == "confirmatory"]
    assert [(c.a, c.b, c.direction, c.test) for c in family] == [
        ("exact", "fa", "lower", "mean"), ("exact", "dfa-biotorch", "lower", "mean"),
        ("usf", "exact", "equivalent", "tost"), ("brsf", "exact", "equivalent", "tost"),
        ("frsf", "exact", "equivalent", "tost")]
    assert all(c.margin == 0.01 for c in family if c.test == "tost")
    assert all("Benchmarks.md" in c.source for c in family)


def test_more_seeds_or_other_claims_leave_finished_runs_finished(tmp_path):
    """A run's fingerprint holds only what the run depends on."""
    base = {job.id: job.fingerprint for job in build_jobs(_config(), tmp_path, 1)}
    wider = _config(seeds=8, claims=_config().claims[:1])
    for job in build_jobs(wider, tmp_path, 1):
        assert base.get(job.id, job.fingerprint) == job.fingerprint
    other = _config(learning_rates=[*_config().learning_rates, "fa=0.01"])
    changed = {job.id for job in build_jobs(other, tmp_path, 1)
               if base.get(job.id) != job.fingerprint}
    assert changed == {f"biotorch/fa/seed{s}" for s in range(5)}


# -- the claims machinery on the study's records ----------------------------------------

def _record(rule: str, seed: int, error: float, stuck: bool = False) -> dict:
    """A run record as run_job writes it (the keys the statistics read)."""
    errors = [min(error + 10, 100), error]
    return {"rule": rule, "seed": seed, "diverged": None, "classes": 10,
            "val_error_pct": errors, "test_error_pct": errors,
            "val_top_share": [0.3, 0.99 if stuck else 0.12], "selected_epoch": 2,
            "test_error_pct_selected": error, "best_test_epoch": 2,
            "test_error_pct_best": error, "test_error_pct_final": error,
            "alignment": None, "alignment_epochs": [0, 2], "epoch_seconds": [1.0, 1.0],
            "engine": "numpy"}


def _fake_records(n: int = 10, stuck_kp: int = 0) -> dict[str, list[dict]]:
    rng = np.random.default_rng(0)
    exact = 10 + rng.normal(0, 0.2, n)
    table = {"exact": exact, "fa": exact + 4 + rng.normal(0, 0.3, n),
             "dfa-biotorch": exact + 3.5 + rng.normal(0, 0.3, n),
             "usf": exact + rng.normal(0, 0.05, n), "brsf": exact + 3 + rng.normal(0, 0.1, n),
             "frsf": exact + rng.normal(0, 2.0, n), "kp": exact + 1 + rng.normal(0, 0.3, n)}
    records = {rule: [_record(rule, s, float(v)) for s, v in enumerate(values)]
               for rule, values in table.items()}
    for s in range(stuck_kp):
        records["kp"][s] = _record("kp", s, 90.0, stuck=True)
    return records


def test_claims_are_judged_with_the_shared_machinery():
    """Holm over the confirmatory family only; a mean claim supported, an equivalence
    shown, one too far (brsf: 3 pp off), one too noisy to show (frsf); the design check,
    the effect with its interval and the evidence come from claims.py."""
    config = _config(seeds=10)
    found = evaluate_claims(_fake_records(), config)
    by = {c["statement"].split()[0] + ("" if c["b"] == "exact" else "/" + c["b"]): c
          for c in found["claims"]}
    assert found["family"] == 5 and len(found["design"]) == 5
    exact_fa = next(c for c in found["claims"] if c["b"] == "fa" and c["a"] == "exact")
    assert exact_fa["verdict"] == "supported" and exact_fa["family"] == 5
    assert exact_fa["adjusted_p"] >= exact_fa["p_value"]
    assert exact_fa["effect"].startswith("exact - fa: -3.9 pp [95% CI -4.1 pp, -3.6 pp]")
    assert by["usf"]["verdict"] == "supported: within +-1.0 pp"
    assert by["brsf"]["verdict"] == by["frsf"]["verdict"] == "not decided with 10 seeds"
    assert by["brsf"]["p_value"] == 1.0  # its mean lies outside the margin
    assert 0.05 < by["frsf"]["p_value"] < 1.0  # inside, but too noisy at 10 seeds
    explored = [c for c in found["claims"] if c["role"] == "exploratory"]
    assert explored and all(c["adjusted_p"] is None for c in explored)
    assert all(c["verdict"].startswith("exploratory: ") for c in explored)
    assert found["not_tested"] == []


def test_a_claim_whose_rule_did_not_run_is_named_not_tested():
    records = {rule: runs for rule, runs in _fake_records().items() if rule != "brsf"}
    found = evaluate_claims(records, _config(seeds=10))
    assert found["family"] == 4
    assert found["not_tested"] == ["brsf is within 1 pp of exact back-propagation's test "
                                   "error (confirmatory)"]


def test_stuck_seeds_get_the_two_part_view():
    """kp stuck at chance in 2 of 10 seeds: counted, its mean gets the two-part interval,
    the McNemar comparison with exact and the seeds that both learned; and a mean claim
    over stuck seeds at n < 10 says its level is not shown."""
    records = _fake_records(stuck_kp=2)
    assert is_stuck(records["kp"][0]) and not is_stuck(records["kp"][5])
    summary = summarize(records, _config(seeds=10))
    kp = summary["kp"]
    assert kp["stuck"]["k"] == 2 and kp["stuck"]["n"] == 10
    assert kp["honest"]["ci_method"].startswith("two-part (stuck 2/10")
    assert summary["exact"]["honest"]["ci_method"].startswith(("bootstrap-t", "t"))
    assert kp["honest"]["learned_mean"] < 15 < kp["honest"]["mean"]
    found = evaluate_claims(records, _config(seeds=10))
    row = next(r for r in found["stuck"] if r["rule"] == "kp")
    assert (row["stuck"], row["stuck_baseline"], row["only_rule"]) == (2, 0, 2)
    assert row["p_value"] == 0.5 and row["learned_n"] == 8
    assert 0.005 < row["learned_diff"] < 0.015  # kp 1 pp behind where both learned
    few = {rule: runs[:6] for rule, runs in records.items()}
    kp_claim = next(c for c in evaluate_claims(few, _config(seeds=6))["claims"]
                    if c["a"] == "kp" and c["b"] == "exact")
    assert kp_claim["stuck"] == {"kp": 2, "exact": 0}
    assert "level is not shown to hold" in kp_claim["evidence"]


def test_a_verdict_one_seed_carries_is_flagged_fragile():
    """With 5 seeds, dfa-biotorch 3.5 pp behind exact in every seed is decided -- and
    fragile: one seed reversed, its adjusted p would not stay below 0.05. fa's mean
    difference carried by one far seed is not decided (the mean test, not the sign-flip
    test, on skewed differences)."""
    records = _fake_records(n=5)
    for s, error in enumerate([11.0, 10.6, 10.4, 10.2, 30.0]):
        records["fa"][s] = _record("fa", s, error)
    claims = evaluate_claims(records, _config(seeds=5))["claims"]
    exact_fa, exact_dfa = claims[:2]
    assert (exact_dfa["a"], exact_dfa["b"]) == ("exact", "dfa-biotorch")
    assert exact_dfa["verdict"] == "supported" and exact_dfa["adjusted_p"] < 0.05
    assert exact_dfa["fragile"] and exact_dfa["reversed_adjusted_p"] >= 0.05
    assert "FRAGILE" in exact_dfa["evidence"]
    assert exact_fa["wins"] == 5 and exact_fa["verdict"] == "not decided with 5 seeds"
    assert not exact_fa["fragile"]


# -- on the real files ----------------------------------------------------------------

def _tree(out: Path) -> set[str]:
    """Every file and folder under ``out``, hidden ones included."""
    return {str(p.relative_to(out)) for p in out.rglob("*")}


def test_quick_study_on_the_real_files(tmp_path):
    """The first screen reads like the other studies' (claims -> verdict -> effect with
    interval -> n / stuck, then what matters, then the table beside BioTorch's numbers);
    the records hold the honest and optimistic selections; nothing is left behind: no
    .progress, .resume, lock or temporary file; a second run skips every job."""
    needs_installed_files()
    out = tmp_path / "bt"
    code, stdout, stderr = run_cli("biotorch", "--quick", *QUICK, "--out", out, "--quiet")
    assert code == 0, stderr
    report = (out / "report.md").read_text()
    lines = report.splitlines()
    assert lines[0].startswith("# BioTorch's LeNet table with seeds: Fashion-MNIST")
    first_screen = "\n".join(lines[:30])
    assert "A reduced run" in first_screen
    assert "| claim | verdict | effect [95% CI] | n / stuck |" in first_screen
    assert "| exact back-propagation has a lower test error than fa | not decided with 2 " \
           "seeds | exact - fa:" in first_screen
    assert "Not tested (a rule they compare was not run): exact back-propagation has a " \
           "lower test error than dfa-biotorch (confirmatory)" in first_screen
    assert "What matters:" in first_screen and "| rule | test error %" in first_screen
    for section in ("## The design, fixed before the run", "## The claims in detail",
                    "## Stuck at chance, then the seeds that learned", "## Every seed",
                    "## Alignment"):
        assert section in report
    records = _records(out)
    assert len(records) == 6
    for record in records.values():
        val, test = record["val_error_pct"], record["test_error_pct"]
        assert len(val) == len(test) == len(record["val_top_share"]) == 2
        assert record["selected_epoch"] == 1 + int(np.argmin(val)) and record["version"] == 2
        assert record["test_error_pct_selected"] == test[record["selected_epoch"] - 1]
        assert record["test_error_pct_best"] == min(test)  # optimistic: never above honest
        assert record["images"] == {"train": 640, "validation": 600, "test": 1000}
        if record["rule"] != "exact":
            assert set(record["alignment"]["gradient"]) == {
                "conv1.weight", "conv2.weight", "conv3.weight", "fc4.weight", "fc5.weight"}
            assert record["alignment_epochs"] == [0, 1, 2]
    figures = {"test_error.png", "curves.png", "alignment.png"}
    for figure in figures:
        assert (out / figure).stat().st_size > 10_000
    assert _tree(out) == {"config.toml", "report.md", "summary.json", "summary.txt",
                          *figures, "runs", *(f"runs/{r}" for r in ("exact", "fa", "usf")),
                          *records}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["rules"]["exact"]["biotorch"] == 9.2
    tested = [(c["a"], c["b"], c["role"]) for c in summary["claims"]["claims"]]
    assert tested == [("exact", "fa", "confirmatory"), ("usf", "exact", "confirmatory"),
                      ("usf", "fa", "exploratory")]
    code, _, stderr = run_cli("biotorch", "--quick", *QUICK, "--out", out, "--quiet")
    assert code == 0, stderr
    again = json.loads((out / "summary.json").read_text())
    assert again["meta"]["skipped_jobs"] == 6 and again["rules"] == summary["rules"]


def test_the_design_check_is_printed_before_training(tmp_path):
    needs_installed_files()
    code, _, stderr = run_cli("biotorch", "--quick", "--rules", "exact,fa", "--seeds", "1",
                              "--epochs", "1", "--out", tmp_path / "bt", "--progress",
                              "lines", "--backend", "sequential")
    assert code == 0, stderr
    first = stderr.splitlines()[0]
    assert first.startswith("biotorch: design check: 1 confirmatory claims at n = 1 seeds")
    assert "[mean] exact back-propagation has a lower test error than fa" in stderr
    assert "UNDECIDABLE at this n" in stderr  # one seed cannot decide a mean


def test_an_interrupted_study_leaves_its_resume_points_and_no_temporaries(tmp_path,
                                                                          monkeypatch):
    """A writer killed while saving a resume point leaves a temporary file named with the
    run's tag in .resume/: the study deletes it (and .progress, and its lock) and keeps
    the finished records; the next run finishes and leaves no .resume at all."""
    needs_installed_files()
    original = biotorch._save_resume

    def killed_mid_write(path, *args, **kwargs):
        if "fa" in path.parts:
            path.parent.mkdir(parents=True, exist_ok=True)
            (path.parent / f".{path.name}.{core_io._temp_tag()}.dead.tmp").write_bytes(b"x")
            raise KeyboardInterrupt
        original(path, *args, **kwargs)

    monkeypatch.setattr(biotorch, "_save_resume", killed_mid_write)
    out = tmp_path / "bt"
    argv = ["biotorch", "--quick", "--rules", "exact,fa", "--seeds", "1", "--out", out,
            "--quiet", "--backend", "sequential"]
    code, _, stderr = run_cli(*argv)
    assert code == 130, stderr
    left = _tree(out)
    assert not [p for p in left if p.endswith(".tmp")], left
    assert not [p for p in left if p.startswith((".progress", ".handprop.lock"))], left
    assert "runs/exact/seed0.json" in left and "runs/fa/seed0.json" not in left
    monkeypatch.setattr(biotorch, "_save_resume", original)
    code, _, stderr = run_cli(*argv)
    assert code == 0, stderr
    assert not [p for p in _tree(out) if p.startswith((".", "runs/.")) or "/." in p]


def _spec(out: Path, **changes) -> dict:
    config = _config(rules=["usf"], seeds=1, epochs=3, train_images=256,
                     validation_images=300, test_images=300, probe=8, claims=[])
    for key, value in changes.items():
        setattr(config, key, value)
    return build_jobs(config, out, 1)[0].spec


def test_an_interrupted_run_resumes_bit_identical(tmp_path, monkeypatch):
    needs_installed_files()
    whole = tmp_path / "whole"
    run_job(_spec(whole))
    broken = tmp_path / "broken"
    saves = []
    original = biotorch._save_resume

    def save_then_stop(*args, **kwargs):
        original(*args, **kwargs)
        saves.append(args[0])
        if len(saves) == 2:
            raise KeyboardInterrupt  # killed right after the second resume point

    monkeypatch.setattr(biotorch, "_save_resume", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        run_job(_spec(broken))
    assert saves[-1].is_file() and not (broken / "runs").exists()
    monkeypatch.setattr(biotorch, "_save_resume", original)
    run_job(_spec(broken))
    assert not saves[-1].exists()  # the resume point is dropped once the record is written
    first, second = _records(whole), _records(broken)
    assert list(first) == list(second)
    for key in first:
        assert _same(first[key], second[key]), key


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_the_memory_estimate_bounds_a_real_run(tmp_path):
    """The estimate the budget checks (estimate_run_bytes on the study's engine, an
    evaluation chunk, the files as read; times the jobs at once, plus the processes)
    against the summed peak of the same run in 2 worker processes: peak <= 1.5 x the
    estimate, and the estimate not a number so large it bounds nothing."""
    from test_faults import _env, _estimate, _measured, _run

    needs_installed_files()
    argv = ["biotorch", "--quick", "--rules", "exact,fa", "--seeds", "1", "--jobs", "2",
            "--train-images", "4000", "--out", "bt", "--quiet"]
    refused = _run(argv, tmp_path, _env(HANDPROP_MEMORY_BUDGET="300M"))  # the files fit
    assert refused.returncode == 2 and len(refused.stderr.splitlines()) == 1, refused.stderr
    assert "biotorch: network 'lenet-biotorch' on 5600 images, 2 jobs at once" in \
        refused.stderr
    estimate = _estimate(refused.stderr)
    code, memory, stderr = _measured(argv, tmp_path)
    assert code == 0, stderr
    peak = memory.peak()
    print(f"biotorch --quick, 2 jobs: estimate {estimate / 1e6:.0f} MB, peak "
          f"{peak / 1e6:.0f} MB")
    assert peak <= 1.5 * estimate
    assert estimate <= 3 * peak


@pytest.mark.slow
def test_dask_cluster_gives_the_local_records(tmp_path):
    needs_installed_files()
    distributed = pytest.importorskip("dask.distributed")
    args = ["--quick", "--rules", "exact,usf", "--seeds", "1", "--quiet"]
    code, _, stderr = run_cli("biotorch", *args, "--out", tmp_path / "local")
    assert code == 0, stderr
    cluster = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
    try:
        with distributed.Client(cluster) as client:
            workers = set(client.run(os.getpid).values())
        code, _, stderr = run_cli("biotorch", *args, "--out", tmp_path / "dask", "--backend",
                                  "dask", "--scheduler", cluster.scheduler_address)
    finally:
        cluster.close()
    assert code == 0, stderr
    local, remote = _records(tmp_path / "local"), _records(tmp_path / "dask")
    assert list(local) == list(remote)
    for key in local:
        assert remote[key]["pid"] in workers
        assert _same(local[key], remote[key]), key
