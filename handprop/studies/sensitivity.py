"""What chaos means for single runs: the reproduce study's sensitivity section.

At the article's lr 0.09, training is chaotic. For the first ``sensitivity`` seeds of
every experiment, the article's two nets (``seed-original``, ``seed-broken``) are
trained three times from the same data: as they are (the *base* run, identical to the
study's article run of that seed), and with ONE initial weight moved -- by one ulp
(``nextafter``) and by 1e-8. The weight is drawn from the seed's perturbation stream.
The three are replicas of one lockstep group, so the only difference between them is
the moved weight.

Per epoch the records keep the distance between the perturbed and the base weights
(relative: ``|w' - w| / |w|``) and both cost curves; at the end, the 10-image
accuracy of both. The summary says how fast the runs part, how often the 10-image
verdict ("all 10 right") flips, and how often the final-cost ranking of the two nets
flips. This is description of a few runs, not inference: it shows what a single run,
like each of the article's, can and cannot show.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.io import write_json
from ..core.streams import Stream, generator
from .reproduce_base import VARIANTS, Records, ReproduceConfig, padded, split_for
from .runner import Job

RULES = ("seed-original", "seed-broken")  # the article's two nets
PERTURBATIONS = ("ulp", "1e-8")
THRESHOLDS = (1e-3, 0.1)  # relative weight distances whose first crossing is reported


def sensitivity_jobs(config: ReproduceConfig, out: Path) -> list[Job]:
    """One job per (experiment, rule) of the article's two nets on the study's first
    variant (the corrected network unless only as-run is run)."""
    variant = config.variant[0]
    rules = [rule for rule in RULES if rule in config.rules_of(variant)]
    if not config.sensitivity or not rules:
        return []
    seeds = config.seed_list[: config.sensitivity]
    jobs = []
    for experiment in config.experiments:
        for rule in rules:
            outputs = [out / "runs" / "sensitivity" / experiment.name / rule /
                       f"seed{seed}-{kind}.json" for seed in seeds for kind in PERTURBATIONS]
            job_id = f"sensitivity/{experiment.name}/{rule}"
            spec = {"job_id": job_id, "out": str(out), "variant": variant,
                    "experiment": experiment.name, "fc": list(experiment.fc), "rule": rule,
                    "seeds": seeds, "epochs": config.epochs, "lr": config.lr,
                    "momentum": config.momentum, "engine": config.engine,
                    "outputs": [str(p) for p in outputs]}
            jobs.append(Job(job_id, "handprop.studies.sensitivity:run_job", spec, outputs,
                            steps=config.epochs * 350))
    return jobs


def perturbed_index(seed: int, size: int) -> int:
    """Which initial weight the seed's perturbations move."""
    return int(generator(seed, Stream.PERTURB).integers(size))


def _perturb(flat: np.ndarray, seeds: list[int]) -> list[int]:
    """Rows are (base, ulp, 1e-8) per seed: move one weight in the last two rows."""
    indices = []
    for k, seed in enumerate(seeds):
        index = perturbed_index(seed, flat.shape[-1])
        base = flat[3 * k, index]
        flat[3 * k + 1, index] = np.nextafter(base, np.inf)
        flat[3 * k + 2, index] = base + 1e-8
        indices.append(index)
    return indices


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Train base and perturbed runs of one (experiment, rule) in lockstep; write one
    record per (seed, perturbation)."""
    from ..core.presets import PRESETS
    from ..rules import make_rule
    from ..training.loop import TrainConfig, evaluate, fit
    from .runner import JobProgress

    seeds = spec["seeds"]
    data = [split_for({"protocol": "article", "seed": s}, 0) for s in seeds for _ in range(3)]
    net = PRESETS[VARIANTS[spec["variant"]]](tuple(spec["fc"]))
    net.init(replicas=[s for s in seeds for _ in range(3)])
    indices = _perturb(net.flat, seeds)
    config = TrainConfig(epochs=spec["epochs"], batch_size=1, lr=spec["lr"],
                         momentum=spec["momentum"], seed=seeds[0])
    distances: list[np.ndarray] = []
    report = JobProgress(spec["out"], spec["job_id"], spec["epochs"] * 350)

    def on_epoch(epoch: int, history) -> None:
        distances.append(_relative_distances(net.flat))
        report((epoch + 1) * 350)

    x, y = padded([d.x_train for d in data]), padded([d.y_train for d in data])
    history = fit(net, x, y, config, make_rule(spec["rule"], net), on_epoch=on_epoch,
                  engine=spec["engine"])
    with np.errstate(all="ignore"):
        tested = evaluate(net, padded([d.x_test for d in data]), padded([d.y_test for d in data]))
    matrix = np.array(distances).T if distances else np.zeros((2 * len(seeds), 0))
    for k, seed in enumerate(seeds):
        for j, kind in enumerate(PERTURBATIONS):
            record = _record(spec, history, tested, matrix, k, j, seed, kind, indices[k])
            write_json(Path(spec["outputs"][2 * k + j]), record)
    return {"job_id": spec["job_id"], "seconds": history.seconds}


def _relative_distances(flat: np.ndarray) -> np.ndarray:
    """|w_perturbed - w_base| / |w_base| for every (seed, perturbation), in row order."""
    groups = flat.reshape(-1, 3, flat.shape[-1])
    with np.errstate(all="ignore"):
        diff = np.linalg.norm(groups[:, 1:] - groups[:, :1], axis=-1)
        return (diff / np.linalg.norm(groups[:, :1], axis=-1)).ravel()


def _record(spec, history, tested, matrix, k, j, seed, kind, index) -> dict[str, Any]:
    from .records import rounded, versions

    base, row = 3 * k, 3 * k + 1 + j

    def accuracy(r: int) -> float | None:
        return None if history.diverged[r] else float(tested.accuracy[r])

    return {"version": 1, "fingerprint": spec["fingerprint"], "variant": "sensitivity",
            "network": spec["variant"], "experiment": spec["experiment"], "rule": spec["rule"],
            "protocol": "sensitivity", "seed": seed, "perturbation": kind,
            "weight_index": index, "diverged": history.diverged[row],
            "base_diverged": history.diverged[base],
            "relative_distance": rounded(matrix[2 * k + j].tolist(), 4),
            "cost": rounded(history.cost_list(row)), "base_cost": rounded(history.cost_list(base)),
            "test_accuracy": accuracy(row), "base_test_accuracy": accuracy(base),
            "config": {key: spec[key] for key in ("epochs", "lr", "momentum")},
            "engine": history.extra.get("engine"), "pid": os.getpid(), "versions": versions()}


# -- the summary -------------------------------------------------------------------

def summarize_sensitivity(records: Records, config: ReproduceConfig) -> dict[str, Any]:
    """Per experiment: how fast runs part, and how often single-run conclusions flip."""
    out: dict[str, Any] = {}
    for experiment in config.experiments:
        runs = {rule: records.get(("sensitivity", experiment.name, rule, "sensitivity"), [])
                for rule in RULES}
        if not any(runs.values()):
            continue
        out[experiment.name] = {
            "parting": {rule: _parting(rows) for rule, rows in runs.items() if rows},
            "verdict_flips": _verdict_flips([r for rows in runs.values() for r in rows]),
            "ranking_flips": _ranking_flips(runs),
        }
    return out


def _first_crossing(distances: list[float | None], threshold: float) -> int | None:
    """The first epoch (1-based) whose relative distance exceeds ``threshold``."""
    for epoch, value in enumerate(distances, start=1):
        if value is not None and value > threshold:
            return epoch
    return None


def _parting(rows: list[dict]) -> dict[str, Any]:
    """Per perturbation: first epochs past each threshold, and the final distances."""
    out = {}
    for kind in PERTURBATIONS:
        mine = [r for r in rows if r["perturbation"] == kind]
        finals = [r["relative_distance"][-1] for r in mine if r["relative_distance"]
                  and r["relative_distance"][-1] is not None]
        out[kind] = {"runs": len(mine),
                     "first_epoch_over": {str(t): [_first_crossing(r["relative_distance"], t)
                                                   for r in mine] for t in THRESHOLDS},
                     "final_relative_distance": finals,
                     "final_cost_change": [_cost_change(r) for r in mine]}
    return out


def _cost_change(record: dict) -> float | None:
    """|c' - c| / max(|c|, |c'|) of the two final costs: 0 when equal, 1 when one is 0.
    Relative to the larger one, so a cost near 0 that became O(1) reads 100%, not 1e5%."""
    if record["diverged"] or record["base_diverged"] or not record["cost"]:
        return None
    base, moved = record["base_cost"][-1], record["cost"][-1]
    larger = max(abs(base), abs(moved))
    return 0.0 if larger == 0 else abs(moved - base) / larger


def _all_right(accuracy: float | None) -> bool | None:
    return None if accuracy is None else accuracy == 1.0


def _verdict_flips(rows: list[dict]) -> dict[str, int]:
    """How often "all 10 test images right" differs between a run and its base run."""
    pairs = [(_all_right(r["base_test_accuracy"]), _all_right(r["test_accuracy"]))
             for r in rows]
    pairs = [p for p in pairs if None not in p]
    return {"pairs": len(pairs), "flipped": sum(a != b for a, b in pairs)}


def _ranking_flips(runs: dict[str, list[dict]]) -> dict[str, int]:
    """How often the final-cost ranking of the two nets (broken below original or not)
    differs between the base runs and the same seeds' perturbed runs."""
    original = {(r["seed"], r["perturbation"]): r for r in runs.get("seed-original", [])}
    pairs = flipped = 0
    for broken in runs.get("seed-broken", []):
        partner = original.get((broken["seed"], broken["perturbation"]))
        if partner is None:
            continue
        finals = [broken["base_cost"], partner["base_cost"], broken["cost"], partner["cost"]]
        if any(not c or c[-1] is None for c in finals) or len(
                {len(c) for c in finals}) != 1:
            continue
        base_lower = finals[0][-1] < finals[1][-1]
        perturbed_lower = finals[2][-1] < finals[3][-1]
        pairs += 1
        flipped += base_lower != perturbed_lower
    return {"pairs": pairs, "flipped": flipped}


def median(values: list[float | None]) -> float | None:
    """The median of the values that are there (None if none are)."""
    present = [v for v in values if v is not None and math.isfinite(v)]
    return float(np.median(present)) if present else None
