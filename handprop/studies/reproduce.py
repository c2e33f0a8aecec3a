"""``handprop reproduce``: the article's original-vs-broken experiments, with statistics.

For each experiment (dense widths) and each rule, two protocols are run, every run
with the article's training protocol (online SGD, 500 epochs, lr 0.09, alpha 0.0009,
standard-normal weights, raw pixels):

* **article** -- one run per seed: shuffle the 360 images of 0 and 1 with the seed, hold
  out the first 10, train on 350. Test accuracy is on those 10 images.
* **cv** -- the held-out protocol: stratified k-fold cross-validation over all 360 images
  (k=5: train on 288, test on 72, every image tested exactly once per rule).

Every rule gets the same initial weights and data order for a given seed (paired).
The runs of one (experiment, rule, protocol) are trained in lockstep as replicas of
one network, which is what makes the default study fit in minutes.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.article import ARTICLE
from ..core.errors import ConfigError
from ..core.io import check_name, write_json
from ..core.limits import MAX_EPOCHS, MAX_PROBE, MAX_SEED, MAX_SEEDS, MAX_WIDTH, check_int
from ..core.schema import check_type
from ..core.streams import Stream, generator
from .records import collect, cost_matrix, final_alignment
from .runner import Job
from .study import Study, option, register_study

RECORD_VERSION = 1
IMAGES = 360  # the digits 0 and 1 of scikit-learn's set
# Records by (experiment, rule, protocol).
Records = dict[tuple[str, str, str], list[dict]]
CONFIG_KEYS = ("experiment", "fc", "rule", "epochs", "lr", "momentum", "probe", "first_seed")


@dataclass
class Experiment:
    name: str
    fc: tuple[int, int]
    claim: str = ""


@dataclass
class ReproduceConfig:
    """Everything that defines a reproduce study (defaults: configs/reproduce.toml)."""

    experiments: list[Experiment]
    rules: list[str] = option(default_factory=list, help="comma-separated rules")
    seeds: int = option(10, help="number of paired seeds", low=1, high=MAX_SEEDS)
    first_seed: int = option(0, low=0, high=MAX_SEED)
    epochs: int = option(ARTICLE.epochs, low=1, high=MAX_EPOCHS)
    lr: float = ARTICLE.lr
    momentum: float = ARTICLE.momentum
    folds: int = option(5, help="k of the held-out k-fold CV (0: none)", low=0, high=IMAGES)
    probe: int = option(32, help="images in the alignment probe batch", low=1,
                        high=MAX_PROBE)
    extra: dict[str, Any] = field(default_factory=dict, metadata={"toml": False})

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _experiments(items: Any, source: str) -> list[Experiment]:
    """The ``[[reproduce.experiments]]`` tables, checked (names become folder names, so
    they are restricted to a safe set of characters)."""
    if not isinstance(items, list):
        raise ConfigError(f"{source}: experiments must be a list of tables "
                          f"([[reproduce.experiments]]), got {items!r}")
    experiments = []
    for i, item in enumerate(items, start=1):
        if not isinstance(item, dict) or "fc" not in item:
            raise ConfigError(f"{source}: experiment {i} needs fc = [W3, W4]")
        fc = item["fc"]
        if (not isinstance(fc, list) or len(fc) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in fc)):
            raise ConfigError(
                f"{source}: experiment {i}: fc must be two positive integers, got {fc!r}"
            )
        for width in fc:
            check_int(width, f"{source}: experiment {i}: fc", 1, MAX_WIDTH)
        extra = sorted(set(item) - {"name", "fc", "claim"})
        if extra:
            raise ConfigError(f"{source}: experiment {i}: unknown key(s) {', '.join(extra)}")
        name = item.get("name", f"fc{fc[0]}-{fc[1]}")
        check_name(name, f"{source}: experiment {i}: name")
        claim = check_type(item.get("claim", ""), str, f"{source}: experiment {i}: claim")
        experiments.append(Experiment(name, (fc[0], fc[1]), claim))
    if not experiments:
        raise ConfigError(f"{source}: no experiments")
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: experiment names must be unique, got {names}")
    return experiments


def validate_config(config: ReproduceConfig, source: str = "config") -> ReproduceConfig:
    """Check a config: every field's type and bounds, then the rules below."""
    return ReproduceStudy.check_config(config, source)


def _check_rules(config: ReproduceConfig, source: str) -> ReproduceConfig:
    """What the field types and bounds (checked first) do not say."""
    from ..rules import RULES

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
    if config.folds == 1 or (config.folds and 360 % config.folds):
        raise ConfigError(
            f"{source}: folds must be 0 (no cross-validation) or divide the 360 images into "
            f"equal folds (2, 3, 4, 5, 6, 8, 9, 10, ...), got {config.folds}"
        )
    for name in ("lr", "momentum"):
        value = getattr(config, name)
        number = isinstance(value, int | float) and not isinstance(value, bool)
        if not number or not math.isfinite(value) or value < 0 or (name == "lr" and value == 0):
            raise ConfigError(f"{source}: {name} must be a finite number"
                              f"{' > 0' if name == 'lr' else ' >= 0'}, got {value!r}")
    if not config.rules:
        raise ConfigError(f"{source}: no rules")
    for rule in config.rules:
        if rule not in RULES:
            raise ConfigError(f"{source}: unknown rule {rule!r}; choose from {', '.join(RULES)}")
    if len(set(config.rules)) != len(config.rules):
        raise ConfigError(f"{source}: rules repeat: {config.rules}")
    return config


def load_config(path: str | Path | None = None) -> ReproduceConfig:
    """The default study, or the ``[reproduce]`` table of a TOML file."""
    return ReproduceStudy.load_config(path)


# -- data ------------------------------------------------------------------------------

def _article_split(seed: int):
    from ..training.data import load_digits

    return load_digits(seed=seed)


def equal_stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold id of every item: classes shuffled, then dealt round-robin, so folds are
    equal in size (when ``folds`` divides the count) and stratified."""
    rng = generator(seed, Stream.FOLDS)
    order = np.concatenate([rng.permutation(np.flatnonzero(labels == c))
                            for c in np.unique(labels)])
    fold = np.empty(len(labels), dtype=np.int64)
    fold[order] = np.arange(len(labels)) % folds
    return fold


def _cv_split(base_seed: int, folds: int, fold: int, seed: int):
    from ..training.data import Dataset, _select_classes, _sklearn_digits

    images, labels = _sklearn_digits()
    images, labels = _select_classes(images, labels, (0, 1), "digits")
    images = images.astype(np.float64)
    assignment = equal_stratified_folds(labels, folds, base_seed)
    test = np.flatnonzero(assignment == fold)
    train = generator(seed, Stream.DATA_SPLIT).permutation(np.flatnonzero(assignment != fold))
    return Dataset(f"digits-cv{fold}", images[train], labels[train], images[test], labels[test],
                   (0, 1), info={"fold": fold, "folds": folds, "test_index": test.tolist()})


# -- one job: a group of runs in lockstep ----------------------------------------------

def record_path(out: Path, experiment: str, rule: str, protocol: str, run: int) -> Path:
    name = f"seed{run}.json" if protocol == "article" else f"cv-fold{run}.json"
    return out / "runs" / experiment / rule / name


def _padded(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack arrays of different lengths, padding each with its first item."""
    longest = max(len(a) for a in arrays)
    return np.stack([np.concatenate([a, np.repeat(a[:1], longest - len(a), axis=0)])
                     for a in arrays])


def _record(spec: dict[str, Any], r: int, run: dict[str, Any], data, result,
            replicas: int) -> dict[str, Any]:
    """The record of replica ``r`` (one run) of a trained group."""
    from .records import rounded, versions

    history, evaluation = result.history, result.evaluation
    diverged = history.diverged[r]
    tested = len(data.y_test)  # the group's test sets are padded to the longest
    correct = (evaluation.predicted[r, :tested] == data.y_test).tolist()
    return {
        "version": RECORD_VERSION,
        "fingerprint": spec["fingerprint"],
        "experiment": spec["experiment"],
        "fc": list(spec["fc"]),
        "rule": spec["rule"],
        "protocol": run["protocol"],
        "run": run["run"],
        "seed": run["seed"],
        "cost": rounded(history.cost_list(r)),
        "diverged": diverged,
        "train_images": len(data.y_train),
        "test_accuracy": None if diverged else float(np.mean(correct)),
        "test_correct": None if diverged else correct,
        "test_index": data.info.get("test_index"),
        "test_raw": rounded(evaluation.raw[r, :tested, 0].tolist()),
        "alignment": result.alignment.as_lists(r) if spec["rule"] != "exact" else None,
        "alignment_probe": f"first {spec['probe']} training images, after every epoch "
                           "(entry 0: before training)",
        "config": {**{key: spec[key] for key in CONFIG_KEYS}, "protocol": run["protocol"],
                   "folds": spec["folds"] if run["protocol"] == "cv" else None},
        "seconds_for_job": result.seconds,
        "replicas_in_job": replicas,
        "pid": os.getpid(),  # the process that trained it (not part of the results)
        "versions": versions(),
    }


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Train every run of one (experiment, rule) in lockstep and write their records.

    The article's runs (350 training images) and the cross-validation folds (288) are
    replicas of one network; the folds sit out the last steps of each epoch (``fit``'s
    ``counts``), so every run ends exactly as it would alone.
    """
    from ..core.presets import seed_net
    from ..training.loop import TrainConfig
    from .lockstep import train_group  # looked up per call: tests spy on it

    runs = spec["runs"]  # [{"protocol", "run", "seed"}]
    datasets = [_article_split(r["seed"]) if r["protocol"] == "article" else
                _cv_split(spec["first_seed"], spec["folds"], r["run"], r["seed"])
                for r in runs]
    seeds = [r["seed"] for r in runs]
    net = seed_net(tuple(spec["fc"])).init(replicas=seeds)
    config = TrainConfig(epochs=spec["epochs"], batch_size=1, optimizer="momentum",
                         lr=spec["lr"], momentum=spec["momentum"], seed=seeds[0])
    result = train_group(net, spec["rule"], _padded([d.x_train for d in datasets]),
                         _padded([d.y_train for d in datasets]),
                         _padded([d.x_test for d in datasets]),
                         _padded([d.y_test for d in datasets]), config, spec["probe"],
                         spec["out"], spec["job_id"], weight_metrics=False,
                         counts=[len(d.y_train) for d in datasets])
    for r, (run, data) in enumerate(zip(runs, datasets, strict=True)):
        write_json(Path(spec["outputs"][r]), _record(spec, r, run, data, result, len(runs)))
    return {"job_id": spec["job_id"], "seconds": result.seconds, "runs": len(runs)}


def build_jobs(config: ReproduceConfig, out: Path) -> list[Job]:
    """One job per (experiment, rule): its article runs and its cross-validation folds."""
    runs = [{"protocol": "article", "run": seed, "seed": seed} for seed in config.seed_list]
    runs += [{"protocol": "cv", "run": fold, "seed": config.first_seed + fold}
             for fold in range(config.folds)]
    jobs = []
    # Largest networks first: the long jobs start early and the cores finish together.
    by_size = sorted(config.experiments, key=lambda e: -e.fc[0] * e.fc[1])
    for experiment in by_size:
        for rule in config.rules:
            outputs = [record_path(out, experiment.name, rule, r["protocol"], r["run"])
                       for r in runs]
            job_id = f"{experiment.name}/{rule}"
            spec = {
                "job_id": job_id, "out": str(out), "experiment": experiment.name,
                "fc": list(experiment.fc), "rule": rule, "runs": runs,
                "epochs": config.epochs, "lr": config.lr, "momentum": config.momentum,
                "probe": config.probe, "first_seed": config.first_seed, "folds": config.folds,
                "outputs": [str(p) for p in outputs],
            }
            jobs.append(Job(job_id, "handprop.studies.reproduce:run_job", spec, outputs,
                            steps=config.epochs * 350))
    return jobs


# -- aggregation -----------------------------------------------------------------------

def load_records(jobs: list[Job]) -> Records:
    """Records with the study's current settings, by (experiment, rule, protocol)."""
    found: dict[tuple[str, str, str], list[dict]] = {}
    for job in jobs:
        for protocol in ("article", "cv"):
            found[(job.spec["experiment"], job.spec["rule"], protocol)] = []
    for records in collect(jobs).values():
        for record in records:
            key = (record["experiment"], record["rule"], record["protocol"])
            found[key].append(record)
    return found


def summarize(records: Records, config: ReproduceConfig) -> dict[str, Any]:
    """The numbers of ``summary.json``: per experiment and rule."""
    summary: dict[str, Any] = {}
    for experiment in config.experiments:
        per_rule = {}
        for rule in config.rules:
            article = records.get((experiment.name, rule, "article"), [])
            cv = records.get((experiment.name, rule, "cv"), [])
            costs = cost_matrix(article)
            finals = costs[:, -1] if costs.size else np.array([])
            any_final = bool(np.isfinite(finals).any())
            test = [r["test_accuracy"] for r in article if r["test_accuracy"] is not None]
            heldout_correct = [c for r in cv if r["test_correct"] for c in r["test_correct"]]
            per_rule[rule] = {
                "runs": len(article),
                "diverged": sum(1 for r in article if r["diverged"]),
                "final_cost_mean": float(np.nanmean(finals)) if any_final else None,
                "final_cost_median": float(np.nanmedian(finals)) if any_final else None,
                "test_accuracy_mean": float(np.mean(test)) if test else None,
                "test_all_correct": sum(1 for a in test if a == 1.0),
                "heldout_accuracy_mean": (float(np.mean(heldout_correct)) if heldout_correct
                                          else None),
                "heldout_images": len(heldout_correct),
                "heldout_folds": len(cv),
                "alignment": final_alignment(article),
            }
        summary[experiment.name] = {"fc": list(experiment.fc), "claim": experiment.claim,
                                    "rules": per_rule}
    return summary


# -- the study ---------------------------------------------------------------------

@register_study
class ReproduceStudy(Study):
    """The article's experiments: the skeleton with this module's jobs, summary and the
    claims of :mod:`.reproduce_report`."""

    name = "reproduce"
    help = "the article's experiments, many seeds, statistics, plots, report"
    config_class = ReproduceConfig
    default_out = "results"
    quick = {"epochs": 5, "seeds": 2, "folds": 2}
    quick_help = "a smoke run: 5 epochs, 2 seeds, 2 folds"
    flag_order = ("seeds", "first_seed", "epochs", "rules", "folds", "probe")
    order = 40
    summary_key, findings_key = "experiments", "claims"

    @classmethod
    def config_from_table(cls, table: dict[str, Any], source: str) -> ReproduceConfig:
        experiments = _experiments(table.get("experiments", []), source)
        return super().config_from_table({**table, "experiments": experiments}, source)

    @classmethod
    def validate_config(cls, config: ReproduceConfig, source: str = "config"
                        ) -> ReproduceConfig:
        return _check_rules(config, source)

    def build_jobs(self) -> list[Job]:
        return build_jobs(self.config, self.out)

    def memory_needed(self, jobs: list[Job]) -> list[tuple[str, int]]:
        """The largest experiment's group of runs (seeds and folds as replicas of one
        network), times the jobs that run at once."""
        from ..core.limits import estimate_training_bytes
        from ..core.presets import seed_net

        replicas = self.config.seeds + self.config.folds
        largest = max(self.config.experiments, key=lambda e: e.fc[0] * e.fc[1])
        per_job = estimate_training_bytes(seed_net(largest.fc), replicas, batch=1,
                                          samples=IMAGES)
        at_once = self.concurrent_jobs(jobs)
        return [(f"reproduce: {replicas} runs of experiment {largest.name} (dense "
                 f"{largest.fc[0]}/{largest.fc[1]}) per job, {at_once} job"
                 f"{'s' if at_once > 1 else ''} at once", per_job * at_once)]

    def load_records(self, jobs: list[Job]) -> Records:
        return load_records(jobs)

    def summarize(self, records: Records) -> dict[str, Any]:
        return summarize(records, self.config)

    def findings(self, records: Records, summary: dict[str, Any]) -> dict[str, Any]:
        from .reproduce_report import evaluate_claims

        return evaluate_claims(records, self.config)

    def write_figures(self, records: Records, summary: dict[str, Any]) -> list[Path]:
        from .reproduce_report import write_figures

        return write_figures(self.out, self.config, records)

    def report(self, summary: dict[str, Any], findings: dict[str, Any], meta: dict[str, Any],
               figures: list[Path]) -> str:
        from .reproduce_report import markdown

        return markdown(self.config, summary, findings, meta, figures)

    def terminal_summary(self, summary: dict[str, Any], findings: dict[str, Any],
                         meta: dict[str, Any]) -> str:
        from .reproduce_report import terminal_summary

        return terminal_summary(summary, findings, meta)
