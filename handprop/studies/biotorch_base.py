"""What every part of the biotorch study shares: its config, the data of one seed, and
reading the runs' records back (one number per rule and seed).

A leaf module: :mod:`.biotorch` (jobs, the study) and :mod:`.biotorch_report` (claims,
figures, report) both import from here, never from each other in a circle.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.limits import MAX_BATCH, MAX_EPOCHS, MAX_PROBE, MAX_SEED, MAX_SEEDS
from .claims import ClaimSpec
from .study import option

# Records of another layout are redone (the version is part of every job's settings).
RECORD_VERSION = 2
BIOTORCH_SOURCE = ("jsalbert/biotorch, Benchmarks.md at commit "
                   "536ea216ddac4056a6b2187314b1fe56349ce87b")
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
# What a claim can compare, per seed: the test error (a fraction) at the epoch the
# validation images picked (honest), at the best test epoch (BioTorch's selection,
# optimistic), or after the last epoch -- each a record key holding it in percent.
METRICS = {"test_error": "test_error_pct_selected", "test_error_best": "test_error_pct_best",
           "test_error_last": "test_error_pct_final"}
# Stuck at chance: at the epoch validation picked, the net gives one class to at least
# this share of the validation images (its error is then about 90% on 10 classes).
STUCK_SHARE = 0.95


@dataclass
class BiotorchConfig:
    """Everything that defines the study (defaults: configs/biotorch.toml)."""

    rules: list[str] = option(default_factory=list, help="comma-separated rules")
    seeds: int = option(5, low=1, high=MAX_SEEDS)
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
    claims: list[ClaimSpec] = field(default_factory=list)  # [[biotorch.claims]]

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


def record_path(out: Path, rule: str, seed: int) -> Path:
    return out / "runs" / rule / f"seed{seed}.json"


def resume_path(out: Path, rule: str, seed: int) -> Path:
    return out / ".resume" / rule / f"seed{seed}.npz"


def reference_column(config: BiotorchConfig) -> str | None:
    """BioTorch's column to quote: Fashion-MNIST for its files, MNIST for IDX folders
    (users' MNIST files), None for anything else."""
    if config.data.startswith("fashion-mnist"):
        return "fashion-mnist"
    return "mnist" if config.data.startswith("idx:") else None


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


def seed_data(config: BiotorchConfig, seed: int, raw: tuple | None = None) -> SeedData:
    """The seed's split: ``validation_images`` drawn (stratified) from the training images,
    ``train_images`` of the rest, the first ``test_images`` test images; then resized and
    normalised as BioTorch does (pixels / 255, minus the mean, over the std). ``raw``: the
    files as :func:`raw_data` read them (else they are read)."""
    from ..core.streams import Stream, generator
    from ..training.data import resize_to, stratified_split

    train_x, train_y, test_x, test_y, classes = raw or raw_data(config.data)
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
    size = (config.resize, config.resize) if config.resize else None

    def prepared(images: np.ndarray, labels: np.ndarray, rows: np.ndarray):
        x = resize_to(images[rows], size)
        x = (np.asarray(x, dtype=np.float64) / 255 - config.pixel_mean) / config.pixel_std
        return x.astype(config.dtype), np.array([index[int(v)] for v in labels[rows]])

    return SeedData(*prepared(train_x, train_y, train), *prepared(train_x, train_y, val),
                    *prepared(test_x, test_y, test), classes)


# -- reading records: one number per rule and seed ---------------------------------------

def metric_values(records: list[dict], metric: str) -> dict[int, float]:
    """{seed: the claim metric as a fraction} over a rule's records; NaN where absent."""
    if metric not in METRICS:
        raise ConfigError(f"unknown metric {metric!r}; choose {', '.join(METRICS)}")
    key = METRICS[metric]
    return {r["seed"]: (math.nan if r.get(key) is None else float(r[key]) / 100)
            for r in records}


def is_stuck(record: dict) -> bool | None:
    """Stuck at chance (:data:`STUCK_SHARE`) at the epoch the validation images picked;
    None when the run has no selected epoch (it diverged at once)."""
    epoch, shares = record.get("selected_epoch"), record.get("val_top_share") or []
    if epoch is None or not 1 <= epoch <= len(shares) or shares[epoch - 1] is None:
        return None
    return shares[epoch - 1] >= STUCK_SHARE


def stuck_flags(records: list[dict]) -> dict[int, bool | None]:
    """{seed: stuck at chance} over a rule's records."""
    return {r["seed"]: is_stuck(r) for r in records}
