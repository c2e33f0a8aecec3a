"""What every part of the compare study shares: its config and reading its records.

A leaf module: :mod:`.compare` (jobs, summary, the study) and :mod:`.compare_report`
(the literature, figures, report) both import from here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..core.limits import MAX_BATCH, MAX_EPOCHS, MAX_PROBE, MAX_SEED, MAX_SEEDS
from .study import option


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

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def errors_by_seed(records: list[dict]) -> dict[int, float]:
    """{seed: test error}, NaN for a diverged run."""
    return {r["seed"]: (math.nan if r["test_error"] is None else r["test_error"])
            for r in records}
