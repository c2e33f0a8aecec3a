"""What every part of the compare study shares: its config and reading its records.

A leaf module: :mod:`.compare` (jobs, summary, the study) and :mod:`.compare_report`
(the literature, figures, report) both import from here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from ..core.errors import ConfigError
from ..core.limits import MAX_BATCH, MAX_EPOCHS, MAX_PROBE, MAX_SEED, MAX_SEEDS
from .claims import ClaimSpec
from .study import option

# What a claim can compare, per seed: test_error (after the last epoch), or the largest
# angle to the exact one after training started (degrees, against a constant b such as
# "90") of the signal a rule sends to a hidden layer, or of a weight array's update.
ANGLE_METRICS = {"max_signal_angle": "signal", "max_update_angle": "gradient"}


@dataclass(frozen=True)
class CompareClaim(ClaimSpec):
    """A claim of the literature. For an angle metric, ``b`` is a constant (degrees) and
    the claim is asked of each of ``layers`` (empty: every hidden layer the rule has)."""

    layers: list[str] = field(default_factory=list)


def metric_values(records: list[dict], metric: str, layer: str = "") -> dict[int, float]:
    """{seed: the metric} over a rule's records; NaN for a diverged run."""
    if metric == "test_error":
        return errors_by_seed(records)
    if metric in ANGLE_METRICS:
        return max_angles(records, ANGLE_METRICS[metric], layer)
    raise ConfigError(f"unknown metric {metric!r}; choose test_error, "
                      f"{', '.join(ANGLE_METRICS)}")


def max_angles(records: list[dict], section: str, layer: str) -> dict[int, float]:
    """{seed: the largest angle measured after training started} of one layer."""
    out = {}
    for record in records:
        values = ((record.get("alignment") or {}).get(section) or {}).get(layer, {}).get(
            "angle_deg", [])
        later = [v for v in values[1:] if v is not None]  # entry 0: before training
        out[record["seed"]] = max(later) if later and not record["diverged"] else math.nan
    return out


@dataclass
class CompareConfig:
    """Everything that defines a comparison (defaults: configs/compare.toml)."""

    rules: list[str] = option(default_factory=list, help="comma-separated rules")
    seeds: int = option(10, low=1, high=MAX_SEEDS)
    first_seed: int = option(0, low=0, high=MAX_SEED)
    data: str = option("digits10", help="digits10 | idx:PATH (MNIST-format files; uses lenet)")
    net: str = option("small", help="small | lenet | PATH.toml")
    epochs: int = option(50, low=1, high=MAX_EPOCHS)
    batch_size: int = option(32, low=1, high=MAX_BATCH)
    optimizer: str = option("adam")
    lr: float = option(0.001)
    momentum: float = option(0.9)
    probe: int = option(64, low=1, high=MAX_PROBE)
    align_every: int = option(5, help="epochs between alignment measurements", low=1,
                              high=MAX_EPOCHS)
    engine: str = option("auto", help="auto | numpy | compiled")
    claims: list[CompareClaim] = field(default_factory=list)

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def errors_by_seed(records: list[dict]) -> dict[int, float]:
    """{seed: test error}, NaN for a diverged run."""
    return {r["seed"]: (math.nan if r["test_error"] is None else r["test_error"])
            for r in records}


def error_curve(records: list[dict], epoch: int) -> dict[int, float]:
    """{seed: test error after ``epoch``} from the runs' measured curves (NaN where the
    epoch was not measured or the run diverged)."""
    out = {}
    for record in records:
        epochs, curve = record.get("test_error_epochs") or [], record.get("test_error_curve")
        value = curve[epochs.index(epoch)] if curve and epoch in epochs else None
        out[record["seed"]] = math.nan if value is None or record["diverged"] else value
    return out
