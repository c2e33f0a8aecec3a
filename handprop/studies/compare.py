"""``handprop compare``: learning rules side by side with exact back-propagation.

Every rule trains the same network from the same initial weights, on the same data
split in the same order, for each seed (paired). Runs of one rule are trained in
lockstep as replicas. Every few epochs the study logs how close each rule's update is to
the exact gradient per weight array, how close the signal it sends to each hidden layer
is to the exact one, and for rules with feedback matrices B how B relates to W. The
unit of replication is the trained network: every interval and test is over seeds
(:mod:`.statistics`), and the report (:mod:`.compare_report`) holds the literature's
claims (Lillicrap et al. 2016; BioTorch) against paired tests over seeds, Holm-adjusted
together.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.io import write_json
from ..core.limits import MAX_SEED
from ..core.network import Network
from .claims import design_text, parse_claims
from .compare_base import ANGLE_METRICS, CompareClaim, CompareConfig, errors_by_seed
from .compare_report import design, literature, markdown, terminal_table, write_figures
from .lockstep import train_group
from .records import collect, cost_matrix, final_alignment, rounded, versions
from .runner import Job
from .study import Study, register_study

__all__ = ["CompareConfig", "CompareStudy", "build_jobs", "load_config", "run_job",
           "summarize", "validate_config"]

RECORD_VERSION = 1


def validate_config(config: CompareConfig, source: str = "config") -> CompareConfig:
    """Check a config: every field's type and bounds, then the rules below."""
    return CompareStudy.check_config(config, source)


def _check_rules(config: CompareConfig, source: str) -> CompareConfig:
    """What the field types and bounds (checked first) do not say."""
    from ..rules import RULES
    from ..training.loop import TrainConfig

    last = config.first_seed + config.seeds - 1
    if last > MAX_SEED:
        raise ConfigError(f"{source}: seeds {config.first_seed}..{last} go beyond the largest "
                          f"seed, {MAX_SEED}")
    if not config.rules or len(set(config.rules)) != len(config.rules):
        raise ConfigError(f"{source}: rules must be a non-empty list without repeats")
    for rule in config.rules:
        if rule not in RULES:
            raise ConfigError(f"{source}: unknown rule {rule!r}; choose from {', '.join(RULES)}")
    if not isinstance(config.data, str) or not isinstance(config.net, str):
        raise ConfigError(f"{source}: data and net must be strings")
    if config.data.startswith("idx:") and config.net == "small":
        config.net = "lenet"  # users' MNIST-format files: the 28x28 network
    from ..training.epoch import ENGINES

    if config.engine not in ENGINES:
        raise ConfigError(f"{source}: engine must be one of {', '.join(ENGINES)}, "
                          f"got {config.engine!r}")
    try:
        # The optimizer settings are checked where they are defined.
        TrainConfig(epochs=config.epochs, batch_size=config.batch_size,
                    optimizer=config.optimizer, lr=config.lr, momentum=config.momentum).validate()
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def _check_claims(config: CompareConfig, source: str) -> CompareConfig:
    """Each claim names registered rules (a claim whose rules this run leaves out is
    skipped, and the design check says so) and a metric compare measures."""
    from ..rules import RULES

    for i, claim in enumerate(config.claims, start=1):
        where = f"{source}: claim {i}"
        angle = claim.metric in ANGLE_METRICS
        if claim.metric != "test_error" and not angle:
            raise ConfigError(f"{where}: metric must be test_error or one of "
                              f"{', '.join(ANGLE_METRICS)}, got {claim.metric!r}")
        for arm in (claim.a,) if angle else (claim.a, claim.b):
            if arm not in RULES:
                raise ConfigError(f"{where}: unknown rule {arm!r}")
        if angle:
            try:
                float(claim.b)
            except ValueError:
                raise ConfigError(f"{where}: an angle claim compares with a number of degrees "
                                  f"(b), got {claim.b!r}") from None
    return config


def load_config(path: str | Path | None = None) -> CompareConfig:
    """The default comparison, or the ``[compare]`` table of a TOML file."""
    return CompareStudy.load_config(path)


def _network(config: CompareConfig, data: Any) -> Network:
    from ..core.spec import build_net

    return build_net(config.net, None, data.input_shape, data.num_classes)


def record_path(out: Path, rule: str, seed: int) -> Path:
    return out / "runs" / rule / f"seed{seed}.json"


# -- one job: a rule on every seed in lockstep -----------------------------------------

def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one rule on every seed in lockstep; write one record per seed."""
    from ..training.data import load_data
    from ..training.loop import TrainConfig

    config = CompareConfig(**spec["config"])
    seeds = config.seed_list
    datasets = [load_data(config.data, seed=seed) for seed in seeds]
    net = _network(config, datasets[0]).init(replicas=seeds)
    train = TrainConfig(epochs=config.epochs, batch_size=config.batch_size,
                        optimizer=config.optimizer, lr=config.lr, momentum=config.momentum,
                        shuffle=True, seed=seeds[0])
    test_y = np.stack([d.y_test for d in datasets])
    result = train_group(net, spec["rule"], np.stack([d.x_train for d in datasets]),
                         np.stack([d.y_train for d in datasets]),
                         np.stack([d.x_test for d in datasets]), test_y, train, config.probe,
                         spec["out"], spec["job_id"], engine=config.engine,
                         align_every=config.align_every, test_curve=True)
    for r, seed in enumerate(seeds):
        diverged = result.history.diverged[r]
        accuracy = float(np.mean(result.evaluation.predicted[r] == test_y[r]))
        record = {
            "version": RECORD_VERSION, "fingerprint": spec["fingerprint"],
            "rule": spec["rule"], "seed": seed,
            "net": net.name, "data": config.data,
            "cost": rounded(result.history.cost_list(r)),
            "diverged": diverged,
            "test_error": None if diverged else 1 - accuracy,
            "test_error_curve": None if diverged else [
                float(1 - acc[r]) for acc in result.test_curve],
            "test_error_epochs": result.alignment_epochs,
            "test_images": int(test_y.shape[1]),
            "alignment": result.alignment.as_lists(r) if spec["rule"] != "exact" else None,
            "alignment_epochs": result.alignment_epochs,
            "alignment_probe": f"first {min(config.probe, datasets[r].x_train.shape[0])} "
                               "training images",
            "config": config.to_dict(),
            "engine": result.history.extra.get("engine"),
            "seconds_for_job": result.seconds,
            "pid": os.getpid(),  # the process that trained it (not part of the results)
            "versions": versions(),
        }
        write_json(record_path(Path(spec["out"]), spec["rule"], seed), record)
    return {"job_id": spec["job_id"], "seconds": result.seconds}


def build_jobs(config: CompareConfig, out: Path, steps_per_epoch: int = 1) -> list[Job]:
    """One job per rule (its seeds in lockstep); ``steps_per_epoch`` only feeds the ETA."""
    jobs = []
    for rule in config.rules:
        outputs = [record_path(out, rule, seed) for seed in config.seed_list]
        spec = {"job_id": f"compare/{rule}", "out": str(out), "rule": rule,
                "config": config.to_dict()}
        jobs.append(Job(spec["job_id"], "handprop.studies.compare:run_job", spec, outputs,
                        steps=config.epochs * steps_per_epoch))
    return jobs


# -- aggregation -----------------------------------------------------------------------

def load_records(jobs: list[Job]) -> dict[str, list[dict]]:
    """Records with the study's current settings, by rule."""
    by_id = collect(jobs)
    return {job.spec["rule"]: by_id[job.id] for job in jobs}


def summarize(records: dict[str, list[dict]], config: CompareConfig) -> dict[str, Any]:
    """Per rule: the test error per seed and its mean with an interval over seeds, the
    final training cost, and the alignment at the last measurement."""
    from .statistics import mean_interval

    summary: dict[str, Any] = {}
    for rule, runs in records.items():
        errors = errors_by_seed(runs)
        finite = [v for v in errors.values() if math.isfinite(v)]
        interval = mean_interval(finite, bounds=(0.0, 1.0)) if finite else None
        costs = cost_matrix(runs)
        summary[rule] = {
            "runs": len(runs),
            "diverged": sum(1 for r in runs if r["diverged"]),
            "test_error_per_seed": errors,
            "test_error_mean": float(np.mean(finite)) if finite else None,
            "test_error_ci": None if interval is None else [interval.low, interval.high],
            "test_error_ci_method": None if interval is None else interval.method,
            "final_cost_mean": (float(np.nanmean(costs[:, -1]))
                                if costs.size and np.isfinite(costs[:, -1]).any() else None),
            "alignment": final_alignment(runs, "gradient"),
            "signal_alignment": final_alignment(runs, "signal"),
            "weight_alignment": final_alignment(runs, "weights"),
        }
    return summary


# -- the study -------------------------------------------------------------------------

@register_study
class CompareStudy(Study):
    """Learning rules against exact back-propagation: the skeleton with this module's jobs
    and summary, and the literature of :mod:`.compare_report`."""

    name = "compare"
    help = "learning rules side by side with exact back-propagation"
    config_class = CompareConfig
    default_out = "results-compare"
    quick = {"epochs": 2, "seeds": 2, "probe": 64, "align_every": 1}
    quick_help = "a smoke run: 2 epochs, 2 seeds"
    order = 50
    summary_key, findings_key = "rules", "literature"

    @classmethod
    def config_from_table(cls, table: dict[str, Any], source: str) -> CompareConfig:
        claims = parse_claims(table.get("claims", []), source, CompareClaim)
        return super().config_from_table({**table, "claims": claims}, source)

    @classmethod
    def validate_config(cls, config: CompareConfig, source: str = "config") -> CompareConfig:
        return _check_claims(_check_rules(config, source), source)

    def design_check(self) -> list[str]:
        return design_text(design(self.config, self.net))

    def prepare(self) -> None:
        """Load the data and build the network now: bad data fails before any output."""
        from ..training.data import load_data

        self.data = load_data(self.config.data, seed=self.config.first_seed)
        self.net = _network(self.config, self.data)
        if self.net.input_shape != self.data.input_shape:
            raise ConfigError(f"network {self.net.name!r} takes inputs {self.net.input_shape}, "
                              f"the data has {self.data.input_shape}")

    def build_jobs(self) -> list[Job]:
        steps_per_epoch = -(-len(self.data.y_train) // self.config.batch_size)
        return build_jobs(self.config, self.out, steps_per_epoch)

    def memory_needed(self, jobs: list[Job]) -> list[tuple[str, int]]:
        """One rule's seeds as replicas of the network, times the jobs that run at once."""
        from ..training.memory import estimate_run_bytes

        samples = len(self.data.y_train)
        per_job = estimate_run_bytes(self.net, self.config.seeds,
                                     batch=min(self.config.batch_size, samples),
                                     samples=samples, engine=self.config.engine)
        at_once = self.concurrent_jobs(jobs)
        return [(f"compare: {self.config.seeds} seeds of network {self.net.name!r} with "
                 f"batches of {self.config.batch_size}, {at_once} job"
                 f"{'s' if at_once > 1 else ''} at once", per_job * at_once)]

    def load_records(self, jobs: list[Job]) -> dict[str, list[dict]]:
        return load_records(jobs)

    def summarize(self, records: dict[str, list[dict]]) -> dict[str, Any]:
        return summarize(records, self.config)

    def extra_meta(self) -> dict[str, Any]:
        return {"net": self.net.name, "train_images": int(self.data.x_train.shape[0]),
                "test_images": int(self.data.x_test.shape[0])}

    def findings(self, records: dict[str, list[dict]], summary: dict[str, Any]
                 ) -> dict[str, Any]:
        return literature(self.config, records, self.net)

    def write_figures(self, records: dict[str, list[dict]], summary: dict[str, Any]
                      ) -> list[Path]:
        return write_figures(self.out, self.config, records, summary,
                             int(self.data.x_train.shape[0]), int(self.data.num_classes))

    def report(self, summary: dict[str, Any], findings: dict[str, Any], meta: dict[str, Any],
               figures: list[Path]) -> str:
        return markdown(self.config, summary, findings, meta, figures)

    def terminal_summary(self, summary: dict[str, Any], findings: dict[str, Any],
                         meta: dict[str, Any]) -> str:
        return terminal_table(summary, findings, meta)
