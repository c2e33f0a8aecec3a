"""What every part of the reproduce study shares: its config, the data of each run,
and reading the runs' records back (one number per seed).

A leaf module: :mod:`.reproduce` (jobs, summary, the study), :mod:`.reproduce_claims`,
:mod:`.reproduce_report` and :mod:`.sensitivity` import from here, never from each other
in a circle.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from ..core.article import ARTICLE
from ..core.errors import ConfigError
from ..core.io import check_name
from ..core.limits import MAX_EPOCHS, MAX_PROBE, MAX_SEED, MAX_SEEDS, MAX_WIDTH, check_int
from ..core.schema import check_type
from ..core.streams import Stream, generator
from .claims import ClaimSpec
from .study import option

IMAGES = 360  # the digits 0 and 1 of scikit-learn's set
VARIANTS = {"corrected": "seed", "as-run": "seed-as-run"}  # variant -> preset
PROTOCOLS = ("article", "heldout", "fold")
# Records by (variant, experiment, rule, protocol).
Records = dict[tuple[str, str, str, str], list[dict]]
TRANSFORMS = ("transpose", "rot180")
# The as-run ablations (the author's protocol): the code's rule as it ran (the baseline),
# the exact gradient of the as-run net, conv learning rate x0.1, conv kernels frozen.
ABLATIONS = ("code", "exact-gradient", "conv-lr-0.1", "frozen-conv")
SEEDINGS = ("handprop", "author")
# The pairings of an original and a broken net the claims can be asked of.
PAIRING_KEYS = ("code", "as-run", "text")
# What a claim can compare, per seed: (protocol of the run, unit, lower is better, bounds of
# one run's value). cost@E is the training cost of epoch E.
METRICS = {"final_cost": ("article", "", True, (0.0, math.inf)),
           "test10_accuracy": ("article", "%", False, (0.0, 1.0)),
           "heldout_accuracy": ("heldout", "%", False, (0.0, 1.0))}
# Stuck at chance: the trained net gives one class to at least this share of its
# training images (its state after the last epoch).
STUCK_SHARE = 0.95
CHANCE_COST = 0.125  # per training image: 0.5 * 0.5^2, the L2 cost of predicting 0.5


def stuck_ranges(train_images: int) -> dict[str, tuple[float, float]]:
    """The values a stuck run's metrics can take (what the two-part interval assumes for
    the stuck part when fewer than 2 seeds are stuck): a final cost from 0.4 of the cost of
    predicting 0.5 (the images of the minority class alone, on the wrong side of 0.5, cost
    about that) to 2.2 times it (the wrong class with certainty, with a margin); a
    held-out accuracy within 10 points of 50% on balanced classes; any test10 accuracy
    (the 10 images' class mix varies)."""
    chance = train_images * CHANCE_COST
    return {"final_cost": (0.4 * chance, 2.2 * chance), "test10_accuracy": (0.0, 1.0),
            "heldout_accuracy": (0.4, 0.6)}


def metric_bounds(metric: str, train_images: int) -> tuple[float, float]:
    """The range of one run's value: a cost is at most 0.5 per image, an accuracy in [0, 1]."""
    return (0.0, 0.5 * train_images) if "cost" in metric else (0.0, 1.0)


@dataclass
class Experiment:
    name: str
    fc: tuple[int, int]
    claim: str = ""


@dataclass(frozen=True)
class ReproduceClaim(ClaimSpec):
    """A claim of the article, asked of one experiment and of each of ``pairings`` (the
    arms are "broken" and "original": the pairing's two nets)."""

    experiment: str = ""
    pairings: list[str] = field(default_factory=lambda: list(PAIRING_KEYS))


def metric_info(metric: str) -> tuple[str, str, bool, tuple[float, float]]:
    """(protocol, unit, lower is better, bounds) of a claim's metric; ``cost@E`` too."""
    if metric in METRICS:
        return METRICS[metric]
    if metric.startswith("cost@") and metric[5:].isdigit() and int(metric[5:]) > 0:
        return "article", "", True, (0.0, math.inf)
    raise ConfigError(f"unknown metric {metric!r}; choose {', '.join(METRICS)} or cost@EPOCH")


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
    sensitivity: int = option(5, help="seeds per experiment and rule rerun with one initial "
                                      "weight moved by one ulp and by 1e-8 (0: none)", low=0,
                              high=MAX_SEEDS)
    sensitivity_experiments: list[str] = option(
        default_factory=list, help="experiments of the sensitivity runs (default: all)")
    track_epochs: int = option(2, help="epochs of each sensitivity run followed step by step "
                                       "(NumPy engine)", low=0, high=MAX_EPOCHS)
    ablation_epochs: int = option(100, help="epochs of the as-run ablation runs (0: none)",
                                  low=0, high=MAX_EPOCHS)
    ablation_fc: list[int] = field(default_factory=lambda: [20, 36])
    ablations: list[str] = field(default_factory=lambda: list(ABLATIONS))
    seeding: str = option("handprop", help="handprop | author: the author's np.random.seed(S) "
                                           "order (shuffle, then W1a..W5) for the article runs")
    engine: str = option("auto", help="auto | numpy | compiled")
    claims: list[ReproduceClaim] = field(default_factory=list)
    extra: dict[str, Any] = field(default_factory=dict, metadata={"toml": False})

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    @property
    def sensitivity_list(self) -> list[Experiment]:
        """The experiments the sensitivity runs use."""
        chosen = set(self.sensitivity_experiments)
        return [e for e in self.experiments if not chosen or e.name in chosen]

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
    from ..training.data import digits_images

    images, labels = digits_images(ARTICLE.classes)
    images.setflags(write=False)
    labels.setflags(write=False)
    return images, labels


def split_for(run: dict[str, Any], folds: int, seeding: str = "handprop"):
    """The data of one run: the article's split (its ``seeding``'s), the seed's 80/20
    split, or one fold."""
    from ..training.data import Dataset, load_digits, stratified_split

    seed = run["seed"]
    if run["protocol"] == "article":
        return author_run(seed, (1, 1))[0] if seeding == "author" else load_digits(seed=seed)
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


def author_run(seed: int, fc: tuple[int, int]) -> tuple[Any, dict[str, np.ndarray]]:
    """The article's run as the author's code seeds it: ``np.random.seed(S)``, the 0s then
    the 1s shuffled together by ``sklearn.utils.shuffle`` (the first 10 held out), then
    W1a, W1b, W2a..W2d (3x3), W3 (16 x fc0), W4 (fc0 x fc1), W5 (fc1 x 1) drawn from the
    same stream. Returns the data and the initial weights in handprop's layout: kernels
    flipped (the code convolves), dense weights transposed."""
    from sklearn.utils import shuffle

    from ..training.data import Dataset

    images, labels = digits()
    order = np.concatenate([np.flatnonzero(labels == c) for c in (0, 1)])
    rng = np.random.RandomState(seed)  # the global state np.random.seed(S) sets
    x, y = shuffle(images[order], labels[order], random_state=rng)
    kernels = np.stack([rng.randn(3, 3) for _ in range(6)])[:, None, ::-1, ::-1]
    dense = [rng.randn(16, fc[0]), rng.randn(fc[0], fc[1]), rng.randn(fc[1], 1)]
    weights = {"conv1.weight": kernels[:2], "conv2.weight": kernels[2:],
               "fc3.weight": dense[0].T, "fc4.weight": dense[1].T, "fc5.weight": dense[2].T}
    data = Dataset("digits-author", x[10:], y[10:], x[:10], y[:10], ARTICLE.classes,
                   info={"seed": seed, "split": "author"})
    return data.validate(), weights


def initialise(net: Any, seeds: list[int], fc: tuple[int, int], seeding: str) -> None:
    """The initial weights of replica r: ``net.init`` with seed ``seeds[r]``, or the
    author's draws for that seed (:func:`author_run`)."""
    net.init(replicas=seeds)
    if seeding == "author":
        for r, seed in enumerate(seeds):
            for name, value in author_run(seed, fc)[1].items():
                net.params[name][r] = value


def record_path(out: Path, variant: str, experiment: str, rule: str,
                run: dict[str, Any]) -> Path:
    """Where one run's record goes: runs/<variant>/<experiment>/<rule>/<protocol>-seed<S>.json."""
    fold = f"-fold{run['fold']}" if run["protocol"] == "fold" else ""
    name = f"{run['protocol']}-seed{run['seed']}{fold}.json"
    return out / "runs" / variant / experiment / rule / name


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


def is_stuck(record: dict) -> bool | None:
    """Stuck at chance (:data:`STUCK_SHARE`): the trained net gives one class to (nearly)
    every training image. None for a diverged run."""
    share = record.get("train_predicted_share")
    return None if share is None else share >= STUCK_SHARE


def metric_value(metric: str):
    """The per-run value of a claim's metric (a function of a record; None when absent)."""
    if metric.startswith("cost@"):
        epoch = int(metric[5:])
        return lambda r: (r["cost"][epoch - 1] if not r["diverged"] and len(r["cost"]) >= epoch
                          else None)
    if metric == "final_cost":
        return final_cost
    return lambda r: r["test_accuracy"]


def final_cost(record: dict) -> float | None:
    return None if record["diverged"] or not record["cost"] else record["cost"][-1]
