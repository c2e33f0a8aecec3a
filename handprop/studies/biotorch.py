"""``handprop biotorch``: BioTorch's LeNet table on Fashion-MNIST, with seeds and intervals.

BioTorch (Sanfiz & Akrout 2021; github.com/jsalbert/biotorch, ``Benchmarks.md``) reports
one number per learning rule: the top-1 test error of LeNet MNIST on Fashion-MNIST, one
seed, at the epoch with the best accuracy *on the same 10,000 images it reports*. This
study trains the same network with the same protocol (:data:`PROTOCOL`), for many seeds,
and picks each run's epoch on a validation split carved from the 60,000 training images;
the error is then read on the 10,000 test images, which took no part in any choice.
BioTorch's own selection (best epoch on the test images) is reported beside it,
labelled optimistic.

One job trains one rule from one seed (every rule starts from the same weights and sees
the same split and order for a seed: paired), evaluates the validation and test images
after every epoch, measures the alignment of the rule's update with the exact gradient
(:mod:`.alignment`), keeps a resume point every ``checkpoint_every`` epochs, and writes
one JSON record. Statistics and the report are :mod:`.biotorch_report`.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.io import write_json
from ..core.limits import MAX_BATCH, MAX_EPOCHS, MAX_PROBE, MAX_SEED, MAX_SEEDS
from .records import collect, rounded, versions
from .runner import Job
from .study import Study, option, register_study

RECORD_VERSION = 1
BIOTORCH_SOURCE = "jsalbert/biotorch Benchmarks.md, commit 536ea216"
# Top-1 test error (%) of LeNet MNIST, one seed, best epoch on the reported images.
BIOTORCH_LENET = {
    "fashion-mnist": {"exact": 9.2, "fa": 13.06, "usf": 9.69, "brsf": 10.02, "frsf": 9.61,
                      "dfa-biotorch": 12.81},
    "mnist": {"exact": 0.91, "fa": 1.7, "usf": 0.94, "brsf": 0.91, "frsf": 0.97,
              "dfa-biotorch": 1.61},
}
PROTOCOL = ("LeNet MNIST (biotorch/models/le_net.py), 28x28 images resized to 32x32 and "
            "normalised; SGD, momentum 0.9, weight decay 1e-3, batch 64, 100 epochs, "
            "learning rate x0.1 at epochs 50 and 75; one seed; best epoch chosen on the "
            "10,000 test images")
CLAIM_FORMS = (">", "~")


@dataclass
class BiotorchConfig:
    """Everything that defines the study (defaults: configs/biotorch.toml)."""

    rules: list[str] = option(default_factory=list, help="comma-separated rules")
    seeds: int = option(3, low=1, high=MAX_SEEDS)
    first_seed: int = option(0, low=0, high=MAX_SEED)
    data: str = option("fashion-mnist", help="fashion-mnist[:DIR] | idx:FOLDER (MNIST-format "
                                             "files with t10k-* test files)")
    net: str = option("lenet-biotorch", help="lenet-biotorch | lenet | PATH.toml")
    resize: int = option(32, low=0, high=4096, help="resize images to this size (0: keep)")
    pixel_mean: float = option(0.2859)
    pixel_std: float = option(0.3530)
    validation_images: int = option(10000, low=1, high=10**8,
                                    help="carved from the training images, per seed")
    train_images: int = option(10000, low=0, high=10**8, help="0 = all the rest")
    test_images: int = option(0, low=0, high=10**8, help="0 = all")
    epochs: int = option(8, low=1, high=MAX_EPOCHS)
    batch_size: int = option(64, low=1, high=MAX_BATCH)
    momentum: float = option(0.9)
    weight_decay: float = option(0.001)
    schedule: str = option("multistep", help="constant | step | multistep | cosine")
    learning_rates: list[str] = option(default_factory=list,
                                       help="RULE=LR,... initial learning rate of every rule "
                                            "(replaces the config's list)")
    dtype: str = option("float32", help="float32 | float64")
    engine: str = option("auto", help="auto | numpy | compiled")
    probe: int = option(64, low=1, high=MAX_PROBE)
    align_every: int = option(1, low=1, high=MAX_EPOCHS,
                              help="epochs between alignment measurements")
    checkpoint_every: int = option(1, low=1, high=MAX_EPOCHS,
                                   help="epochs between a run's resume points")
    confirmatory: list[str] = option(default_factory=list,
                                     help="claims fixed before the run: 'A > B' (A's test "
                                          "error is higher), 'A ~ B' (within +-margin)")
    margin: float = option(1.0, help="equivalence margin, percentage points of test error")

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def lr_of(self, rule: str) -> float:
        return learning_rates(self)[rule]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def learning_rates(config: BiotorchConfig) -> dict[str, float]:
    """``{rule: initial learning rate}`` from ``RULE=LR`` entries; every rule needs one."""
    found: dict[str, float] = {}
    for entry in config.learning_rates:
        rule, sep, value = entry.partition("=")
        try:
            lr = float(value)
        except ValueError:
            lr = math.nan
        if not sep or not rule.strip() or not (math.isfinite(lr) and lr > 0):
            raise ConfigError(f"learning_rates: expected RULE=LR with LR > 0, got {entry!r}")
        found[rule.strip()] = lr
    missing = [r for r in config.rules if r not in found]
    if missing:
        raise ConfigError(f"learning_rates: no learning rate for {', '.join(missing)}")
    return found


def parse_claim(text: str, rules: Any) -> tuple[str, str, str]:
    """``"fa > exact"`` -> ``("fa", ">", "exact")``; both must be names in ``rules``."""
    parts = text.split()
    if len(parts) != 3 or parts[1] not in CLAIM_FORMS:
        raise ConfigError(f"confirmatory claim {text!r}: expected 'A > B' or 'A ~ B'")
    a, form, b = parts
    unknown = [r for r in (a, b) if r not in rules]
    if unknown or a == b:
        raise ConfigError(f"confirmatory claim {text!r}: "
                          + (f"unknown rule {', '.join(unknown)}" if unknown
                             else "compares a rule with itself"))
    return a, form, b


def active_claims(config: BiotorchConfig) -> tuple[list[str], list[str]]:
    """(claims tested, claims dropped because a rule they name is not run): ``--rules``
    may leave a claim of the config without data; the report names the dropped ones."""
    from ..rules import RULES

    kept, dropped = [], []
    for text in config.confirmatory:
        a, _, b = parse_claim(text, RULES)
        (kept if a in config.rules and b in config.rules else dropped).append(text)
    return kept, dropped


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
        for claim in config.confirmatory:
            parse_claim(claim, RULES)
        if config.engine not in ENGINES:
            raise ConfigError(f"engine must be one of {', '.join(ENGINES)}")
        if not (config.pixel_std > 0 and config.margin > 0):
            raise ConfigError("pixel_std and margin must be > 0")
        for rule in config.rules:
            TrainConfig(epochs=config.epochs, batch_size=config.batch_size,
                        optimizer="momentum", lr=rates[rule], momentum=config.momentum,
                        weight_decay=config.weight_decay, schedule=config.schedule,
                        dtype=config.dtype).validate()
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def record_path(out: Path, rule: str, seed: int) -> Path:
    return out / "runs" / rule / f"seed{seed}.json"


def resume_path(out: Path, rule: str, seed: int) -> Path:
    return out / ".resume" / rule / f"seed{seed}.npz"


# -- the data of one seed ---------------------------------------------------------------

@dataclass
class SeedData:
    """One seed's images, ready for the network: (N, C, H, W) in the run's dtype."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[int, ...]


def raw_data(spec: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray,
                                 tuple[int, ...]]:
    """(train images, train labels, test images, test labels, classes) as on disk."""
    from ..training.data import fashion_mnist_arrays, load_idx_arrays

    if spec == "fashion-mnist" or spec.startswith("fashion-mnist:"):
        arrays = fashion_mnist_arrays(spec.partition(":")[2] or None)
    elif spec.startswith("idx:") and len(spec) > 4:
        arrays = load_idx_arrays(spec[4:])
    else:
        raise ConfigError(f"data must be fashion-mnist[:DIR] or idx:FOLDER, got {spec!r}")
    if arrays[0].dtype != np.uint8:
        raise ConfigError(f"{spec}: images must be 8-bit (uint8), as MNIST's are; got "
                          f"{arrays[0].dtype}")
    classes = tuple(int(c) for c in np.unique(arrays[1]))
    return (*arrays, classes)


def seed_data(config: BiotorchConfig, seed: int) -> SeedData:
    """The seed's split: ``validation_images`` drawn (stratified) from the training images,
    ``train_images`` of the rest, the first ``test_images`` test images; then resized and
    normalised as BioTorch does (pixels / 255, minus the mean, over the std)."""
    from ..core.streams import Stream, generator
    from ..training.data import stratified_split

    train_x, train_y, test_x, test_y, classes = raw_data(config.data)
    count = len(train_y)
    if config.validation_images >= count:
        raise ConfigError(f"validation_images {config.validation_images} must be fewer "
                          f"than the {count} training images")
    train, val = stratified_split(train_y, config.validation_images / count,
                                  generator(seed, Stream.HELDOUT))
    if config.train_images:
        train = train[: config.train_images]
    test = np.arange(config.test_images or len(test_y))[: len(test_y)]
    index = {c: i for i, c in enumerate(classes)}

    def prepared(images: np.ndarray, labels: np.ndarray, rows: np.ndarray):
        x = images[rows]
        if config.resize:
            from ..training.data import resize_bilinear

            x = resize_bilinear(x, (config.resize, config.resize), round_8bit=True)
        x = (np.asarray(x, dtype=np.float64) / 255 - config.pixel_mean) / config.pixel_std
        return x.astype(config.dtype), np.array([index[int(v)] for v in labels[rows]])

    return SeedData(*prepared(train_x, train_y, train), *prepared(train_x, train_y, val),
                    *prepared(test_x, test_y, test), classes)


# -- one job: one rule from one seed ----------------------------------------------------

@dataclass
class Curves:
    """What a run measures after every epoch (percent errors; the training loss is the
    mean over its batches), and the alignment log."""

    train_loss: list[float | None]
    val_error_pct: list[float]
    test_error_pct: list[float]
    epoch_seconds: list[float]
    alignment: Any  # an AlignmentLog
    alignment_epochs: list[int]

    def to_meta(self) -> dict[str, Any]:
        return {"train_loss": self.train_loss, "val_error_pct": self.val_error_pct,
                "test_error_pct": self.test_error_pct, "epoch_seconds": self.epoch_seconds,
                "alignment": self.alignment.as_lists(0),
                "alignment_epochs": self.alignment_epochs}

    def restore(self, meta: dict[str, Any]) -> None:
        """Continue from :meth:`to_meta` (a resume point)."""
        for key in ("train_loss", "val_error_pct", "test_error_pct", "epoch_seconds",
                    "alignment_epochs"):
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


def _percent_error(net: Any, x: np.ndarray, y: np.ndarray) -> float:
    from ..training.loop import evaluate

    with np.errstate(all="ignore"):
        return float(100 * (1 - evaluate(net, x, y).accuracy))


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
    curves = Curves([], [], [], [], log, [])
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
        curves.val_error_pct.append(_percent_error(net, data.x_val, data.y_val))
        curves.test_error_pct.append(_percent_error(net, data.x_test, data.y_test))
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
        "val_error_pct": val, "test_error_pct": test,
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
            "learning_rates": [f"{rule}={config.lr_of(rule)!r}"], "confirmatory": [],
            "margin": 1.0}


def build_jobs(config: BiotorchConfig, out: Path, steps_per_epoch: int) -> list[Job]:
    """One job per (rule, seed); ``steps_per_epoch`` feeds the ETA."""
    jobs = []
    for rule in config.rules:
        for seed in config.seed_list:
            spec = {"job_id": f"biotorch/{rule}/seed{seed}", "out": str(out), "rule": rule,
                    "seed": seed, "config": run_config(config, rule, seed)}
            jobs.append(Job(spec["job_id"], "handprop.studies.biotorch:run_job", spec,
                            [record_path(out, rule, seed)],
                            steps=config.epochs * steps_per_epoch))
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
    """BioTorch's LeNet table: the skeleton with this module's jobs, and the statistics,
    report and figures of :mod:`.biotorch_report`."""

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
    def validate_config(cls, config: BiotorchConfig, source: str = "config") -> BiotorchConfig:
        return _check(config, source)

    def prepare(self) -> None:
        """Load and check the data and build the network now: bad data or a missing
        package fails before any output."""
        from .biotorch_report import design_notice

        first = seed_data(self.config, self.config.first_seed)
        self.images = {"train": len(first.y_train), "validation": len(first.y_val),
                       "test": len(first.y_test)}
        self.net = _network(self.config, first.x_train.shape[1:], len(first.classes))
        for line in design_notice(self.config):  # once the inputs are known to be good
            print(f"biotorch: {line}", file=sys.stderr)

    def build_jobs(self) -> list[Job]:
        steps = -(-self.images["train"] // self.config.batch_size)
        return build_jobs(self.config, self.out, steps)

    def memory_needed(self, jobs: list[Job]) -> list[tuple[str, int]]:
        """One run (its network, a batch, evaluation chunks of 512, its three image sets),
        times the jobs that run at once."""
        from ..core.limits import estimate_training_bytes

        itemsize = np.dtype(self.config.dtype).itemsize
        images = sum(self.images.values())
        per_job = estimate_training_bytes(self.net, 1, max(self.config.batch_size, 512),
                                          images, itemsize)
        at_once = self.concurrent_jobs(jobs)
        return [(f"biotorch: network {self.net.name!r} on {images} images, {at_once} job"
                 f"{'s' if at_once > 1 else ''} at once", per_job * at_once)]

    def load_records(self, jobs: list[Job]) -> dict[str, list[dict]]:
        return load_records(jobs)

    def write_outputs(self, records: Any, summary: dict[str, Any],
                      meta: dict[str, Any]) -> None:
        """The skeleton's outputs; then the resume folders that no longer hold a resume
        point are removed (only empty folders: an interrupted run keeps its own)."""
        super().write_outputs(records, summary, meta)
        remove_empty_folders(self.out / ".resume")

    def summarize(self, records: dict[str, list[dict]]) -> dict[str, Any]:
        from .biotorch_report import summarize

        return summarize(records, self.config)

    def extra_meta(self) -> dict[str, Any]:
        return {"net": self.net.name, "images": self.images}

    def findings(self, records: dict[str, list[dict]], summary: dict[str, Any]
                 ) -> dict[str, Any]:
        from .biotorch_report import claims

        return claims(records, self.config)

    def write_figures(self, records: dict[str, list[dict]], summary: dict[str, Any]
                      ) -> list[Path]:
        from .biotorch_report import write_figures

        return write_figures(self.out, self.config, records, summary)

    def report(self, summary: dict[str, Any], findings: dict[str, Any], meta: dict[str, Any],
               figures: list[Path]) -> str:
        from .biotorch_report import markdown

        return markdown(self.config, summary, findings, meta, figures)

    def terminal_summary(self, summary: dict[str, Any], findings: dict[str, Any],
                         meta: dict[str, Any]) -> str:
        from .biotorch_report import terminal_table

        return terminal_table(self.config, summary, findings, meta)
