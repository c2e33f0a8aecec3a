"""What every part of the reproduce study shares: its config, the data of each run,
and reading the runs' records back (one number per seed).

A leaf module: :mod:`.reproduce` (jobs, summary, the study), :mod:`.reproduce_claims`,
:mod:`.reproduce_report` and :mod:`.sensitivity` import from here, never from each other
in a circle.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from ..core.article import ARTICLE
from ..core.errors import ConfigError
from ..core.io import check_name
from ..core.limits import MAX_EPOCHS, MAX_PROBE, MAX_SEED, MAX_SEEDS, MAX_WIDTH, check_int
from ..core.schema import check_type
from ..core.streams import Stream, generator
from .study import option

IMAGES = 360  # the digits 0 and 1 of scikit-learn's set
VARIANTS = {"corrected": "seed", "as-run": "seed-as-run"}  # variant -> preset
PROTOCOLS = ("article", "heldout", "fold")
# Records by (variant, experiment, rule, protocol).
Records = dict[tuple[str, str, str, str], list[dict]]
TRANSFORMS = ("transpose", "rot180")


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
    seeds: int = option(11, help="number of paired seeds", low=1, high=MAX_SEEDS)
    first_seed: int = option(0, low=0, high=MAX_SEED)
    epochs: int = option(ARTICLE.epochs, low=1, high=MAX_EPOCHS)
    lr: float = ARTICLE.lr
    momentum: float = ARTICLE.momentum
    heldout: bool = True  # also train each seed on a stratified 80% split, score the 20%
    folds: int = option(0, help="k-fold CV per seed instead of the single 80/20 split "
                                "(0: off)", low=0, high=IMAGES)
    probe: int = option(32, help="images in the alignment probe batch", low=1,
                        high=MAX_PROBE)
    align_every: int = option(5, help="epochs between alignment measurements", low=1,
                              high=MAX_EPOCHS)
    transform: str = option("transpose", help="map transform of broken-text: transpose "
                                              "(the article's text) | rot180 (its code)")
    variant: list[str] = option(default_factory=lambda: ["corrected", "as-run"],
                                help="networks: corrected (the article's text) and/or "
                                     "as-run (the network its code ran)")
    as_run_rules: list[str] = field(default_factory=lambda: ["seed-original", "seed-broken"])
    sensitivity: int = option(2, help="seeds per experiment rerun with one initial weight "
                                      "moved by one ulp and by 1e-8 (0: none)", low=0,
                              high=MAX_SEEDS)
    engine: str = option("auto", help="auto | numpy | compiled")
    extra: dict[str, Any] = field(default_factory=dict, metadata={"toml": False})

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def rules_of(self, variant: str) -> list[str]:
        """The rules trained on ``variant``'s network."""
        return list(self.rules) if variant == "corrected" else list(self.as_run_rules)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_experiments(items: Any, source: str) -> list[Experiment]:
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
    return experiments


# -- data ------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def digits() -> tuple[np.ndarray, np.ndarray]:
    """The 360 images of 0 and 1 of scikit-learn's digits in the set's own order (float64,
    raw pixels) and their labels 0/1: what the held-out splits and folds index into.
    Read-only arrays, loaded once per process."""
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    keep = np.isin(data.target, ARTICLE.classes)
    images = data.images[keep][:, None].astype(np.float64)
    labels = np.array([ARTICLE.classes.index(int(v)) for v in data.target[keep]], dtype=np.int64)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def split_for(run: dict[str, Any], folds: int):
    """The data of one run: the article's split, the seed's 80/20 split, or one fold."""
    from ..training.data import Dataset, load_digits, stratified_split

    seed = run["seed"]
    if run["protocol"] == "article":
        return load_digits(seed=seed)
    images, labels = digits()
    if run["protocol"] == "heldout":
        train, test = stratified_split(labels, 0.2, generator(seed, Stream.HELDOUT))
    else:  # fold: the seed's own assignment of images to folds
        assignment = equal_stratified_folds(labels, folds, seed)
        test = np.flatnonzero(assignment == run["fold"])
        train = generator(seed, Stream.DATA_SPLIT, run["fold"]).permutation(
            np.flatnonzero(assignment != run["fold"]))
    return Dataset(f"digits-{run['protocol']}", images[train], labels[train], images[test],
                   labels[test], ARTICLE.classes, info={"test_index": test.tolist()})


def equal_stratified_folds(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """Fold id of every item: classes shuffled, then dealt round-robin, so folds are
    equal in size (when ``folds`` divides the count) and stratified."""
    rng = generator(seed, Stream.FOLDS)
    order = np.concatenate([rng.permutation(np.flatnonzero(labels == c))
                            for c in np.unique(labels)])
    fold = np.empty(len(labels), dtype=np.int64)
    fold[order] = np.arange(len(labels)) % folds
    return fold


def padded(arrays: list[np.ndarray]) -> np.ndarray:
    """Stack arrays of different lengths, padding each with its first item."""
    longest = max(len(a) for a in arrays)
    return np.stack([np.concatenate([a, np.repeat(a[:1], longest - len(a), axis=0)])
                     for a in arrays])


# -- reading records: one number per seed -------------------------------------------

def per_seed(records: list[dict], value) -> dict[int, float]:
    """{seed: value(records of that seed)} -- folds of one seed are averaged, so every
    seed gives one number (NaN where its runs diverged)."""
    by_seed: dict[int, list[float]] = {}
    for record in records:
        got = value(record)
        by_seed.setdefault(record["seed"], []).append(np.nan if got is None else got)
    return {seed: float(np.mean(values)) for seed, values in sorted(by_seed.items())}


def final_cost(record: dict) -> float | None:
    return None if record["diverged"] or not record["cost"] else record["cost"][-1]
