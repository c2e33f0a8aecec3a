"""``handprop biotorch``: BioTorch's LeNet table on Fashion-MNIST, with seeds and intervals.

BioTorch (Sanfiz & Akrout 2021; github.com/jsalbert/biotorch, ``Benchmarks.md``) reports
one number per learning rule: the top-1 test error of LeNet MNIST on Fashion-MNIST, one
seed, at the epoch with the best accuracy *on the same 10,000 images it reports*. This
study trains the same network with the same protocol (:data:`.biotorch_base.PROTOCOL`),
for many seeds, and picks each run's epoch on a validation split carved from the 60,000
training images; the error is then read on the 10,000 test images, which took no part in
any choice. BioTorch's own selection (best epoch on the test images) is reported beside
it, labelled optimistic.

One job trains one rule from one seed (every rule starts from the same weights and sees
the same split and order for a seed: paired), evaluates the validation and test images
after every epoch, measures the alignment of the rule's update with the exact gradient
(:mod:`.alignment`), keeps a resume point every ``checkpoint_every`` epochs, and writes
one JSON record. The config, data and record readers are :mod:`.biotorch_base`; the
numbers and claims :mod:`.biotorch_claims`; figures and report :mod:`.biotorch_report`.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.io import write_json
from ..core.limits import MAX_SEED
from .biotorch_base import (
    METRICS,
    RECORD_VERSION,
    BiotorchConfig,
    SeedData,
    learning_rates,
    raw_data,
    record_path,
    resume_path,
    seed_data,
)
from .biotorch_claims import design, evaluate_claims, summarize
from .biotorch_report import markdown, terminal_table, write_figures
from .claims import design_text, parse_claims
from .records import collect, rounded, versions
from .runner import Job
from .study import Study, register_study

__all__ = ["BiotorchConfig", "BiotorchStudy", "build_jobs", "run_job"]


def _check(config: BiotorchConfig, source: str) -> BiotorchConfig:
    """What the field types and bounds (checked first) do not say."""
    from ..rules import RULES
    from ..training.epoch import ENGINES
    from ..training.loop import TrainConfig

    last = config.first_seed + config.seeds - 1
    if last > MAX_SEED:
        raise ConfigError(f"{source}: seeds {config.first_seed}..{last} go beyond {MAX_SEED}")
    if not config.rules or len(set(config.rules)) != len(config.rules):
        raise ConfigError(f"{source}: rules must be a non-empty list without repeats")
    try:
        for rule in config.rules:
            if rule not in RULES:
                raise ConfigError(f"unknown rule {rule!r}; choose from {', '.join(RULES)}")
        rates = learning_rates(config)
        if config.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}")
        if not config.pixel_std > 0:
            raise ConfigError("pixel_std must be > 0")
        for rule in config.rules:
            TrainConfig(epochs=config.epochs, batch_size=config.batch_size,
                        optimizer="momentum", lr=rates[rule], momentum=config.momentum,
                        weight_decay=config.weight_decay, schedule=config.schedule,
                        dtype=config.dtype).validate()
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return _check_claims(config, source)


def _check_claims(config: BiotorchConfig, source: str) -> BiotorchConfig:
    """Each claim compares two registered rules on a metric the study measures (a claim
    whose rules this run leaves out is not tested; the report names it)."""
    from ..rules import RULES

    for i, claim in enumerate(config.claims, start=1):
        where = f"{source}: claim {i}"
        if claim.metric not in METRICS:
            raise ConfigError(f"{where}: metric must be one of {', '.join(METRICS)}, got "
                              f"{claim.metric!r}")
        unknown = [arm for arm in (claim.a, claim.b) if arm not in RULES]
        if unknown:
            raise ConfigError(f"{where}: unknown rule {unknown[0]!r}")
    return config


# -- one job: one rule from one seed ----------------------------------------------------

SERIES = ("train_loss", "val_error_pct", "val_top_share", "test_error_pct", "epoch_seconds")


@dataclass
class Curves:
    """What a run measures after every epoch (percent errors; the share of the validation
    images given the most common class, for the stuck criterion; the training loss is the
    mean over its batches), and the alignment log."""

    train_loss: list[float | None]
    val_error_pct: list[float]
    val_top_share: list[float]
    test_error_pct: list[float]
    epoch_seconds: list[float]
    alignment: Any  # an AlignmentLog
    alignment_epochs: list[int]

    def to_meta(self) -> dict[str, Any]:
        return {**{key: getattr(self, key) for key in SERIES},
                "alignment": self.alignment.as_lists(0),
                "alignment_epochs": self.alignment_epochs}

    def restore(self, meta: dict[str, Any]) -> None:
        """Continue from :meth:`to_meta` (a resume point)."""
        for key in (*SERIES, "alignment_epochs"):
            setattr(self, key, list(meta[key]))
        for section, store in (("gradient", self.alignment.gradient),
                               ("signal", self.alignment.signal),
                               ("weights", self.alignment.weights)):
            store.clear()
            for name, metrics in meta["alignment"][section].items():
                store[name] = {m: [np.array([np.nan if v is None else v]) for v in values]
                               for m, values in metrics.items()}


def _rule(config: BiotorchConfig, name: str, net: Any, seed: int) -> Any:
    """The rule bound to ``net``. kp's feedback weights learn with the rule's initial
    learning rate and weight decay, by plain SGD (BioTorch has no kp to copy; a step of
    lr / (1 - momentum), W's steady-state step under momentum, diverged in a smoke run)."""
    from ..rules import make_rule
    from ..rules.kolen_pollack import KolenPollack

    if name == "kp":
        return make_rule(KolenPollack(config.lr_of(name), config.weight_decay), net, seed)
    return make_rule(name, net, seed)


def _train_config(config: BiotorchConfig, rule: str, seed: int) -> Any:
    from ..training.loop import TrainConfig

    return TrainConfig(epochs=config.epochs, batch_size=config.batch_size,
                       optimizer="momentum", lr=config.lr_of(rule), momentum=config.momentum,
                       weight_decay=config.weight_decay, schedule=config.schedule,
                       shuffle=True, seed=seed, dtype=config.dtype).validate()


def _network(config: BiotorchConfig, shape: tuple[int, ...], classes: int) -> Any:
    from ..core.spec import build_net

    return build_net(config.net, None, shape, classes)


def _resume(path: Path, fingerprint: str, net: Any, train: Any, rule: Any,
            curves: Curves) -> Any:
    """The training state saved at ``path`` (restoring net, rule and curves), or None
    when there is no resume point for these settings (a damaged one is started over)."""
    from ..core.errors import HandpropError
    from ..training.checkpoint import (
        check_architecture,
        load_checkpoint,
        restore_network,
        restore_training_state,
    )

    if not path.is_file():
        return None
    try:
        saved = load_checkpoint(path)
        if saved.meta.get("fingerprint") != fingerprint:
            return None  # written with other settings: this run starts afresh
        check_architecture(saved, net, str(path))
        restore_network(saved, net)
        state = restore_training_state(saved, net, train, rule, str(path))
        curves.restore(saved.meta["curves"])
        return state
    except (HandpropError, KeyError, TypeError, ValueError) as exc:
        print(f"handprop: {path}: cannot resume ({exc}); training this run from the start",
              flush=True)
        return None


def _save_resume(path: Path, fingerprint: str, net: Any, train: Any, rule: Any, state: Any,
                 curves: Curves) -> None:
    from ..training.checkpoint import save_checkpoint

    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, net, {"fingerprint": fingerprint, "config": train.to_dict(),
                                "state": state.to_meta(), "curves": curves.to_meta()},
                    state.optimizer.state(), rule.state())


def _measure(net: Any, x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """(error in percent, share of the images given the most common class)."""
    from ..training.loop import evaluate

    with np.errstate(all="ignore"):
        evaluation = evaluate(net, x, y)
    counts = np.bincount(evaluation.predicted, minlength=1)
    return float(100 * (1 - evaluation.accuracy)), float(counts.max() / len(y))


def train_run(config: BiotorchConfig, rule_name: str, seed: int, data: SeedData, out: Path,
              job_id: str, fingerprint: str) -> tuple[Any, Curves, Any]:
    """Train one rule from one seed, measuring after every epoch and resuming from the
    last resume point; (history, curves, net)."""
    import time

    from ..training.loop import fit, loss_for, targets_for
    from .alignment import AlignmentLog
    from .runner import JobProgress

    net = _network(config, data.x_train.shape[1:], len(data.classes))
    net.init(seed, dtype=config.dtype)
    rule, train = _rule(config, rule_name, net, seed), _train_config(config, rule_name, seed)
    loss_name, loss_fn = loss_for(net, train)
    probe = min(config.probe, len(data.y_train))
    log = AlignmentLog(None if rule_name == "exact" else rule, data.x_train[:probe],
                       targets_for(net, data.y_train[:probe], loss_name, net.dtype), loss_fn)
    curves = Curves([], [], [], [], [], log, [])
    path = resume_path(out, rule_name, seed)
    state = _resume(path, fingerprint, net, train, rule, curves)
    if state is None:
        log.record(net)  # before training
        curves.alignment_epochs.append(0)
    steps = -(-len(data.y_train) // train.batch_size)
    report = JobProgress(out, job_id, train.epochs * steps)
    clock = [time.perf_counter()]

    def on_epoch(epoch: int, history: Any) -> None:
        cost = float(history.cost[-1])
        curves.train_loss.append(cost / steps if math.isfinite(cost) else None)
        val_error, top_share = _measure(net, data.x_val, data.y_val)
        curves.val_error_pct.append(val_error)
        curves.val_top_share.append(top_share)
        curves.test_error_pct.append(_measure(net, data.x_test, data.y_test)[0])
        if (epoch + 1) % config.align_every == 0 or epoch + 1 == train.epochs:
            log.record(net)
            curves.alignment_epochs.append(epoch + 1)
        curves.epoch_seconds.append(time.perf_counter() - clock[0])
        if (epoch + 1) % config.checkpoint_every == 0 and epoch + 1 < train.epochs:
            _save_resume(path, fingerprint, net, train, rule, history.state, curves)
        report((epoch + 1) * steps)
        clock[0] = time.perf_counter()

    history = fit(net, data.x_train, data.y_train, train, rule=rule, on_epoch=on_epoch,
                  state=state, engine=config.engine)
    return history, curves, net


def _selection(values: list[float], by: list[float]) -> tuple[int | None, float | None]:
    """(1-based epoch, value) at the first minimum of ``by``; (None, None) if empty."""
    if not by:
        return None, None
    best = int(np.argmin(by))
    return best + 1, values[best]


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Train ``spec["rule"]`` from ``spec["seed"]``; write its record, drop its resume
    point."""
    config = BiotorchConfig(**spec["config"])
    rule, seed, out = spec["rule"], spec["seed"], Path(spec["out"])
    data = seed_data(config, seed)
    history, curves, net = train_run(config, rule, seed, data, out, spec["job_id"],
                                     spec["fingerprint"])
    val, test = rounded(curves.val_error_pct), rounded(curves.test_error_pct)
    selected, test_selected = _selection(test, val)
    best, test_best = _selection(test, test)
    record = {
        "version": RECORD_VERSION, "fingerprint": spec["fingerprint"], "rule": rule,
        "seed": seed, "net": net.name, "data": config.data, "lr": config.lr_of(rule),
        "diverged": history.diverged[0], "epochs_done": len(curves.test_error_pct),
        "train_loss": rounded(curves.train_loss),
        "val_error_pct": val, "val_top_share": rounded(curves.val_top_share),
        "test_error_pct": test,
        "selected_epoch": selected, "test_error_pct_selected": test_selected,
        "best_test_epoch": best, "test_error_pct_best": test_best,
        "test_error_pct_final": test[-1] if test else None,
        "alignment": curves.alignment.as_lists(0) if rule != "exact" else None,
        "alignment_epochs": curves.alignment_epochs,
        "alignment_probe": f"first {min(config.probe, len(data.y_train))} training images",
        "images": {"train": len(data.y_train), "validation": len(data.y_val),
                   "test": len(data.y_test)}, "classes": len(data.classes),
        "epoch_seconds": rounded(curves.epoch_seconds, 4),
        "config": config.to_dict(), "engine": history.extra.get("engine"),
        "pid": os.getpid(),  # the process that trained it (not part of the results)
        "versions": versions(),
    }
    write_json(record_path(out, rule, seed), record)
    resume_path(out, rule, seed).unlink(missing_ok=True)
    return {"job_id": spec["job_id"], "seconds": float(np.sum(curves.epoch_seconds))}


def run_config(config: BiotorchConfig, rule: str, seed: int) -> dict[str, Any]:
    """The settings one run depends on, and no other: its job's fingerprint, so that more
    seeds, more rules or other claims leave finished runs finished."""
    return {**config.to_dict(), "rules": [rule], "seeds": 1, "first_seed": seed,
            "learning_rates": [f"{rule}={config.lr_of(rule)!r}"], "claims": []}


def build_jobs(config: BiotorchConfig, out: Path, steps_per_epoch: int) -> list[Job]:
    """One job per (rule, seed); ``steps_per_epoch`` feeds the ETA."""
    jobs = []
    for rule in config.rules:
        for seed in config.seed_list:
            spec = {"job_id": f"biotorch/{rule}/seed{seed}", "out": str(out), "rule": rule,
                    "seed": seed, "config": run_config(config, rule, seed),
                    "record_version": RECORD_VERSION}
            jobs.append(Job(spec["job_id"], "handprop.studies.biotorch:run_job", spec,
                            [record_path(out, rule, seed)],
                            steps=config.epochs * steps_per_epoch,
                            scratch=[resume_path(out, rule, seed).parent]))
    return jobs


# -- the study -------------------------------------------------------------------------

def remove_empty_folders(root: Path) -> None:
    """Remove ``root`` and the folders under it that are empty (deepest first)."""
    if not root.is_dir():
        return
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()),
                         key=lambda p: -len(p.parts)) + [root]:
        with contextlib.suppress(OSError):  # not empty: a resume point of an unfinished run
            folder.rmdir()


def load_records(jobs: list[Job]) -> dict[str, list[dict]]:
    """Records with the study's current settings, by rule, in seed order."""
    by_id = collect(jobs)
    found: dict[str, list[dict]] = {}
    for job in jobs:
        found.setdefault(job.spec["rule"], []).extend(by_id[job.id])
    return found


@register_study
class BiotorchStudy(Study):
    """BioTorch's LeNet table: the skeleton with this module's jobs, the numbers and
    claims of :mod:`.biotorch_claims`, the report and figures of :mod:`.biotorch_report`."""

    name = "biotorch"
    help = "BioTorch's LeNet table on Fashion-MNIST: seeds, honest selection, paired tests"
    config_class = BiotorchConfig
    default_out = "results-biotorch"
    quick = {"seeds": 2, "epochs": 2, "train_images": 640, "validation_images": 600,
             "test_images": 1000, "probe": 16}
    quick_help = "a smoke run on the real files: 2 seeds, 2 epochs, 640 training images"
    order = 60
    summary_key, findings_key = "rules", "claims"

    @classmethod
    def config_from_table(cls, table: dict[str, Any], source: str) -> BiotorchConfig:
        claims = parse_claims(table.get("claims", []), source)
        return super().config_from_table({**table, "claims": claims}, source)

    @classmethod
    def validate_config(cls, config: BiotorchConfig, source: str = "config") -> BiotorchConfig:
        return _check(config, source)

    def design_check(self) -> list[str]:
        return design_text(design(self.config))

    def prepare(self) -> None:
        """Load and check the data and build the network now: bad data or a missing
        package fails before any output."""
        raw = raw_data(self.config.data)
        self.raw_bytes = sum(array.nbytes for array in raw[:4])
        first = seed_data(self.config, self.config.first_seed, raw)
        self.images = {"train": len(first.y_train), "validation": len(first.y_val),
                       "test": len(first.y_test)}
        self.net = _network(self.config, first.x_train.shape[1:], len(first.classes))

    def build_jobs(self) -> list[Job]:
        steps = -(-self.images["train"] // self.config.batch_size)
        return build_jobs(self.config, self.out, steps)

    def memory_needed(self, jobs: list[Job]) -> list[tuple[str, int]]:
        """One run on the study's engine (:func:`~handprop.training.memory.
        estimate_run_bytes`: its network, a batch, its three image sets), plus an
        evaluation chunk (512 images, NumPy), the files as read and one set's images as
        they are prepared, times the jobs that run at once."""
        from ..core.limits import activation_values
        from ..training.memory import estimate_run_bytes

        itemsize = np.dtype(self.config.dtype).itemsize
        images = sum(self.images.values())
        training = estimate_run_bytes(self.net, 1, batch=min(self.config.batch_size,
                                                             self.images["train"]),
                                      samples=images, itemsize=itemsize,
                                      engine=self.config.engine)
        evaluation = activation_values(self.net, itemsize) * 512 * itemsize
        # the files as read, and the float64 images of one set as they are prepared
        files = self.raw_bytes + max(self.images.values()) * math.prod(self.net.input_shape) * 8
        at_once = self.concurrent_jobs(jobs)
        return [(f"biotorch: network {self.net.name!r} on {images} images, {at_once} job"
                 f"{'s' if at_once > 1 else ''} at once",
                 (training + evaluation + files) * at_once)]

    def load_records(self, jobs: list[Job]) -> dict[str, list[dict]]:
        return load_records(jobs)

    def write_outputs(self, records: Any, summary: dict[str, Any],
                      meta: dict[str, Any]) -> None:
        """The skeleton's outputs; then the resume folders that no longer hold a resume
        point are removed (only empty folders: an interrupted run keeps its own)."""
        super().write_outputs(records, summary, meta)
        remove_empty_folders(self.out / ".resume")

    def summarize(self, records: dict[str, list[dict]]) -> dict[str, Any]:
        return summarize(records, self.config)

    def extra_meta(self) -> dict[str, Any]:
        return {"net": self.net.name, "images": self.images}

    def findings(self, records: dict[str, list[dict]], summary: dict[str, Any]
                 ) -> dict[str, Any]:
        return evaluate_claims(records, self.config)

    def write_figures(self, records: dict[str, list[dict]], summary: dict[str, Any]
                      ) -> list[Path]:
        return write_figures(self.out, self.config, records, summary)

    def report(self, summary: dict[str, Any], findings: dict[str, Any], meta: dict[str, Any],
               figures: list[Path]) -> str:
        return markdown(self.config, summary, findings, meta, figures)

    def terminal_summary(self, summary: dict[str, Any], findings: dict[str, Any],
                         meta: dict[str, Any]) -> str:
        return terminal_table(self.config, summary, findings, meta)
