"""Training a group of runs in lockstep: the replicas of one network with one rule,
with alignment to the exact gradient logged every epoch and progress reported to the
study's progress file."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ..core.network import Network
    from ..rules.base import LearningRule
    from ..training.loop import TrainConfig


@dataclass
class GroupResult:
    """A trained group of replicas: its history, alignment log (measured after the epochs
    in ``alignment_epochs``; 0 is before training), the test accuracy of every replica at
    those epochs (``test_curve``: one (R,) array per measurement) and the final
    evaluation."""

    history: Any
    alignment: Any
    evaluation: Any
    seconds: float
    alignment_epochs: list[int]
    test_curve: list[np.ndarray]


def train_group(net: Network, rule_name: str | LearningRule, x: np.ndarray, labels: np.ndarray,
                test_x: np.ndarray, test_labels: np.ndarray, config: TrainConfig, probe: int,
                out: str | Path, job_id: str, weight_metrics: bool = True,
                counts: list[int] | None = None, engine: str = "numpy",
                transform: str | None = None, align_every: int = 1,
                test_curve: bool = False) -> GroupResult:
    """Train the replicas of ``net`` in lockstep with ``rule_name`` (a registered name, or
    an unbound rule object; its map transform set to ``transform`` if given) on ``engine``.

    Alignment with the exact gradient is logged before training, every ``align_every``
    epochs and after the last, on a fixed probe batch (the first ``probe`` training images
    of each replica); with ``test_curve`` the test accuracy at the same epochs too;
    progress goes to the study's progress file for the parent's progress bar.
    """
    from ..rules import make_rule
    from ..training.loop import evaluate, fit, loss_for, targets_for
    from .alignment import AlignmentLog
    from .runner import JobProgress

    seeds = list(net.replica_seeds)
    rule = make_rule(rule_name, net, seeds, transform=transform)
    loss_name, loss_fn = loss_for(net, config)
    probe = min(probe, x.shape[1])
    log = AlignmentLog(None if rule_name == "exact" else rule, x[:, :probe],
                       targets_for(net, labels[:, :probe], loss_name, net.dtype), loss_fn,
                       weight_metrics=weight_metrics)
    log.record(net)  # before training
    measured = [0]
    curve = [_accuracy(net, test_x, test_labels)] if test_curve else []
    steps_per_epoch = -(-x.shape[1] // config.batch_size)
    report = JobProgress(out, job_id, config.epochs * steps_per_epoch)

    def on_epoch(epoch: int, history) -> None:
        if (epoch + 1) % align_every == 0 or epoch + 1 == config.epochs:
            log.record(net)
            measured.append(epoch + 1)
            if test_curve:
                curve.append(_accuracy(net, test_x, test_labels))
        report((epoch + 1) * steps_per_epoch)

    start = time.perf_counter()
    history = fit(net, x, labels, config, rule=rule, on_epoch=on_epoch, counts=counts,
                  engine=engine)
    with np.errstate(all="ignore"):  # diverged replicas predict NaN quietly
        evaluation = evaluate(net, test_x, test_labels)
    return GroupResult(history, log, evaluation, time.perf_counter() - start, measured, curve)


def _accuracy(net: Network, x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each replica's accuracy on its test images (padding rows included: a study with
    test sets of different sizes reads the final evaluation instead)."""
    from ..training.loop import evaluate

    with np.errstate(all="ignore"):
        return evaluate(net, x, labels).accuracy
