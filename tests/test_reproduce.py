"""End-to-end tests of ``handprop reproduce``: records, the held-out protocol, summary,
claims, report, figures, sensitivity, config round trip, determinism, pairing and
divergence."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from helpers import load_json as load
from helpers import run_cli

PNG = b"\x89PNG\r\n\x1a\n"
QUICK_EPOCHS, QUICK_SEEDS, QUICK_SENSITIVITY, QUICK_ABLATION_EPOCHS = 5, 2, 1, 3
EXPERIMENTS = {"fc18-20": [18, 20], "fc48-56": [48, 56], "fc28-36": [28, 36]}
RULES = ["exact", "seed-original", "seed-broken", "broken-upstream", "broken-text"]
AS_RUN_RULES = ["seed-original", "seed-broken"]
VARIANT_RULES = {"corrected": RULES, "as-run": AS_RUN_RULES}
LAYERS = {"conv1.weight", "conv2.weight", "fc3.weight", "fc4.weight", "fc5.weight"}
SIGNALS = {"act1", "act2", "act3", "act4"}
METRICS = {"cosine", "angle_deg", "sign_agreement"}
ABLATIONS = {"code": "seed-original", "exact-gradient": "exact", "conv-lr-0.1": "seed-original",
             "frozen-conv": "seed-original"}
SENSITIVITY_EXPERIMENTS = ["fc28-36"]  # the default config's
MAIN_JOBS = len(EXPERIMENTS) * (len(RULES) + len(AS_RUN_RULES))
SENSITIVITY_JOBS = len(SENSITIVITY_EXPERIMENTS) * 2
ABLATION_JOBS = len(ABLATIONS)


def records_of(out: Path) -> dict[str, dict]:
    """Every record under ``out/runs``, by path relative to ``out``."""
    return {p.relative_to(out).as_posix(): load(p) for p in sorted((out / "runs").rglob("*.json"))}


def write_config(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def main_records(out: Path) -> dict[str, dict]:
    return {k: v for k, v in records_of(out).items()
            if not k.startswith(("runs/sensitivity/", "runs/ablation/"))}


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
    expected = {f"runs/{variant}/{experiment}/{rule}/{protocol}-seed{s}.json"
                for variant, rules in VARIANT_RULES.items() for experiment in EXPERIMENTS
                for rule in rules for protocol in ("article", "heldout")
                for s in range(QUICK_SEEDS)}
    expected |= {f"runs/sensitivity/{experiment}/{rule}/seed{s}-{kind}.json"
                 for experiment in SENSITIVITY_EXPERIMENTS for rule in AS_RUN_RULES
                 for s in range(QUICK_SENSITIVITY) for kind in ("ulp", "1e-8")}
    expected |= {f"runs/ablation/{name}/{rule}/article-seed{s}.json"
                 for name, rule in ABLATIONS.items() for s in range(QUICK_SEEDS)}
    assert set(records_of(quick)) == expected


def test_record_contents(quick):
    from handprop.studies.reproduce import build_jobs, load_config

    jobs = build_jobs(load_config(quick / "config.toml"), quick)
    fingerprints = {str(path): job.fingerprint for job in jobs for path in job.outputs}
    for name, record in main_records(quick).items():
        variant, experiment, rule, filename = name.split("/")[1:]
        protocol, seed = filename.removesuffix(".json").split("-seed")
        assert (record["variant"], record["experiment"], record["rule"]) == (
            variant, experiment, rule)
        assert record["protocol"] == protocol and record["seed"] == int(seed)
        assert record["fc"] == EXPERIMENTS[experiment]
        assert record["diverged"] is None, name
        assert len(record["cost"]) == QUICK_EPOCHS
        assert all(isinstance(c, float) and math.isfinite(c) and c > 0 for c in record["cost"])
        correct = record["test_correct"]
        assert record["test_accuracy"] == pytest.approx(np.mean(correct))
        assert len(correct) == (10 if protocol == "article" else 72)
        assert record["train_images"] == (350 if protocol == "article" else 288)
        assert len(record["test_raw"]) == len(correct)
        assert record["alignment_epochs"] == [0, 5]  # before training; every 5 epochs
        _check_alignment(name, rule, record["alignment"])
        assert record["config"]["epochs"] == QUICK_EPOCHS
        assert record["config"]["lr"] == 0.09 and record["config"]["momentum"] == 0.0009
        assert record["engine"] in ("numpy", "compiled")  # the engine that produced it
        share = np.bincount(np.array(record["test_raw"]) >= 0.5, minlength=2).max() / len(correct)
        assert record["predicted_share"] == pytest.approx(share)
        assert record["diagnostics"]["w1a_norm_initial"] > 0
        assert {"handprop", "numpy", "python"} <= set(record["versions"])
        assert record["fingerprint"] == fingerprints[str(quick / name)]


def _check_alignment(name: str, rule: str, alignment: dict | None) -> None:
    if rule == "exact":
        assert alignment is None
        return
    assert set(alignment["gradient"]) == LAYERS, name
    assert set(alignment["signal"]) == SIGNALS, name
    for metrics in [*alignment["gradient"].values(), *alignment["signal"].values()]:
        assert set(metrics) == METRICS, name
        for values in metrics.values():
            assert len(values) == 2  # before training, after epoch 5
        assert all(v is None or 0 <= v <= 180 for v in metrics["angle_deg"])


def test_heldout_split_is_stratified_and_the_seeds_own(quick):
    """Each seed's held-out run scores 72 of the 360 images (36 of each digit), the same
    ones for every rule of that seed, and other ones for another seed."""
    from handprop.studies.reproduce_base import digits

    _, labels = digits()
    records = main_records(quick)
    by_seed = {}
    for name, record in records.items():
        if record["protocol"] != "heldout":
            continue
        index = record["test_index"]
        assert len(set(index)) == 72 and np.bincount(labels[index]).tolist() == [36, 36]
        assert by_seed.setdefault(record["seed"], index) == index, name
    assert by_seed[0] != by_seed[1]


# -- summary, claims, report, figures ----------------------------------------------------

def test_summary_matches_records(quick):
    summary = load(quick / "summary.json")
    records = main_records(quick)
    assert set(summary["variants"]) == set(VARIANT_RULES)
    for variant, experiments in summary["variants"].items():
        assert set(experiments) == set(EXPERIMENTS)
        for experiment, data in experiments.items():
            assert set(data["rules"]) == set(VARIANT_RULES[variant])
            for rule, row in data["rules"].items():
                path = f"runs/{variant}/{experiment}/{rule}"
                article = [records[f"{path}/article-seed{s}.json"] for s in range(QUICK_SEEDS)]
                held = [records[f"{path}/heldout-seed{s}.json"] for s in range(QUICK_SEEDS)]
                assert row["runs"] == QUICK_SEEDS and row["diverged"] == 0
                assert row["final_cost"]["per_seed"] == {
                    str(s): r["cost"][-1] for s, r in enumerate(article)}
                assert row["final_cost"]["mean"] == pytest.approx(
                    np.mean([r["cost"][-1] for r in article]))
                assert row["heldout_accuracy"]["mean"] == pytest.approx(
                    np.mean([r["test_accuracy"] for r in held]))
                assert row["heldout_accuracy"]["n"] == QUICK_SEEDS
    meta = summary["meta"]
    jobs = MAIN_JOBS + SENSITIVITY_JOBS + ABLATION_JOBS
    assert meta["jobs"] == jobs and meta["finished_jobs"] == jobs
    assert meta["skipped_jobs"] == 0 and meta["interrupted"] is False


def _claims(quick: Path) -> list[dict]:
    return load(quick / "summary.json")["findings"]["claims"]["claims"]


def test_claims_come_from_the_config_with_holm_over_the_confirmatory_ones(quick):
    """The config's claims, per pairing: 12 confirmatory (the article's comparative claims
    on three pairings) form the family -- 9 of them testable at 5 epochs -- and are tested
    with the sign test; the exploratory ones are unadjusted. With 2 seeds nothing can be
    decided: every confirmatory verdict says the claim is undecidable."""
    from handprop.studies.reproduce import load_config

    findings = load(quick / "summary.json")["findings"]["claims"]
    config = load_config()
    confirmatory = [c for c in _claims(quick) if c["role"] == "confirmatory"]
    assert len(confirmatory) == 3 * sum(1 for c in config.claims if c.role == "confirmatory")
    tested = [c for c in confirmatory if "p_value" in c]
    assert findings["family"] == len(tested) == 9
    assert "[[reproduce.claims]]" in findings["family_source"]
    for claim in tested:
        assert claim["test"] == "sign" and claim["n"] == QUICK_SEEDS
        assert claim["min_p"] == pytest.approx(2 / 2 ** (QUICK_SEEDS - claim["ties"]))
        assert claim["adjusted_p"] >= claim["p_value"]
        assert claim["verdict"].startswith("undecidable with 2 seeds"), claim
    exploratory = [c for c in _claims(quick) if c["role"] == "exploratory"]
    assert exploratory and all(c["verdict"].startswith("exploratory: ") for c in exploratory)
    assert all(c["adjusted_p"] is None for c in exploratory)
    assert {c["test"] for c in exploratory} == {"mean", "tost"}
    assert len(findings["design"]) == 12  # said before the run, for every confirmatory claim


def test_claim_at_an_epoch_beyond_the_run_is_not_judged(quick):
    """With 5 epochs the article's "lower cost around epoch 250" cannot be tested: it is
    described as not tested, with no p-value."""
    at_250 = [c for c in _claims(quick) if c["metric"] == "cost@250"]
    assert len(at_250) == 3  # one per pairing
    for claim in at_250:
        assert "p_value" not in claim and "not tested" in claim["evidence"]


def test_stuck_and_ablation_findings(quick):
    findings = load(quick / "summary.json")["findings"]
    rows = findings["stuck"]
    assert {(r["pairing"], r["protocol"]) for r in rows} == {
        (p, q) for p in ("code", "as-run", "text") for q in ("article", "heldout")}
    records = records_of(quick)
    for row in rows:
        assert 0 <= row["stuck_broken"] <= row["n"] == QUICK_SEEDS
        assert 0 <= row["p_value"] <= 1
    ablations = findings["ablations"]
    assert set(ablations) == set(ABLATIONS)
    for name, row in ablations.items():
        runs = [records[f"runs/ablation/{name}/{ABLATIONS[name]}/article-seed{s}.json"]
                for s in range(QUICK_SEEDS)]
        assert row["stuck"] == sum(r["train_predicted_share"] >= 0.95 for r in runs)
        assert all(len(r["cost"]) == QUICK_ABLATION_EPOCHS for r in runs)
    frozen = records["runs/ablation/frozen-conv/seed-original/article-seed0.json"]
    before, after = (frozen["diagnostics"][k] for k in ("w1a_norm_initial", "w1a_norm_final"))
    assert before == after  # frozen kernels do not move
    code = records["runs/ablation/code/seed-original/article-seed0.json"]
    assert code["diagnostics"]["w1a_norm_initial"] == before  # the same start
    assert code["diagnostics"]["w1a_norm_final"] != before


def test_report_opens_with_the_summary(quick):
    from handprop.studies.reproduce import load_config

    report = (quick / "report.md").read_text()
    sections = ["## Summary", "## The design, fixed before the run", "## The claims in detail",
                "## Stuck at chance", "## The network the author's code ran", "## Per rule",
                "## What a single run can show", "## Figures", "## Method"]
    assert [report.index(s) for s in sections] == sorted(report.index(s) for s in sections)
    first_screen = report[:report.index("## The design")]
    assert "| pairing, experiment: claim | verdict |" in first_screen
    assert "does not learn" in first_screen and "stuck" in first_screen
    for experiment in load_config().experiments:
        assert experiment.name in report
    for phrase in ("held-out", "unit of replication", "Holm", "as-run", "chance", "stuck",
                   "smallest possible", "Ablations", "exploratory", "reproduce-author.toml",
                   "discontinuity"):
        assert phrase in report, phrase
    for rule in RULES:
        assert rule in report
    for figure in sorted(quick.glob("*.png")):
        assert f"({figure.name})" in report  # every figure is linked


def test_figures_are_png(quick):
    names = {f"cost_{v}_{e}.png" for v in VARIANT_RULES for e in EXPERIMENTS}
    names |= {f"alignment_{e}.png" for e in EXPERIMENTS}
    names |= {f"accuracy_{p}_{v}.png" for p in ("article", "heldout") for v in VARIANT_RULES}
    names |= {"ablations.png"} | {f"sensitivity_{e}.png" for e in SENSITIVITY_EXPERIMENTS}
    assert names == {p.name for p in quick.glob("*.png")}
    for name in names:
        data = (quick / name).read_bytes()
        assert data.startswith(PNG) and len(data) > 1000, name


def test_terminal_summary_file(quick):
    text = (quick / "summary.txt").read_text()
    for experiment in EXPERIMENTS:
        assert experiment in text
    jobs = MAIN_JOBS + SENSITIVITY_JOBS + ABLATION_JOBS
    assert f"{jobs}/{jobs} jobs finished" in text


# -- sensitivity -----------------------------------------------------------------------

def test_sensitivity_base_runs_are_the_study_runs_and_one_weight_moved(quick):
    """The unperturbed row of a sensitivity group is bit for bit the study's own article
    run of that seed; the perturbed rows moved exactly one initial weight."""
    from handprop.core.presets import seed_net
    from handprop.studies.sensitivity import LABELS, _perturb

    records = records_of(quick)
    for experiment in SENSITIVITY_EXPERIMENTS:
        for rule in AS_RUN_RULES:
            study = records[f"runs/corrected/{experiment}/{rule}/article-seed0.json"]
            for kind in ("ulp", "1e-8"):
                record = records[f"runs/sensitivity/{experiment}/{rule}/seed0-{kind}.json"]
                assert record["base_cost"] == study["cost"]
                assert record["base_test_accuracy"] == study["test_accuracy"]
                assert len(record["relative_distance"]) == QUICK_EPOCHS
                steps = 350  # one tracked epoch (--quick)
                assert len(record["step_distance"]) == steps + 1
                assert len(record["step_routing"]) == len(record["step_relu"]) == steps
                assert record["parting"]["label"] in LABELS
    flat = seed_net((18, 20)).init(replicas=[0, 0, 0]).flat
    before = flat.copy()
    (index,) = _perturb(flat, [0])
    assert np.flatnonzero(flat[1] != before[1]).tolist() == [index]
    assert flat[1, index] == np.nextafter(before[0, index], np.inf)
    assert flat[2, index] == before[0, index] + 1e-8
    summary = load(quick / "summary.json")["findings"]["sensitivity"]
    assert set(summary) == set(SENSITIVITY_EXPERIMENTS)
    for data in summary.values():
        assert data["verdict_flips"]["pairs"] == 2 * 2 * QUICK_SENSITIVITY
        assert data["ranking_flips"]["pairs"] == 2 * QUICK_SENSITIVITY


def test_cost_change_is_relative_to_the_larger_cost():
    from handprop.studies.sensitivity import _cost_change

    def change(base: float, moved: float, diverged: bool = False) -> float | None:
        return _cost_change({"diverged": diverged, "base_diverged": False,
                             "cost": [9.0, moved], "base_cost": [9.0, base]})

    assert change(0.001, 1.0) == pytest.approx(0.999)  # not 99,900%
    assert change(2.0, 1.0) == change(1.0, 2.0) == 0.5
    assert change(0.0, 0.0) == 0.0 and change(3.0, 3.0) == 0.0
    assert change(1.0, 2.0, diverged=True) is None


# -- config round trip and determinism -------------------------------------------------

def test_config_toml_reproduces_the_summary(quick, rerun):
    from handprop.studies.reproduce import load_config

    assert load_config(quick / "config.toml") == load_config(rerun / "config.toml")
    first, second = load(quick / "summary.json"), load(rerun / "summary.json")
    assert first["variants"] == second["variants"]
    assert first["findings"]["claims"] == second["findings"]["claims"]


def test_same_seeds_give_identical_records(quick, rerun):
    first, second = records_of(quick), records_of(rerun)
    assert first.keys() == second.keys()
    for name, record in first.items():
        other = second[name]
        for key in ("cost", "test_accuracy", "test_correct", "test_raw", "alignment",
                    "fingerprint", "config", "seed", "diverged", "relative_distance"):
            assert record.get(key) == other.get(key), (name, key)


def test_config_toml_round_trips_any_claim_text(tmp_path):
    """config.toml must read back whatever text the claims hold (quotes, backslashes,
    accents, characters outside the Basic Multilingual Plane)."""
    claim = 'the "broken" net \\ wins: 100% \u00e9t\u00e9 \U0001f642'
    config = write_config(tmp_path / "claim.toml", f"""
[reproduce]
rules = ["exact"]
variant = ["corrected"]
seeds = 1
epochs = 1
heldout = false
sensitivity = 0
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
    summary = load(second / "summary.json")["variants"]["corrected"]["tiny"]
    assert summary["claim"] == claim
    assert load(first / "summary.json")["variants"] == load(second / "summary.json")[
        "variants"]


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
rules = ["exact", "seed-original", "seed-broken", "broken-text"]
variant = ["corrected"]
seeds = 2
first_seed = 3
epochs = 1
sensitivity = 0
probe = 10
[[reproduce.experiments]]
name = "small"
fc = [5, 6]
""")
    code, _, stderr = run_cli("reproduce", "--config", config, "--out", tmp_path / "out",
                              "--quiet", "--backend", "sequential")
    assert code == 0, stderr
    assert len(seen) == 4, sorted(seen)  # one job per rule: article and held-out runs
    groups = list(seen.values())
    expected_seeds = [3, 4, 3, 4]  # article runs, then held-out runs, of seeds 3 and 4
    for group in groups:
        assert group["seeds"] == expected_seeds
        for r, seed in enumerate(expected_seeds):
            np.testing.assert_array_equal(group["flat"][r], seed_net((5, 6)).init(seed).flat)
        for key in ("x", "labels", "test_x"):
            np.testing.assert_array_equal(group[key], groups[0][key])
    assert not np.array_equal(groups[0]["flat"][0], groups[0]["flat"][1])
    assert not np.array_equal(groups[0]["x"][0], groups[0]["x"][2])  # article vs held-out


def test_run_record_does_not_depend_on_its_job_mates(tmp_path):
    """Lockstep replicas are independent: seed 1 trained with seed 0 beside it gives the same
    record as seed 1 trained alone (also when one of them diverges)."""
    body = """
[reproduce]
rules = ["exact", "seed-broken"]
variant = ["corrected"]
seeds = {seeds}
first_seed = {first}
epochs = 3
lr = 1e300
sensitivity = 0
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
        for protocol in ("article", "heldout"):
            a = load(tmp_path / "together" / "runs" / "corrected" / "tiny" / rule /
                     f"{protocol}-seed1.json")
            b = load(tmp_path / "alone" / "runs" / "corrected" / "tiny" / rule /
                     f"{protocol}-seed1.json")
            for key in ("diverged", "cost", "test_accuracy", "test_raw", "alignment"):
                assert a[key] == b[key], (rule, protocol, key, a[key], b[key])


# -- divergence ------------------------------------------------------------------------

def test_diverged_runs_are_recorded_and_counted(tmp_path):
    # lr 1e300 makes the weights overflow in the first epoch (the sigmoid output saturates
    # at lr 1e6 instead, without NaN).
    config = write_config(tmp_path / "diverge.toml", """
[reproduce]
rules = ["exact", "seed-broken"]
variant = ["corrected"]
seeds = 2
epochs = 3
lr = 1e300
sensitivity = 0
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
    assert len(records) == 2 * 2 * 2  # rules x seeds x protocols: nothing dropped
    diverged = {name: r for name, r in records.items() if r["diverged"]}
    assert diverged, "lr 1e300 should make some run diverge"
    for name, record in diverged.items():
        assert record["diverged"]["epoch"] >= 1 and record["diverged"]["step"] >= 1, name
        assert record["test_accuracy"] is None and record["test_correct"] is None
    summary = load(out / "summary.json")["variants"]["corrected"]["boom"]["rules"]
    for rule in ("exact", "seed-broken"):
        article = [records[f"runs/corrected/boom/{rule}/article-seed{s}.json"]
                   for s in range(2)]
        row = summary[rule]
        assert row["runs"] == 2
        assert row["diverged"] == sum(1 for r in article if r["diverged"])
        alive = [r["test_accuracy"] for r in article if not r["diverged"]]
        assert row["test10_accuracy"]["n"] == len(alive)
    assert "diverged" in (out / "report.md").read_text()


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


@pytest.mark.parametrize(("flag", "value", "named"), [
    ("--rules", "exact,nope", "nope"), ("--variant", "whatever", "variant"),
    ("--transform", "flip", "transform"), ("--engine", "gpu", "engine"),
    ("--sensitivity", "3", "sensitivity")])
def test_unknown_values_are_refused(tmp_path, flag, value, named):
    code, _, stderr = run_cli("reproduce", "--quick", flag, value, "--out", tmp_path / "out",
                              "--quiet")
    assert code == 2 and named in stderr and len(stderr.strip().splitlines()) == 1
