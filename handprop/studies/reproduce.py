"""``handprop reproduce``: the article's original-vs-broken experiments, over many seeds.

Every run uses the article's training protocol (online SGD, 500 epochs, lr 0.09, alpha
0.0009, standard-normal weights, raw pixels; :mod:`handprop.core.article`). For each
*variant* of the network, experiment (dense widths) and rule, every seed trains:

* **article** -- the article's run: shuffle the 360 images of 0 and 1 with the seed,
  hold out the first 10, train on 350, score the 10;
* **heldout** -- the same seed on a stratified 80% split drawn from the seed's own
  stream (288 images), scored on the other 20% (72): one held-out accuracy per seed;
* or, with ``folds = k``, k-fold cross-validation per seed (every image scored once per
  seed; the seed's accuracy is the mean over its folds).

The unit of replication is the trained network: every statistic of the report is
computed over seeds, paired by seed (every rule starts from the seed's weights and sees
the seed's data in the same order). The variants:

* ``corrected`` -- the network the article's text describes (the ``seed`` preset);
* ``as-run`` -- the network the author's code ran (``seed-as-run``: layer 2 applies
  conv1's second kernel to all four maps), trained with the code's rules.

A sensitivity section reruns a few seeds with one initial weight moved by one ulp and
by 1e-8 (:mod:`.sensitivity`). All runs of one (variant, experiment, rule) are replicas
of one network trained in lockstep.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.io import check_name, write_json
from ..core.limits import MAX_SEED, MAX_WIDTH
from .ablations import (
    SETUPS,
    ablation_jobs,
    diagnostics,
    mechanism,
    rule_for,
    summarize_ablations,
)
from .claims import design_text, parse_claims
from .records import collect, cost_matrix, final_alignment
from .reproduce_base import (
    ABLATIONS,
    IMAGES,
    PAIRING_KEYS,
    SEEDINGS,
    TRANSFORMS,
    VARIANTS,
    Experiment,
    Records,
    ReproduceClaim,
    ReproduceConfig,
    initialise,
    is_stuck,
    metric_bounds,
    metric_info,
    metric_value,
    padded,
    parse_experiments,
    per_seed,
    record_path,
    split_for,
    stuck_ranges,
)
from .reproduce_claims import design, evaluate_claims, stuck_comparisons
from .reproduce_report import markdown, terminal_summary, write_figures
from .runner import Job
from .sensitivity import sensitivity_jobs, summarize_sensitivity
from .statistics import mean_interval, proportion_interval, two_part_interval
from .study import Study, register_study

__all__ = ["Experiment", "ReproduceConfig", "ReproduceStudy", "build_jobs", "load_config",
           "run_job", "summarize", "validate_config"]

RECORD_VERSION = 3


def validate_config(config: ReproduceConfig, source: str = "config") -> ReproduceConfig:
    """Check a config: every field's type and bounds, then the rules below."""
    return ReproduceStudy.check_config(config, source)


def _check_rules(config: ReproduceConfig, source: str) -> ReproduceConfig:
    """What the field types and bounds (checked first) do not say."""
    if not config.experiments:
        raise ConfigError(f"{source}: no experiments")
    for experiment in config.experiments:
        check_name(experiment.name, f"{source}: experiment")
    names = [e.name for e in config.experiments]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: experiment names must be unique, got {names}")
    last = config.first_seed + config.seeds - 1
    if last > MAX_SEED:
        raise ConfigError(f"{source}: seeds {config.first_seed}..{last} go beyond the largest "
                          f"seed, {MAX_SEED}")
    if config.folds == 1 or (config.folds and IMAGES % config.folds):
        raise ConfigError(f"{source}: folds must be 0 (none) or divide the 360 images into "
                          f"equal folds (2, 3, 4, 5, 6, 8, 9, 10, ...), got {config.folds}")
    for name in ("lr", "momentum"):
        value = getattr(config, name)
        if value < 0 or (name == "lr" and value == 0):
            raise ConfigError(f"{source}: {name} must be {'> 0' if name == 'lr' else '>= 0'}, "
                              f"got {value!r}")
    _check_rule_lists(config, source)
    if config.transform not in TRANSFORMS:
        raise ConfigError(f"{source}: transform must be one of {', '.join(TRANSFORMS)}, "
                          f"got {config.transform!r}")
    if config.sensitivity > config.seeds:
        raise ConfigError(f"{source}: sensitivity ({config.sensitivity}) cannot exceed seeds "
                          f"({config.seeds})")
    from ..training.epoch import ENGINES

    if config.engine not in ENGINES:
        raise ConfigError(f"{source}: engine must be one of {', '.join(ENGINES)}, "
                          f"got {config.engine!r}")
    _check_extras(config, source, set(names))
    return config


def _check_extras(config: ReproduceConfig, source: str, names: set[str]) -> None:
    """Seeding, ablations, sensitivity experiments and claims."""
    if config.seeding not in SEEDINGS:
        raise ConfigError(f"{source}: seeding must be one of {', '.join(SEEDINGS)}, got "
                          f"{config.seeding!r}")
    unknown = sorted(set(config.ablations) - set(ABLATIONS))
    if unknown or len(set(config.ablations)) != len(config.ablations):
        raise ConfigError(f"{source}: ablations must be distinct names among "
                          f"{', '.join(ABLATIONS)}, got {config.ablations}")
    if len(config.ablation_fc) != 2 or not all(1 <= w <= MAX_WIDTH for w in config.ablation_fc):
        raise ConfigError(f"{source}: ablation_fc must be two widths in 1..{MAX_WIDTH}, got "
                          f"{config.ablation_fc}")
    missing = sorted(set(config.sensitivity_experiments) - names)
    if missing:
        raise ConfigError(f"{source}: sensitivity_experiments names unknown experiment(s) "
                          f"{', '.join(missing)}")
    for i, claim in enumerate(config.claims, start=1):
        where = f"{source}: claim {i}"
        if claim.experiment not in names:
            raise ConfigError(f"{where}: unknown experiment {claim.experiment!r}")
        if not claim.pairings or set(claim.pairings) - set(PAIRING_KEYS):
            raise ConfigError(f"{where}: pairings must list some of {', '.join(PAIRING_KEYS)}, "
                              f"got {claim.pairings}")
        if {claim.a, claim.b} != {"broken", "original"}:
            raise ConfigError(f"{where}: the arms are broken and original, got {claim.a!r} "
                              f"and {claim.b!r}")
        try:
            metric_info(claim.metric)
        except ConfigError as exc:
            raise ConfigError(f"{where}: {exc}") from None


def _check_rule_lists(config: ReproduceConfig, source: str) -> None:
    from ..rules import RULES

    if not config.variant or set(config.variant) - set(VARIANTS):
        raise ConfigError(f"{source}: variant must list some of {', '.join(VARIANTS)}, got "
                          f"{config.variant!r}")
    if len(set(config.variant)) != len(config.variant):
        raise ConfigError(f"{source}: variants repeat: {config.variant}")
    for what in ("rules", "as_run_rules"):
        rules = getattr(config, what)
        if not rules and (what == "rules" or "as-run" in config.variant):
            raise ConfigError(f"{source}: no {what}")
        for rule in rules:
            if rule not in RULES:
                raise ConfigError(f"{source}: unknown rule {rule!r} in {what}; choose from "
                                  f"{', '.join(RULES)}")
        if len(set(rules)) != len(rules):
            raise ConfigError(f"{source}: {what} repeat: {rules}")


def load_config(path: str | Path | None = None) -> ReproduceConfig:
    """The default study, or the ``[reproduce]`` table of a TOML file."""
    return ReproduceStudy.load_config(path)


# -- one job: a group of runs in lockstep ----------------------------------------------

def runs_of(config: ReproduceConfig) -> list[dict[str, Any]]:
    """Every run of one (variant, experiment, rule): its protocol, seed (and fold)."""
    runs = [{"protocol": "article", "seed": seed} for seed in config.seed_list]
    if config.folds:
        runs += [{"protocol": "fold", "seed": seed, "fold": fold}
                 for seed in config.seed_list for fold in range(config.folds)]
    elif config.heldout:
        runs += [{"protocol": "heldout", "seed": seed} for seed in config.seed_list]
    return runs


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Train every run of one (variant, experiment, rule) in lockstep; write their records.

    The article's runs (350 training images) and the held-out runs (288) are replicas
    of one network; the shorter ones sit out the last steps of each epoch (``fit``'s
    ``counts``), so every run ends exactly as it would alone. An ablation job trains the
    as-run network with its ablation's rule (:mod:`.ablations`).
    """
    from ..core.presets import PRESETS
    from ..training.epoch import EngineNotice
    from ..training.loop import TrainConfig, evaluate
    from .lockstep import train_group  # looked up per call: tests spy on it

    runs, fc = spec["runs"], tuple(spec["fc"])
    datasets = [split_for(run, spec["folds"], spec["seeding"]) for run in runs]
    net = PRESETS[VARIANTS[spec["network"]]](fc)
    initialise(net, [run["seed"] for run in runs], fc, spec["seeding"])
    initial_w1a = net.params["conv1.weight"][:, 0].copy()
    config = TrainConfig(epochs=spec["epochs"], batch_size=1, optimizer="momentum",
                         lr=spec["lr"], momentum=spec["momentum"], seed=runs[0]["seed"])
    rule = rule_for(spec["ablation"]) if spec["ablation"] else spec["rule"]
    x_train = padded([d.x_train for d in datasets])
    with warnings.catch_warnings():
        # the scaled rules of the ablations have no compiled form: NumPy, as documented
        warnings.simplefilter("ignore", EngineNotice)
        result = train_group(net, rule, x_train, padded([d.y_train for d in datasets]),
                             padded([d.x_test for d in datasets]),
                             padded([d.y_test for d in datasets]), config, spec["probe"],
                             spec["out"], spec["job_id"], weight_metrics=False,
                             counts=[len(d.y_train) for d in datasets], engine=spec["engine"],
                             # the study's transform is broken-text's (the article's text rule)
                             transform=(spec["transform"] if spec["rule"] == "broken-text"
                                        else None),
                             align_every=spec["align_every"])
    with np.errstate(all="ignore"):
        measured = diagnostics(net, x_train, initial_w1a)
        on_train = evaluate(net, x_train, padded([d.y_train for d in datasets])).predicted
    for r, (run, data) in enumerate(zip(runs, datasets, strict=True)):
        record = _record(spec, r, run, data, result)
        record["diagnostics"] = None if record["diverged"] else measured[r]
        record["train_predicted_share"] = None if record["diverged"] else _share(
            on_train[r, :len(data.y_train)])
        write_json(Path(spec["outputs"][r]), record)
    return {"job_id": spec["job_id"], "seconds": result.seconds, "runs": len(runs)}


def _share(predicted: np.ndarray) -> float:
    """The largest share of images given one class."""
    return float(np.bincount(predicted, minlength=2).max() / len(predicted))


def _record(spec: dict[str, Any], r: int, run: dict[str, Any], data, result) -> dict[str, Any]:
    """The record of replica ``r`` (one run) of a trained group."""
    from .records import rounded, versions

    history, evaluation = result.history, result.evaluation
    diverged = history.diverged[r]
    tested = len(data.y_test)  # the group's test sets are padded to the longest
    predicted = evaluation.predicted[r, :tested]
    correct = (predicted == data.y_test).tolist()
    return {
        "version": RECORD_VERSION, "fingerprint": spec["fingerprint"],
        "variant": spec["variant"], "network": spec["network"],
        "experiment": spec["experiment"], "fc": list(spec["fc"]),
        "rule": spec["rule"], "protocol": run["protocol"], "seed": run["seed"],
        "fold": run.get("fold"), "cost": rounded(history.cost_list(r)), "diverged": diverged,
        "train_images": len(data.y_train),
        "test_accuracy": None if diverged else float(np.mean(correct)),
        "test_correct": None if diverged else correct,
        "predicted_share": None if diverged else _share(predicted),
        "test_index": data.info.get("test_index"),
        "test_raw": rounded(evaluation.raw[r, :tested, 0].tolist()),
        "alignment": result.alignment.as_lists(r) if spec["rule"] != "exact" else None,
        "alignment_epochs": result.alignment_epochs,
        "alignment_probe": f"first {spec['probe']} training images",
        "config": {key: spec[key] for key in ("epochs", "lr", "momentum", "probe", "folds",
                                              "transform", "align_every", "seeding",
                                              "ablation")},
        "engine": result.history.extra.get("engine"),
        "seconds_for_job": result.seconds, "replicas_in_job": len(spec["runs"]),
        "pid": os.getpid(),  # the process that trained it (not part of the results)
        "versions": versions(),
    }


def build_jobs(config: ReproduceConfig, out: Path) -> list[Job]:
    """One job per (variant, experiment, rule), the as-run ablations and the sensitivity
    jobs, in the order the workers take them: the ablations that run on the NumPy engine
    between the first, largest compiled jobs (a worker busy with one needs no compiled
    kernels while the other compiles them), then the largest networks first (the long
    jobs start early and the cores finish together), the compiled ablations last."""
    runs = runs_of(config)
    ablation = Experiment("ablation", (config.ablation_fc[0], config.ablation_fc[1]))
    ablations = ablation_jobs(config, out, lambda name, article_runs: _job(
        config, out, "ablation", ablation, SETUPS[name][0], article_runs, name))
    on_numpy = [job for job in ablations if SETUPS[job.spec["ablation"]][1] is not None]
    compiled = [job for job in ablations if job not in on_numpy]
    main = [_job(config, out, variant, experiment, rule, runs)
            for variant in config.variant
            for experiment in sorted(config.experiments, key=lambda e: -e.fc[0] * e.fc[1])
            for rule in config.rules_of(variant)]
    jobs: list[Job] = []
    for i, job in enumerate(on_numpy):
        jobs += [job, *main[i:i + 1]]
    jobs += main[len(on_numpy):]
    return jobs + sensitivity_jobs(config, out) + compiled


def _job(config: ReproduceConfig, out: Path, variant: str, experiment: Experiment, rule: str,
         runs: list[dict[str, Any]], ablation: str | None = None) -> Job:
    """A job training ``runs`` of one rule on one experiment's network; an ablation job
    (``variant`` "ablation") records under the ablation's name, on the as-run network,
    for ``ablation_epochs``."""
    name = ablation or experiment.name
    outputs = [record_path(out, variant, name, rule, run) for run in runs]
    epochs = config.ablation_epochs if ablation else config.epochs
    spec = {"job_id": f"{variant}/{name}/{rule}", "out": str(out), "variant": variant,
            "network": "as-run" if ablation else variant, "experiment": name,
            "fc": list(experiment.fc), "rule": rule, "ablation": ablation, "runs": runs,
            "epochs": epochs, "lr": config.lr, "momentum": config.momentum,
            "probe": config.probe, "folds": config.folds, "transform": config.transform,
            "engine": config.engine, "align_every": config.align_every,
            "seeding": config.seeding, "outputs": [str(p) for p in outputs]}
    return Job(spec["job_id"], "handprop.studies.reproduce:run_job", spec, outputs,
               steps=epochs * 350)


# -- aggregation -----------------------------------------------------------------------

def load_records(jobs: list[Job]) -> Records:
    """Records with the study's current settings, by (variant, experiment, rule,
    protocol); the sensitivity runs under variant "sensitivity"."""
    found: Records = {}
    for records in collect(jobs).values():
        for record in records:
            key = (record["variant"], record["experiment"], record["rule"],
                   record["protocol"])
            found.setdefault(key, []).append(record)
    return found


def summarize(records: Records, config: ReproduceConfig) -> dict[str, Any]:
    """The numbers of ``summary.json``: per variant, experiment and rule (per-seed values
    first, then their mean with an interval over seeds)."""
    summary: dict[str, Any] = {}
    for variant in config.variant:
        for experiment in config.experiments:
            rows = {rule: _rule_summary(records, variant, experiment.name, rule)
                    for rule in config.rules_of(variant)}
            summary.setdefault(variant, {})[experiment.name] = {
                "fc": list(experiment.fc), "claim": experiment.claim, "rules": rows}
    return summary


def _rule_summary(records: Records, variant: str, experiment: str, rule: str
                  ) -> dict[str, Any]:
    article = records.get((variant, experiment, rule, "article"), [])
    heldout = (records.get((variant, experiment, rule, "heldout"), [])
               or records.get((variant, experiment, rule, "fold"), []))
    row: dict[str, Any] = {"runs": len(article),
                           "diverged": sum(1 for r in article if r["diverged"])}
    for name, runs in (("final_cost", article), ("test10_accuracy", article),
                       ("heldout_accuracy", heldout)):
        images = runs[0]["train_images"] if runs else 350
        row[name] = metric_summary(runs, metric_value(name), stuck_ranges(images)[name],
                                   metric_bounds(name, images))
    row["test10_all_correct"] = sum(1 for v in row["test10_accuracy"]["per_seed"].values()
                                    if v == 1.0)
    row["alignment"] = final_alignment(article)
    row["signal_alignment"] = final_alignment(article, "signal")
    row["cost_curve_seeds"] = cost_matrix(article).shape[0]
    return row


def metric_summary(runs: list[dict], value, stuck_range: tuple[float, float],
                   bounds: tuple[float, float]) -> dict[str, Any]:
    """One metric of one rule over seeds, as a two-part outcome: the per-seed values and
    stuck flags, the stuck fraction (exact interval), the mean among seeds that learned
    (bootstrap-t interval) and the mean over all seeds (two-part interval)."""
    values = per_seed(runs, value)
    flags = per_seed(runs, lambda r: None if is_stuck(r) is None else float(is_stuck(r)))
    seeds = [s for s in values if np.isfinite(values[s]) and np.isfinite(flags.get(s, np.nan))]
    x = np.array([values[s] for s in seeds])
    stuck = np.array([flags[s] >= 0.5 for s in seeds], dtype=bool)
    k, n = int(stuck.sum()), len(seeds)
    out: dict[str, Any] = {"per_seed": values, "stuck_per_seed": {s: bool(flags[s] >= 0.5)
                                                                  for s in seeds},
                           "n": n, "stuck": k, "stuck_ci": list(proportion_interval(k, n)),
                           "mean": float(x.mean()) if n else None, "ci": None,
                           "ci_method": None, "learned_mean": None, "learned_ci": None}
    if n:
        overall = two_part_interval(x, stuck, stuck_range=stuck_range, bounds=bounds)
        out.update({"ci": [overall.low, overall.high], "ci_method": overall.method})
    if n - k:
        learned = mean_interval(x[~stuck], bounds=bounds)
        out.update({"learned_mean": float(x[~stuck].mean()),
                    "learned_ci": [learned.low, learned.high]})
    return out


def _mechanisms(records: Records, config: ReproduceConfig) -> dict[str, Any]:
    """The mechanism numbers (:func:`.ablations.mechanism`) of the article runs of the
    as-run network's rules and, for contrast, of exact back-propagation on the corrected
    network, over all experiments."""
    out = {}
    for variant, rule in [("as-run", r) for r in config.as_run_rules] + [("corrected", "exact")]:
        if variant in config.variant and rule in config.rules_of(variant):
            rows = [r for e in config.experiments
                    for r in records.get((variant, e.name, rule, "article"), [])]
            out[f"{variant} {rule}"] = mechanism(rows)
    return out


# -- the study ---------------------------------------------------------------------

@register_study
class ReproduceStudy(Study):
    """The article's experiments: the skeleton with this module's jobs, summary and the
    claims of :mod:`.reproduce_claims`."""

    name = "reproduce"
    help = "the article's experiments, many seeds, statistics, plots, report"
    config_class = ReproduceConfig
    default_out = "results"
    quick = {"epochs": 5, "seeds": 2, "sensitivity": 1, "track_epochs": 1, "ablation_epochs": 3}
    quick_help = ("a smoke run: 5 epochs, 2 seeds, 1 sensitivity seed, 3 epochs of "
                  "ablations")
    flag_order = ("seeds", "first_seed", "epochs", "rules", "variant", "transform", "folds",
                  "seeding", "ablation_epochs", "sensitivity", "sensitivity_experiments",
                  "track_epochs", "probe", "align_every", "engine")
    order = 40
    summary_key, findings_key = "variants", "findings"

    @classmethod
    def config_from_table(cls, table: dict[str, Any], source: str) -> ReproduceConfig:
        experiments = parse_experiments(table.get("experiments", []), source)
        claims = parse_claims(table.get("claims", []), source, ReproduceClaim)
        return super().config_from_table({**table, "experiments": experiments,
                                          "claims": claims}, source)

    @classmethod
    def validate_config(cls, config: ReproduceConfig, source: str = "config"
                        ) -> ReproduceConfig:
        return _check_rules(config, source)

    def build_jobs(self) -> list[Job]:
        return build_jobs(self.config, self.out)

    def memory_needed(self, jobs: list[Job]) -> list[tuple[str, int]]:
        """The largest experiment's group of runs (seeds and held-out runs as replicas
        of one network), times the jobs that run at once."""
        from ..core.presets import seed_net
        from ..training.memory import estimate_run_bytes

        replicas = len(runs_of(self.config))
        largest = max(self.config.experiments, key=lambda e: e.fc[0] * e.fc[1])
        per_job = estimate_run_bytes(seed_net(largest.fc), replicas, batch=1,
                                     samples=IMAGES, engine=self.config.engine)
        at_once = self.concurrent_jobs(jobs)
        return [(f"reproduce: {replicas} runs of experiment {largest.name} (dense "
                 f"{largest.fc[0]}/{largest.fc[1]}) per job, {at_once} job"
                 f"{'s' if at_once > 1 else ''} at once", per_job * at_once)]

    def load_records(self, jobs: list[Job]) -> Records:
        return load_records(jobs)

    def summarize(self, records: Records) -> dict[str, Any]:
        return summarize(records, self.config)

    def findings(self, records: Records, summary: dict[str, Any]) -> dict[str, Any]:
        engines = sorted({str(r.get("engine")) for rows in records.values() for r in rows})
        return {"claims": evaluate_claims(records, self.config),
                "stuck": stuck_comparisons(records, self.config),
                "ablations": summarize_ablations(records, self.config),
                "mechanism": _mechanisms(records, self.config),
                "sensitivity": summarize_sensitivity(records, self.config), "engines": engines}

    def design_check(self) -> list[str]:
        return design_text(design(self.config))

    def write_figures(self, records: Records, summary: dict[str, Any]) -> list[Path]:
        return write_figures(self.out, self.config, records, summary)

    def report(self, summary: dict[str, Any], findings: dict[str, Any], meta: dict[str, Any],
               figures: list[Path]) -> str:
        return markdown(self.config, summary, findings, meta, figures)

    def terminal_summary(self, summary: dict[str, Any], findings: dict[str, Any],
                         meta: dict[str, Any]) -> str:
        return terminal_summary(self.config, summary, findings, meta)
