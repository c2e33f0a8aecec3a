"""End-to-end tests of ``handprop compare``: records, summary (with the literature
verdicts), report, figures, and a run on MNIST-format (IDX) files with LeNet."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
from helpers import load_json as load
from helpers import run_cli

PNG = b"\x89PNG\r\n\x1a\n"
RULES = ["exact", "fa", "usf", "frsf", "brsf", "dfa", "dfa-biotorch", "seed-broken"]
FEEDBACK = ["fa", "usf", "frsf", "brsf"]  # rules with a feedback matrix B per weight W
SIGN_SYMMETRIC = ["usf", "frsf", "brsf"]
QUICK_EPOCHS, QUICK_SEEDS = 2, 2



@pytest.fixture(scope="module")
def quick(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("compare") / "quick"
    code, _, stderr = run_cli("compare", "--quick", "--out", out, "--quiet")
    assert code == 0, stderr
    assert "Traceback" not in stderr
    return out


def test_records(quick):
    found = {p.relative_to(quick).as_posix() for p in (quick / "runs").rglob("*.json")}
    assert found == {f"runs/{rule}/seed{s}.json" for rule in RULES for s in range(QUICK_SEEDS)}
    test_images = set()
    for rule in RULES:
        for seed in range(QUICK_SEEDS):
            record = load(quick / "runs" / rule / f"seed{seed}.json")
            assert record["rule"] == rule and record["seed"] == seed
            assert record["net"] == "small" and record["data"] == "digits10"
            # auto: the compiled engine's batched layout, except for the article's rule
            # (its max-pool lines are not in that layout): NumPy
            assert record["engine"] == ("numpy" if rule == "seed-broken" else "compiled")
            assert record["diverged"] is None
            assert len(record["cost"]) == QUICK_EPOCHS
            assert all(math.isfinite(c) for c in record["cost"])
            assert 0.0 <= record["test_error"] <= 1.0
            assert record["test_error_epochs"] == [0, 1, 2]  # the error along the way
            assert record["test_error_curve"][-1] == pytest.approx(record["test_error"])
            test_images.add(record["test_images"])
            assert record["config"]["epochs"] == QUICK_EPOCHS
            assert record["config"]["rules"] == RULES
            assert {"handprop", "numpy", "python"} <= set(record["versions"])
            assert len(record["fingerprint"]) == 16
            if rule == "exact":
                assert record["alignment"] is None
                continue
            assert record["alignment_epochs"] == [0, 1, 2]  # --quick measures every epoch
            gradient = record["alignment"]["gradient"]
            assert gradient and record["alignment"]["signal"], rule
            assert list(record["alignment"]["signal"]) == ["act1", "act2", "act3"]
            for metrics in gradient.values():
                assert all(len(v) == QUICK_EPOCHS + 1 for v in metrics.values())
            weights = record["alignment"]["weights"]
            if rule in FEEDBACK:
                assert weights, rule
                for metrics in weights.values():
                    assert {"angle_deg", "norm_ratio", "sign_concordance"} <= set(metrics)
                    assert all(len(v) == QUICK_EPOCHS + 1 for v in metrics.values())
    assert len(test_images) == 1  # the same split size for every rule and seed


def test_summary(quick):
    summary = load(quick / "summary.json")
    rows = summary["rules"]
    assert list(rows) == RULES
    for rule, row in rows.items():
        errors = [load(quick / "runs" / rule / f"seed{s}.json")["test_error"]
                  for s in range(QUICK_SEEDS)]
        assert row["runs"] == QUICK_SEEDS and row["diverged"] == 0
        assert row["test_error_mean"] == pytest.approx(np.mean(errors))
        low, high = row["test_error_ci"]
        assert low <= row["test_error_mean"] <= high
        assert row["test_error_per_seed"] == {str(s): e for s, e in enumerate(errors)}
        if rule == "exact":
            assert row["alignment"] == {} and row["weight_alignment"] == {}
            continue
        assert row["alignment"] and row["signal_alignment"], rule
        for metrics in row["alignment"].values():
            assert 0 <= metrics["angle_deg_final_mean"] <= 180
        if rule in FEEDBACK:
            assert row["weight_alignment"], rule
            for metrics in row["weight_alignment"].values():
                assert {"angle_deg_final_mean", "norm_ratio_final_mean",
                        "sign_concordance_final_mean"} <= set(metrics)
        else:
            assert row["weight_alignment"] == {}, rule
    for rule in SIGN_SYMMETRIC:  # B has the sign of W by construction
        for layer, metrics in rows[rule]["weight_alignment"].items():
            assert metrics["sign_concordance_final_mean"] == pytest.approx(1.0), (rule, layer)
    _check_literature(summary["literature"], rows)
    meta = summary["meta"]
    assert meta["net"] == "small" and meta["jobs"] == len(RULES)
    assert meta["interrupted"] is False


def _check_literature(literature: dict, rows: dict) -> None:
    """The config's claims as paired tests over the seeds: the confirmatory ones (BioTorch's
    and Lillicrap's) Holm-adjusted as one family, the exploratory ones apart; with 2 seeds
    nothing is decided (the sign test's smallest p is 0.5)."""
    claims = literature["claims"]
    confirmatory = [c for c in claims if c["role"] == "confirmatory"]
    assert literature["family"] == len(confirmatory) == 9
    statements = [c["statement"] for c in confirmatory]
    for rule in ["fa", "dfa", "dfa-biotorch"]:
        assert f"exact back-propagation has a lower test error than {rule}" in statements
    for sign in SIGN_SYMMETRIC:
        claim = next(c for c in confirmatory if c["statement"].startswith(sign))
        assert claim["test"] == "tost" and claim["margin"] == 0.01
    lillicrap = [c for c in confirmatory if c["metric"] == "max_signal_angle"]
    assert [c["layer"] for c in lillicrap] == ["act1", "act2", "act3"]
    assert all("held in" in c["evidence"] for c in lillicrap)  # the per-seed count
    updates = [c for c in claims if c["metric"] == "max_update_angle"]
    assert {c["role"] for c in updates} == {"exploratory"}
    assert [c["layer"] for c in updates] == list(rows["fa"]["alignment"])[:-1]  # conv1 too
    for claim in claims:
        assert claim["n"] == QUICK_SEEDS
        if claim["role"] == "confirmatory":
            assert claim["adjusted_p"] >= claim["p_value"]
            assert not claim["verdict"].startswith(("supported", "contradicted")), claim
        else:
            assert claim["adjusted_p"] is None and claim["verdict"].startswith("exploratory")
    assert literature["biotorch"]["source"].startswith("jsalbert/biotorch, Benchmarks.md at "
                                                       "commit 536ea216")
    assert [d["statement"] for d in literature["design"]][-1].endswith("(act3)")
    budget = literature["budget"]
    assert budget["half_epoch"] == 1 and budget["epochs"] == QUICK_EPOCHS
    assert set(budget["rules"]) == set(RULES)


def test_report(quick):
    from handprop.studies.compare_report import BIOTORCH_LENET_MNIST, BIOTORCH_SOURCE

    report = (quick / "report.md").read_text()
    assert report.index("## Summary") < report.index("## Against the literature")
    assert "BioTorch" in report and "Lillicrap" in report and BIOTORCH_SOURCE in report
    for rule, value in BIOTORCH_LENET_MNIST.items():
        assert f"{rule} {value}" in report, rule
    for phrase in ("design check said", "Budget check", "exploratory", "Holm"):
        assert phrase in report, phrase
    summary = load(quick / "summary.json")
    for claim in summary["literature"]["claims"]:
        assert claim["statement"] in report and claim["verdict"] in report
    assert "before* pooling" in report and "after* pooling" in report  # DFA's injection points
    for rule in RULES:
        assert f"| {rule} |" in report


def test_figures(quick):
    for name in ("test_error.png", "cost.png", "alignment_gradient.png", "alignment_signal.png",
                 "alignment_weights.png"):
        data = (quick / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000, name
    assert (quick / "config.toml").is_file()


def write_mnist(folder: Path, train: int = 120, test: int = 30) -> None:
    from handprop.training.data import write_idx

    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, count in (("train", train), ("t10k", test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte",
                  rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte",
                  (np.arange(count) % 10).astype(np.uint8))


def test_idx_data_runs_with_lenet(tmp_path):
    data = tmp_path / "mnist"
    write_mnist(data)
    out = tmp_path / "out"
    code, _, stderr = run_cli("compare", "--quick", "--data", f"idx:{data}", "--epochs", "1",
                              "--rules", "exact,fa", "--out", out, "--quiet")
    assert code == 0, stderr
    records = sorted((out / "runs").rglob("*.json"))
    assert len(records) == 2 * QUICK_SEEDS
    for path in records:
        record = load(path)
        assert record["net"] == "lenet", path
        assert record["data"] == f"idx:{data}"
        assert len(record["cost"]) == 1
        assert record["test_images"] == 30  # the t10k files are the test set
    fa = load(out / "runs" / "fa" / "seed0.json")
    assert fa["alignment"]["gradient"] and fa["alignment"]["weights"]
    summary = load(out / "summary.json")
    assert summary["meta"]["net"] == "lenet"
    assert summary["meta"]["train_images"] == 120 and summary["meta"]["test_images"] == 30
    assert set(summary["rules"]) == {"exact", "fa"}
    metrics = {c["metric"] for c in summary["literature"]["claims"]}
    assert metrics == {"test_error", "max_signal_angle", "max_update_angle"}  # exact vs fa
    assert "lenet" in (out / "report.md").read_text()


def test_idx_folder_without_files_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    code, _, stderr = run_cli("compare", "--quick", "--data", f"idx:{tmp_path / 'empty'}",
                              "--out", tmp_path / "out", "--quiet")
    assert code == 2
    assert stderr.startswith("handprop: error:") and len(stderr.strip().splitlines()) == 1
