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
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.io import write_json
from .study import collect, cost_matrix, final_alignment

RECORD_VERSION = 1
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
    rules: list[str]
    seeds: int = 10
    first_seed: int = 0
    epochs: int = 500
    lr: float = 0.09
    momentum: float = 0.0009
    folds: int = 5
    probe: int = 32
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["experiments"] = [asdict(e) for e in self.experiments]
        return data


def default_config_text() -> str:
    return resources.files("handprop.studies").joinpath("configs/reproduce.toml").read_text()


def config_from_dict(data: dict[str, Any], source: str = "config") -> ReproduceConfig:
    """Validate a ``[reproduce]`` table into a ReproduceConfig."""
    allowed = {"experiments", "rules", "seeds", "first_seed", "epochs", "lr", "momentum",
               "folds", "probe"}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in [reproduce]: {', '.join(unknown)}")
    experiments = []
    for i, item in enumerate(data.get("experiments", []), start=1):
        if not isinstance(item, dict) or "fc" not in item:
            raise ConfigError(f"{source}: experiment {i} needs fc = [W3, W4]")
        fc = item["fc"]
        if (not isinstance(fc, list) or len(fc) != 2
                or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in fc)):
            raise ConfigError(
                f"{source}: experiment {i}: fc must be two positive integers, got {fc!r}"
            )
        extra = sorted(set(item) - {"name", "fc", "claim"})
        if extra:
            raise ConfigError(f"{source}: experiment {i}: unknown key(s) {', '.join(extra)}")
        experiments.append(Experiment(str(item.get("name", f"fc{fc[0]}-{fc[1]}")), (fc[0], fc[1]),
                                      str(item.get("claim", ""))))
    if not experiments:
        raise ConfigError(f"{source}: no experiments")
    names = [e.name for e in experiments]
    if len(set(names)) != len(names):
        raise ConfigError(f"{source}: experiment names must be unique, got {names}")
    config = ReproduceConfig(experiments=experiments, rules=list(data.get("rules", [])))
    for key in ("seeds", "first_seed", "epochs", "folds", "probe"):
        if key in data:
            setattr(config, key, data[key])
    for key in ("lr", "momentum"):
        if key in data:
            setattr(config, key, data[key])
    return validate_config(config, source)


def validate_config(config: ReproduceConfig, source: str = "config") -> ReproduceConfig:
    from ..rules import RULES

    def positive_int(name: str, minimum: int = 1) -> None:
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{source}: {name} must be an integer >= {minimum}, got {value!r}")

    positive_int("seeds")
    positive_int("first_seed", 0)
    positive_int("epochs")
    positive_int("probe")
    positive_int("folds", 0)
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
    import tomllib

    from ..core.spec import load_toml

    if path is None:
        data = tomllib.loads(default_config_text())
        source = "configs/reproduce.toml"
    else:
        data = load_toml(path)
        source = str(path)
    if "reproduce" not in data or not isinstance(data["reproduce"], dict):
        raise ConfigError(f"{source}: no [reproduce] table")
    return config_from_dict(data["reproduce"], source)


# -- data ------------------------------------------------------------------------------

def _article_split(seed: int):
    from ..training.data import load_digits

    return load_digits(seed=seed)


def equal_stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold id of every item: classes shuffled, then dealt round-robin, so folds are
    equal in size (when ``folds`` divides the count) and stratified."""
    rng = np.random.default_rng([seed, 5])
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
    train = np.random.default_rng(seed).permutation(np.flatnonzero(assignment != fold))
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


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Train every run of one (experiment, rule) in lockstep and write their records.

    The article's runs (350 training images) and the cross-validation folds (288) are
    replicas of one network; the folds sit out the last steps of each epoch (``fit``'s
    ``counts``), so every run ends exactly as it would alone.
    """
    from ..core.presets import seed_net
    from ..training.loop import TrainConfig
    from .study import rounded, train_group, versions

    runs = spec["runs"]  # [{"protocol", "run", "seed"}]
    datasets = [_article_split(r["seed"]) if r["protocol"] == "article" else
                _cv_split(spec["first_seed"], spec["folds"], r["run"], r["seed"])
                for r in runs]
    seeds = [r["seed"] for r in runs]
    net = seed_net(tuple(spec["fc"])).init(replicas=seeds)
    config = TrainConfig(epochs=spec["epochs"], batch_size=1, optimizer="momentum",
                         lr=spec["lr"], momentum=spec["momentum"], seed=seeds[0])
    counts = [len(d.y_train) for d in datasets]
    result = train_group(net, spec["rule"], _padded([d.x_train for d in datasets]),
                         _padded([d.y_train for d in datasets]),
                         _padded([d.x_test for d in datasets]),
                         _padded([d.y_test for d in datasets]), config, spec["probe"],
                         spec["out"], spec["job_id"], weight_metrics=False, counts=counts)
    history, evaluation = result.history, result.evaluation
    for r, (run, data) in enumerate(zip(runs, datasets, strict=True)):
        diverged = history.diverged[r]
        tested = len(data.y_test)
        correct = (evaluation.predicted[r, :tested] == data.y_test).tolist()
        record = {
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
            "train_images": counts[r],
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
            "replicas_in_job": len(runs),
            "engine": result.history.extra["engine"],
            "versions": versions(),
        }
        write_json(Path(spec["outputs"][r]), record)
    return {"job_id": spec["job_id"], "seconds": result.seconds, "runs": len(runs)}


def save_config(config: ReproduceConfig, path: Path) -> None:
    """The resolved config as TOML (pass it back with ``--config`` to rerun the study)."""
    from ..core.io import atomic_write_text
    from ..core.spec import dump_toml

    data = config.to_dict()
    data.pop("extra", None)
    data["experiments"] = [{"name": e["name"], "fc": list(e["fc"]), "claim": e["claim"]}
                           for e in data["experiments"]]
    atomic_write_text(path, "# resolved config of this study\n" + dump_toml("reproduce", data))


def build_jobs(config: ReproduceConfig, out: Path) -> list:
    """One job per (experiment, rule): its article runs and its cross-validation folds."""
    from .runner import Job

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

def load_records(jobs: list) -> dict[tuple[str, str, str], list[dict]]:
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


def summarize(records: dict[tuple[str, str, str], list[dict]], config: ReproduceConfig
              ) -> dict[str, Any]:
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


def main_study(config: ReproduceConfig, out: Path, backend: str = "loky",
               n_jobs: int | None = None, scheduler: str | None = None,
               show_progress: bool | None = None) -> dict[str, Any]:
    """Run (or resume) the study and write summary.json, plots and report.md."""
    from .reproduce_report import write_reproduce_outputs
    from .runner import run_study

    out.mkdir(parents=True, exist_ok=True)
    save_config(config, out / "config.toml")
    jobs = build_jobs(config, out)
    run = run_study(jobs, out, backend, n_jobs, scheduler, show_progress, "reproduce")
    interrupted = run.interrupted
    records = load_records(jobs)
    summary = summarize(records, config)
    meta = {"seconds": run.seconds, "jobs": run.jobs, "skipped_jobs": run.skipped,
            "finished_jobs": run.finished, "interrupted": interrupted,
            "backend": backend, "config": config.to_dict()}
    write_reproduce_outputs(out, config, records, summary, meta)
    if interrupted:
        raise KeyboardInterrupt
    return {"summary": summary, "meta": meta}
