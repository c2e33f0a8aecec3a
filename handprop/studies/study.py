"""What the studies (``reproduce``, ``compare``) share: training a group of runs in
lockstep with alignment logging and progress, and reading their record files back."""

from __future__ import annotations

import contextlib
import json
import math
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import HandpropError


def versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    from .. import __version__

    found = {"handprop": __version__, "numpy": np.__version__,
             "python": platform.python_version()}
    # the compiled engine's compiler, read from the metadata (numba is not imported)
    with contextlib.suppress(PackageNotFoundError):
        found["numba"] = version("numba")
    return found


def rounded(values: Sequence[float | None], digits: int = 7) -> list[float | None]:
    """Floats to ``digits`` significant digits (records stay small); NaN/inf -> None."""
    return [None if v is None or not math.isfinite(v) else float(f"{v:.{digits}g}")
            for v in values]


@dataclass
class GroupResult:
    """A trained group of replicas: its history, alignment log and evaluation."""

    history: Any
    alignment: Any
    evaluation: Any
    seconds: float


def train_group(net, rule_name: str, x: np.ndarray, labels: np.ndarray, test_x: np.ndarray,
                test_labels: np.ndarray, config, probe: int, out: str | Path, job_id: str,
                weight_metrics: bool = True, counts: list[int] | None = None,
                engine: str = "numpy") -> GroupResult:
    """Train the replicas of ``net`` in lockstep with ``rule_name``.

    Alignment with the exact gradient is logged before training and after every epoch
    on a fixed probe batch (the first ``probe`` training images of each replica);
    progress goes to the study's progress file for the parent's progress bar.
    ``engine``: see :func:`handprop.training.loop.fit`; ``history.extra["engine"]`` names
    the one that ran (records keep it).
    """
    from ..rules import make_rule
    from ..training.loop import evaluate, fit, loss_for, targets_for
    from .alignment import AlignmentLog
    from .runner import JobProgress

    seeds = list(net.replica_seeds)
    rule = make_rule(rule_name, net, seeds)
    loss_name, loss_fn = loss_for(net, config)
    probe = min(probe, x.shape[1])
    log = AlignmentLog(None if rule_name == "exact" else rule, x[:, :probe],
                       targets_for(net, labels[:, :probe], loss_name, net.dtype), loss_fn,
                       weight_metrics=weight_metrics)
    log.record(net)  # before training
    steps_per_epoch = -(-x.shape[1] // config.batch_size)
    report = JobProgress(out, job_id, config.epochs * steps_per_epoch)

    def on_epoch(epoch: int, history) -> None:
        log.record(net)
        report((epoch + 1) * steps_per_epoch)

    start = time.perf_counter()
    history = fit(net, x, labels, config, rule=rule, on_epoch=on_epoch, counts=counts,
                  engine=engine)
    with np.errstate(all="ignore"):  # diverged replicas predict NaN quietly
        evaluation = evaluate(net, test_x, test_labels)
    return GroupResult(history, log, evaluation, time.perf_counter() - start)


def read_record(path: Path) -> dict[str, Any]:
    """Load one run's JSON record (a corrupt file is an error naming it)."""
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise HandpropError(f"corrupt record {path}: {exc}") from None


def collect(jobs: list) -> dict[str, list[dict[str, Any]]]:
    """The records each job has written with its current settings, by job id, in order."""
    found: dict[str, list[dict[str, Any]]] = {}
    for job in jobs:
        records = []
        for path in job.outputs:
            if path.is_file():
                record = read_record(path)
                if record.get("fingerprint") == job.fingerprint:
                    records.append(record)
        found[job.id] = records
    return found


def cost_matrix(records: list[dict], key: str = "cost") -> np.ndarray:
    """(runs, epochs) matrix of a per-epoch series, NaN where missing or diverged."""
    if not records:
        return np.empty((0, 0))
    width = max(len(r[key]) for r in records)
    matrix = np.full((len(records), width), np.nan)
    for i, record in enumerate(records):
        values = [np.nan if v is None else v for v in record[key]]
        matrix[i, : len(values)] = values
    return matrix


def alignment_matrices(records: list[dict], section: str = "gradient",
                       metric: str = "angle_deg") -> dict[str, np.ndarray]:
    """{layer: (runs, epochs+1) matrix} of one alignment metric across runs."""
    per_layer: dict[str, list[list[float]]] = {}
    for record in records:
        for layer, metrics in ((record.get("alignment") or {}).get(section) or {}).items():
            if metric in metrics:
                per_layer.setdefault(layer, []).append(
                    [math.nan if v is None else v for v in metrics[metric]])
    out = {}
    for layer, rows in per_layer.items():
        width = max(len(r) for r in rows)
        out[layer] = np.array([r + [math.nan] * (width - len(r)) for r in rows])
    return out


def final_alignment(records: list[dict], section: str = "gradient") -> dict[str, dict[str, Any]]:
    """Per layer, each metric's value after the last epoch, averaged over runs."""
    per_layer: dict[str, dict[str, list[float]]] = {}
    for record in records:
        if record.get("diverged"):
            continue  # like cost and accuracy: a diverged run has no final state
        for layer, metrics in ((record.get("alignment") or {}).get(section) or {}).items():
            slot = per_layer.setdefault(layer, {})
            for metric, values in metrics.items():
                finite = [v for v in values if v is not None]
                if finite:
                    slot.setdefault(metric, []).append(finite[-1])
    return {layer: {f"{metric}_final_mean": float(np.mean(v)) for metric, v in metrics.items()}
            for layer, metrics in per_layer.items()}
