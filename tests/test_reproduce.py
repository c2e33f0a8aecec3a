"""End-to-end tests of ``handprop reproduce`` (records, summary, report, figures, config
round trip, determinism, pairing, divergence) and of the statistics in handprop.studies.stats."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import load_json as load
from helpers import run_cli

from handprop.studies import stats

PNG = b"\x89PNG\r\n\x1a\n"
QUICK_EPOCHS, QUICK_SEEDS, QUICK_FOLDS = 5, 2, 2
EXPERIMENTS = {"fc18-20": [18, 20], "fc48-56": [48, 56], "fc28-36": [28, 36]}
RULES = ["exact", "seed-original", "seed-broken", "broken-upstream"]
LAYERS = {"conv1.weight", "conv2.weight", "fc3.weight", "fc4.weight", "fc5.weight"}
METRICS = {"cosine", "angle_deg", "sign_agreement"}






def records_of(out: Path) -> dict[str, dict]:
    """Every record under ``out/runs``, by path relative to ``out``."""
    return {p.relative_to(out).as_posix(): load(p) for p in sorted((out / "runs").rglob("*.json"))}


def write_config(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


@pytest.fixture(scope="module")
def quick(reproduce_quick) -> Path:
    return reproduce_quick


@pytest.fixture(scope="module")
def rerun(quick, tmp_path_factory) -> Path:
    """The study again from its own config.toml, into another folder."""
    out = tmp_path_factory.mktemp("reproduce") / "again"
    code, _, stderr = run_cli("reproduce", "--config", quick / "config.toml", "--out", out,
                              "--quiet")
    assert code == 0, stderr
    return out


# -- records ---------------------------------------------------------------------------

def test_one_record_per_run(quick):
    found = set(records_of(quick))
    expected = {
        f"runs/{experiment}/{rule}/{name}"
        for experiment in EXPERIMENTS for rule in RULES
        for name in [f"seed{s}.json" for s in range(QUICK_SEEDS)]
        + [f"cv-fold{f}.json" for f in range(QUICK_FOLDS)]
    }
    assert found == expected


def test_record_contents(quick):
    from handprop.studies.reproduce import CONFIG_KEYS, build_jobs, load_config

    jobs = build_jobs(load_config(quick / "config.toml"), quick)
    fingerprints = {str(path): job.fingerprint for job in jobs for path in job.outputs}
    for name, record in records_of(quick).items():
        experiment, rule, filename = name.split("/")[1:]
        assert record["experiment"] == experiment and record["rule"] == rule, name
        assert record["fc"] == EXPERIMENTS[experiment]
        protocol = "article" if filename.startswith("seed") else "cv"
        assert record["protocol"] == protocol
        run = int(filename.removesuffix(".json").removeprefix("seed").removeprefix("cv-fold"))
        assert record["run"] == run
        # article: one seed per run; cv: fold k trains with seed first_seed + k
        assert record["seed"] == run
        assert record["diverged"] is None, name
        assert len(record["cost"]) == QUICK_EPOCHS
        assert all(isinstance(c, float) and math.isfinite(c) and c > 0 for c in record["cost"])
        assert 0.0 <= record["test_accuracy"] <= 1.0
        correct = record["test_correct"]
        assert record["test_accuracy"] == pytest.approx(np.mean(correct))
        assert len(correct) == (10 if protocol == "article" else 360 // QUICK_FOLDS)
        assert len(record["test_raw"]) == len(correct)
        if rule == "exact":
            assert record["alignment"] is None
        else:
            gradient = record["alignment"]["gradient"]
            assert set(gradient) == LAYERS, name
            for layer, metrics in gradient.items():
                assert set(metrics) == METRICS, (name, layer)
                for values in metrics.values():
                    assert len(values) == QUICK_EPOCHS + 1  # before training, every epoch
                    assert all(v is not None and math.isfinite(v) for v in values)
                assert all(0 <= a <= 180 for a in metrics["angle_deg"])
        assert set(record["config"]) == {*CONFIG_KEYS, "protocol", "folds"}
        assert record["engine"] == "numpy"  # the engine that produced the record
        assert record["config"]["experiment"] == experiment
        assert record["config"]["rule"] == rule
        assert record["config"]["protocol"] == protocol
        assert record["config"]["epochs"] == QUICK_EPOCHS
        assert record["config"]["lr"] == 0.09 and record["config"]["momentum"] == 0.0009
        # folds only matter to (and only enter the fingerprint of) cross-validation runs
        assert record["config"]["folds"] == (QUICK_FOLDS if protocol == "cv" else None)
        assert {"handprop", "numpy", "python"} <= set(record["versions"])
        assert record["fingerprint"] == fingerprints[str(quick / name)]


def test_cv_tests_every_image_exactly_once(quick):
    records = records_of(quick)
    for experiment in EXPERIMENTS:
        for rule in RULES:
            seen = []
            for fold in range(QUICK_FOLDS):
                record = records[f"runs/{experiment}/{rule}/cv-fold{fold}.json"]
                assert len(record["test_index"]) == len(record["test_correct"])
                seen += record["test_index"]
            assert sorted(seen) == list(range(360)), (experiment, rule)


# -- summary, report, figures ----------------------------------------------------------

def test_summary_matches_records(quick):
    summary = load(quick / "summary.json")
    records = records_of(quick)
    assert set(summary["experiments"]) == set(EXPERIMENTS)
    for experiment, data in summary["experiments"].items():
        assert data["fc"] == EXPERIMENTS[experiment]
        assert set(data["rules"]) == set(RULES)
        for rule, row in data["rules"].items():
            article = [records[f"runs/{experiment}/{rule}/seed{s}.json"]
                       for s in range(QUICK_SEEDS)]
            cv = [records[f"runs/{experiment}/{rule}/cv-fold{f}.json"]
                  for f in range(QUICK_FOLDS)]
            assert row["runs"] == QUICK_SEEDS and row["diverged"] == 0
            assert row["final_cost_mean"] == pytest.approx(np.mean([r["cost"][-1]
                                                                    for r in article]))
            assert row["test_accuracy_mean"] == pytest.approx(
                np.mean([r["test_accuracy"] for r in article]))
            held = [c for r in cv for c in r["test_correct"]]
            assert row["heldout_images"] == 360 and row["heldout_folds"] == QUICK_FOLDS
            assert row["heldout_accuracy_mean"] == pytest.approx(np.mean(held))
            if rule == "exact":
                assert row["alignment"] == {}
                continue
            assert set(row["alignment"]) == LAYERS
            for layer, metrics in row["alignment"].items():
                for metric in METRICS:
                    expected = np.mean([r["alignment"]["gradient"][layer][metric][-1]
                                        for r in article])
                    assert metrics[f"{metric}_final_mean"] == pytest.approx(expected)
    meta = summary["meta"]
    jobs = len(EXPERIMENTS) * len(RULES)  # one job per (experiment, rule): both protocols
    assert meta["jobs"] == jobs and meta["finished_jobs"] == jobs
    assert meta["skipped_jobs"] == 0 and meta["interrupted"] is False
    assert set(summary["claims"]) == set(EXPERIMENTS)


def test_report_mentions_claims_and_heldout_protocol(quick):
    from handprop.studies.reproduce import load_config

    report = (quick / "report.md").read_text()
    for experiment in load_config().experiments:
        assert experiment.name in report
        assert experiment.claim and experiment.claim in report
    assert "held-out" in report and "cross-validation" in report
    assert f"{QUICK_FOLDS}-fold" in report
    for rule in RULES:
        assert rule in report
    for figure in sorted(quick.glob("*.png")):
        assert f"({figure.name})" in report  # every figure is linked


def test_figures_are_png(quick):
    names = {f"cost_{e}.png" for e in EXPERIMENTS} | {f"alignment_{e}.png" for e in EXPERIMENTS}
    names |= {"accuracy_test10.png", "accuracy_heldout_cv.png"}
    assert names <= {p.name for p in quick.glob("*.png")}
    for name in names:
        data = (quick / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000, name


def test_terminal_summary_file(quick):
    text = (quick / "summary.txt").read_text()
    for experiment in EXPERIMENTS:
        assert experiment in text
    assert "12/12 jobs finished" in text


# -- config round trip and determinism -------------------------------------------------

def test_config_toml_reproduces_the_summary(quick, rerun):
    from handprop.studies.reproduce import load_config

    assert load_config(quick / "config.toml") == load_config(rerun / "config.toml")
    first, second = load(quick / "summary.json"), load(rerun / "summary.json")
    assert first["experiments"] == second["experiments"]
    assert first["claims"] == second["claims"]


def test_same_seeds_give_identical_records(quick, rerun):
    first, second = records_of(quick), records_of(rerun)
    assert first.keys() == second.keys()
    for name, record in first.items():
        other = second[name]
        for key in ("cost", "test_accuracy", "test_correct", "test_raw", "alignment",
                    "fingerprint", "config", "seed", "diverged"):
            assert record[key] == other[key], (name, key)


def test_config_toml_round_trips_any_claim_text(tmp_path):
    """config.toml must read back whatever text the claims hold (quotes, backslashes,
    accents, characters outside the Basic Multilingual Plane)."""
    claim = 'the "broken" net \\ wins: 100% \u00e9t\u00e9 \U0001f642'
    config = write_config(tmp_path / "claim.toml", f"""
[reproduce]
rules = ["exact"]
seeds = 1
epochs = 1
folds = 0
probe = 5
[[reproduce.experiments]]
name = "tiny"
fc = [3, 3]
claim = {json.dumps(claim, ensure_ascii=False)}
""")
    first, second = tmp_path / "first", tmp_path / "second"
    code, _, stderr = run_cli("reproduce", "--config", config, "--out", first, "--quiet",
                              "--backend", "sequential")
    assert code == 0, stderr
    code, _, stderr = run_cli("reproduce", "--config", first / "config.toml", "--out", second,
                              "--quiet", "--backend", "sequential")
    assert code == 0, stderr
    assert load(second / "summary.json")["experiments"]["tiny"]["claim"] == claim
    assert load(first / "summary.json")["experiments"] == load(second / "summary.json")[
        "experiments"]


def test_claim_at_an_epoch_beyond_the_run_is_not_judged(quick):
    """With 5 epochs the article's "lower cost around epoch 250" cannot be tested: the
    verdict must say so rather than "not supported"."""
    claims = load(quick / "summary.json")["claims"]["fc18-20"]
    at_250 = [c for c in claims if "epoch 250" in c["statement"]]
    assert len(at_250) == 1
    assert "stats" not in at_250[0]  # nothing was compared: no seed has an epoch 250
    assert "not tested" in at_250[0]["verdict"], at_250[0]["verdict"]


# -- pairing ---------------------------------------------------------------------------

def test_rules_are_paired_same_weights_and_data(tmp_path, monkeypatch):
    """For a seed, every rule's run starts from the weights ``seed_net(fc).init(seed)`` and
    trains on the same images in the same order."""
    import handprop.studies.lockstep
    from handprop.core.presets import seed_net

    seen: dict[str, dict] = {}
    original = handprop.studies.lockstep.train_group

    def spy(net, rule_name, x, labels, test_x, test_labels, *args, **kwargs):
        seen[args[3]] = {  # (config, probe, out, job_id)
            "flat": net.flat.copy(), "seeds": list(net.replica_seeds), "x": x.copy(),
            "labels": labels.copy(), "test_x": test_x.copy(), "rule": rule_name}
        return original(net, rule_name, x, labels, test_x, test_labels, *args, **kwargs)

    monkeypatch.setattr(handprop.studies.lockstep, "train_group", spy)
    config = write_config(tmp_path / "pair.toml", """
[reproduce]
rules = ["exact", "seed-original", "seed-broken", "broken-upstream"]
seeds = 2
first_seed = 3
epochs = 1
folds = 2
probe = 10
[[reproduce.experiments]]
name = "small"
fc = [5, 6]
""")
    code, _, stderr = run_cli("reproduce", "--config", config, "--out", tmp_path / "out",
                              "--quiet", "--backend", "sequential")
    assert code == 0, stderr
    assert len(seen) == 4, sorted(seen)  # one job per rule: article runs and cv folds
    groups = list(seen.values())
    assert {g["rule"] for g in groups} == set(RULES)
    expected_seeds = [3, 4, 3, 4]  # article: seeds 3, 4; cv: fold k uses first_seed + k
    for group in groups:
        assert group["seeds"] == expected_seeds
        for r, seed in enumerate(expected_seeds):
            np.testing.assert_array_equal(group["flat"][r], seed_net((5, 6)).init(seed).flat)
        np.testing.assert_array_equal(group["x"], groups[0]["x"])
        np.testing.assert_array_equal(group["labels"], groups[0]["labels"])
        np.testing.assert_array_equal(group["test_x"], groups[0]["test_x"])
    assert not np.array_equal(groups[0]["flat"][0], groups[0]["flat"][1])
    assert not np.array_equal(groups[0]["x"][0], groups[0]["x"][1])


def test_run_record_does_not_depend_on_its_job_mates(tmp_path):
    """Lockstep replicas are independent: seed 1 trained with seed 0 beside it gives the same
    record as seed 1 trained alone (also when one of them diverges)."""
    body = """
[reproduce]
rules = ["exact", "seed-broken"]
seeds = {seeds}
first_seed = {first}
epochs = 3
lr = 1e300
folds = 0
probe = 10
[[reproduce.experiments]]
name = "tiny"
fc = [4, 4]
"""
    together = write_config(tmp_path / "together.toml", body.format(seeds=2, first=0))
    alone = write_config(tmp_path / "alone.toml", body.format(seeds=1, first=1))
    for config in (together, alone):
        code, _, stderr = run_cli("reproduce", "--config", config, "--out",
                                  tmp_path / config.stem, "--quiet", "--backend", "sequential")
        assert code == 0, stderr
    for rule in ("exact", "seed-broken"):
        a = load(tmp_path / "together" / "runs" / "tiny" / rule / "seed1.json")
        b = load(tmp_path / "alone" / "runs" / "tiny" / rule / "seed1.json")
        for key in ("diverged", "cost", "test_accuracy", "test_raw", "alignment"):
            assert a[key] == b[key], (rule, key, a[key], b[key])


# -- divergence ------------------------------------------------------------------------

def test_diverged_runs_are_recorded_and_counted(tmp_path):
    # lr 1e300 makes the weights overflow in the first epoch (the sigmoid output saturates
    # at lr 1e6 instead, without NaN).
    config = write_config(tmp_path / "diverge.toml", """
[reproduce]
rules = ["exact", "seed-broken"]
seeds = 2
epochs = 3
lr = 1e300
folds = 2
probe = 10
[[reproduce.experiments]]
name = "boom"
fc = [4, 4]
claim = "this one blows up"
""")
    out = tmp_path / "out"
    code, _, stderr = run_cli("reproduce", "--config", config, "--out", out, "--quiet",
                              "--backend", "sequential")
    assert code == 0, stderr
    records = records_of(out)
    assert len(records) == 2 * (2 + 2)  # nothing dropped
    diverged = {name: r for name, r in records.items() if r["diverged"]}
    assert diverged, "lr 1e300 should make some run diverge"
    for name, record in diverged.items():
        assert record["diverged"]["epoch"] >= 1 and record["diverged"]["step"] >= 1, name
        assert record["test_accuracy"] is None and record["test_correct"] is None
        assert all(c is None for c in record["cost"][record["diverged"]["epoch"] - 1:])
    summary = load(out / "summary.json")["experiments"]["boom"]["rules"]
    for rule in ("exact", "seed-broken"):
        article = [records[f"runs/boom/{rule}/seed{s}.json"] for s in range(2)]
        row = summary[rule]
        assert row["runs"] == 2
        assert row["diverged"] == sum(1 for r in article if r["diverged"])
        alive = [r["test_accuracy"] for r in article if not r["diverged"]]
        if alive:
            assert row["test_accuracy_mean"] == pytest.approx(np.mean(alive))
        else:
            assert row["test_accuracy_mean"] is None and row["final_cost_mean"] is None
    assert sum(row["diverged"] for row in summary.values()) >= 1
    report = (out / "report.md").read_text()
    assert "diverged" in report
    assert (out / "summary.txt").read_text().count("boom") >= 1


# -- refused input ---------------------------------------------------------------------

@pytest.mark.parametrize("folds", ["7", "1", "-1"])
def test_folds_that_do_not_divide_360_are_refused(tmp_path, folds):
    out = tmp_path / "out"
    code, stdout, stderr = run_cli("reproduce", "--quick", "--folds", folds, "--out", out,
                                   "--quiet")
    assert code == 2
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("handprop: error:") and "folds" in lines[0]
    assert "Traceback" not in stderr
    assert not out.exists()


def test_unknown_rule_is_refused(tmp_path):
    code, _, stderr = run_cli("reproduce", "--quick", "--rules", "exact,nope", "--out",
                              tmp_path / "out", "--quiet")
    assert code == 2 and "nope" in stderr and len(stderr.strip().splitlines()) == 1


# -- statistics ------------------------------------------------------------------------

def test_bootstrap_ci_covers_the_mean():
    rng = np.random.default_rng(1)
    for n in (3, 10, 50):
        values = rng.normal(5.0, 2.0, size=n)
        low, high = stats.bootstrap_ci(values)
        assert low < values.mean() < high
        assert low >= values.min() and high <= values.max()
    assert stats.bootstrap_ci(np.array([2.0, 2.0, 2.0])) == (2.0, 2.0)
    assert stats.bootstrap_ci(np.array([1.0, np.nan, 3.0])) == stats.bootstrap_ci([1.0, 3.0])
    assert all(math.isnan(v) for v in stats.bootstrap_ci(np.array([])))
    # seeded: the same interval every time
    assert stats.bootstrap_ci([1.0, 4.0, 2.0]) == stats.bootstrap_ci([1.0, 4.0, 2.0])


def test_sign_flip_test():
    assert stats.sign_flip_test(np.zeros(10)) == 1.0
    consistent = np.array([0.5, 1.0, 1.5, 2.0, 0.7, 1.2, 0.9, 1.1])
    # exact enumeration: only all-plus and all-minus reach the observed |mean|: 2 / 2^8
    assert stats.sign_flip_test(consistent) == pytest.approx(2 / 256)
    assert stats.sign_flip_test(-consistent) == pytest.approx(2 / 256)
    assert stats.sign_flip_test(np.linspace(0.5, 2.0, 20)) < 0.01  # Monte Carlo branch
    mixed = np.array([1.0, -1.0, 2.0, -2.0, 0.5, -0.5, 1.5, -1.5])
    assert stats.sign_flip_test(mixed) == 1.0


def test_mcnemar_exact_values():
    # A right and B wrong on 1 item, B right and A wrong on 5, both right on 4:
    # n = 6, p = 2 * (C(6,0) + C(6,1)) / 2^6 = 14 / 64.
    a = np.array([1, 0, 0, 0, 0, 0, 1, 1, 1, 1], bool)
    b = np.array([0, 1, 1, 1, 1, 1, 1, 1, 1, 1], bool)
    result = stats.mcnemar_test(a, b)
    assert (result["a_only"], result["b_only"]) == (1, 5)
    assert result["p_value"] == pytest.approx(14 / 64)
    # 0 vs 6 discordant: 2 / 64
    assert stats.mcnemar_test(np.zeros(6, bool), np.ones(6, bool))["p_value"] == \
        pytest.approx(2 / 64)
    # balanced discordance and no discordance: p = 1
    assert stats.mcnemar_test([1, 1, 0, 0], [0, 0, 1, 1])["p_value"] == 1.0
    assert stats.mcnemar_test([1, 0, 1], [1, 0, 1]) == {"a_only": 0, "b_only": 0,
                                                        "p_value": 1.0}


def test_paired_summary_drops_nonfinite_pairs():
    a = np.array([1.0, 2.0, np.nan, 4.0])
    b = np.array([0.5, 1.0, 1.0, np.inf])
    result = stats.paired_summary(a, b)
    assert result["n"] == 2 and result["dropped"] == 2
    assert result["mean_diff"] == pytest.approx(0.75)
    assert result["a_higher"] == 2 and result["a_lower"] == 0
