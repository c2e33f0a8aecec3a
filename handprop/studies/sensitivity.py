"""What a single run can show: the reproduce study's sensitivity section -- and whether
the runs part by chaos or at a discontinuity.

For the first ``sensitivity`` seeds of each chosen experiment, the article's two nets
(``seed-original``, ``seed-broken``) are trained three times from the same data: as they
are (the *base* run, identical to the study's article run of that seed), and with ONE
initial weight moved -- by one ulp (``nextafter``) and by 1e-8. The weight is drawn from
the seed's perturbation stream. The three are replicas of one lockstep group, so the only
difference between them is the moved weight.

Two records of the parting:

* **step by step** over the first ``track_epochs`` epochs (NumPy engine): after every
  step the relative distance ``|w' - w| / |w|``, and at every step's forward pass the
  *switches* between the moved run and the base run -- max-pool windows whose routing
  (the set of positions at the window's maximum) differs, and ReLU pre-activations whose
  sign differs -- and the base run's tied windows (two or more positions at the
  maximum: common with integer pixels and ReLU zeros);
* **per epoch** over the whole run (the study's engine), with both cost curves and, at
  the end, the 10-image accuracy of both.

Chaos would show as steady exponential growth (the log distance rising step after step,
without switches); a discontinuity as a jump of orders of magnitude in one step, at a step
with a switch. Each moved run is labelled by what its tracked steps show
(:func:`label_parting`). The summary also says how often the 10-image verdict ("all 10
right") and the final-cost ranking of the two nets flip. Description of a few runs, not
inference: it shows what a single run, like each of the article's, can and cannot show.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

import numpy as np

from ..core.io import write_json
from ..core.streams import Stream, generator
from .reproduce_base import VARIANTS, Records, ReproduceConfig, initialise, padded, split_for
from .runner import Job

RULES = ("seed-original", "seed-broken")  # the article's two nets
PERTURBATIONS = ("ulp", "1e-8")
THRESHOLDS = (1e-3, 0.1)  # relative weight distances whose first crossing is reported
PARTED = 1e-3  # relative distance at which the tracked runs count as parted
JUMP = 3.0  # decades in one step: a jump
LABELS = ("discontinuity: switches carry the growth", "growth without switches",
          "not parted in the tracked steps", "merged back: the nudge was rounded away")


def sensitivity_jobs(config: ReproduceConfig, out: Path) -> list[Job]:
    """One job per (experiment, rule) of the article's two nets on the study's first
    variant (the corrected network unless only as-run is run)."""
    variant = config.variant[0]
    rules = [rule for rule in RULES if rule in config.rules_of(variant)]
    if not config.sensitivity or not rules:
        return []
    seeds = config.seed_list[: config.sensitivity]
    jobs = []
    for experiment in config.sensitivity_list:
        for rule in rules:
            outputs = [out / "runs" / "sensitivity" / experiment.name / rule /
                       f"seed{seed}-{kind}.json" for seed in seeds for kind in PERTURBATIONS]
            job_id = f"sensitivity/{experiment.name}/{rule}"
            spec = {"job_id": job_id, "out": str(out), "variant": variant,
                    "experiment": experiment.name, "fc": list(experiment.fc), "rule": rule,
                    "seeds": seeds, "epochs": config.epochs, "lr": config.lr,
                    "momentum": config.momentum, "engine": config.engine,
                    "track_epochs": min(config.track_epochs, config.epochs),
                    "seeding": config.seeding, "outputs": [str(p) for p in outputs]}
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
    """Train base and perturbed runs of one (experiment, rule) in lockstep, the first
    epochs also step by step; write one record per (seed, perturbation)."""
    from ..core.presets import PRESETS
    from ..rules import make_rule
    from ..training.loop import TrainConfig, evaluate, fit
    from .runner import JobProgress

    seeds, fc = spec["seeds"], tuple(spec["fc"])
    data = [split_for({"protocol": "article", "seed": s}, 0, spec["seeding"])
            for s in seeds for _ in range(3)]
    net = PRESETS[VARIANTS[spec["variant"]]](fc)
    initialise(net, [s for s in seeds for _ in range(3)], fc, spec["seeding"])
    indices = _perturb(net.flat, seeds)
    x, y = padded([d.x_train for d in data]), padded([d.y_train for d in data])
    config = TrainConfig(epochs=spec["epochs"], batch_size=1, lr=spec["lr"],
                         momentum=spec["momentum"], seed=seeds[0])
    twin = PRESETS[VARIANTS[spec["variant"]]](fc).init(replicas=[s for s in seeds
                                                                 for _ in range(3)])
    twin.flat[...] = net.flat  # the same start, trained step by step on the NumPy engine
    tracked = track_steps(twin, spec["rule"], x, y, config, spec["track_epochs"])
    distances: list[np.ndarray] = []
    report = JobProgress(spec["out"], spec["job_id"], spec["epochs"] * 350)

    def on_epoch(epoch: int, history) -> None:
        distances.append(_relative_distances(net.flat))
        report((epoch + 1) * 350)

    history = fit(net, x, y, config, make_rule(spec["rule"], net), on_epoch=on_epoch,
                  engine=spec["engine"])
    with np.errstate(all="ignore"):
        tested = evaluate(net, padded([d.x_test for d in data]), padded([d.y_test for d in data]))
    matrix = np.array(distances).T if distances else np.zeros((2 * len(seeds), 0))
    for k, seed in enumerate(seeds):
        for j, kind in enumerate(PERTURBATIONS):
            record = _record(spec, history, tested, matrix, k, j, seed, kind, indices[k])
            record.update(_tracked_record(tracked, 2 * k + j))
            write_json(Path(spec["outputs"][2 * k + j]), record)
    return {"job_id": spec["job_id"], "seconds": history.seconds}


# -- step by step: the distance and the switches -------------------------------------

def track_steps(net: Any, rule_name: str, x: np.ndarray, y: np.ndarray, config: Any,
                epochs: int) -> dict[str, np.ndarray]:
    """Train ``net`` (rows: base, ulp, 1e-8 per seed) for ``epochs`` epochs on the NumPy
    engine, one step at a time. Per moved row and step (0: before the first step):
    the relative distance to its base row, and at the step's forward pass the pool windows
    whose routing differs from the base row's and the ReLU pre-activations whose sign
    differs; per base row, its tied pool windows."""
    from ..rules import make_rule
    from ..training.epoch import NumpyEpoch
    from ..training.loop import loss_for, targets_for
    from ..training.optim import make_optimizer

    rule = make_rule(rule_name, net)
    _, loss_fn = loss_for(net, config)
    engine = NumpyEpoch(net, rule, make_optimizer("momentum", config.lr, config.momentum),
                        loss_fn, 1)
    targets = targets_for(net, y, "l2", net.dtype)
    steps = epochs * x.shape[1]
    moved = x.shape[0] // 3 * 2
    out = {"distance": np.zeros((moved, steps + 1)), "routing": np.zeros((moved, steps), int),
           "relu": np.zeros((moved, steps), int), "ties": np.zeros((moved, steps), int)}
    out["distance"][:, 0] = _relative_distances(net.flat)
    with np.errstate(all="ignore"):
        for step in range(steps):
            i = step % x.shape[1]
            routing, relu, ties = switches(net, x[:, i:i + 1])
            out["routing"][:, step], out["relu"][:, step], out["ties"][:, step] = (
                routing, relu, ties)
            engine.step(x[:, i:i + 1], targets[:, i:i + 1], None)
            out["distance"][:, step + 1] = _relative_distances(net.flat)
    return out


def switches(net: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For the forward pass of ``x`` (rows: base, ulp, 1e-8 per seed): per moved row, the
    max-pool windows whose set of maximal positions differs from the base row's and the
    ReLU pre-activations whose sign (> 0) differs; and per moved row, its base row's
    windows with a tie at the maximum (two or more positions)."""
    from ..core.ops.activations import PerChannelActivation
    from ..core.ops.pool import MaxPool2d

    outputs = [out for _, out in net.trace(x)]
    inputs = [x, *outputs[:-1]]
    routing = relu = ties = 0
    for layer, z in zip(net.layers, inputs, strict=True):
        if isinstance(layer, MaxPool2d):
            at_max = _at_window_max(z, layer.kernel_size)
            routing = routing + _differ(at_max, axes=(-1,))
            tied = (at_max.sum(axis=-1) > 1).reshape(at_max.shape[0], -1).sum(axis=1)
            ties = ties + _per_moved(tied)
        elif isinstance(layer, PerChannelActivation):
            channels = [c for c, name in enumerate(layer.activations) if name == "relu"]
            if channels:
                relu = relu + _differ(z[:, :, channels] > 0, axes=())
    return routing, relu, ties


def _at_window_max(z: np.ndarray, kernel: tuple[int, int]) -> np.ndarray:
    """(R, N, C, h, w, kh*kw) flags: which positions of each non-overlapping window hold
    its maximum."""
    kh, kw = kernel
    r, n, c, height, width = z.shape
    windows = z.reshape(r, n, c, height // kh, kh, width // kw, kw).transpose(
        0, 1, 2, 3, 5, 4, 6).reshape(r, n, c, height // kh, width // kw, kh * kw)
    return windows == windows.max(axis=-1, keepdims=True)


def _differ(flags: np.ndarray, axes: tuple[int, ...]) -> np.ndarray:
    """Per moved row: how many items (the last ``axes`` taken together) differ from its
    base row."""
    grouped = flags.reshape(-1, 3, *flags.shape[1:])
    changed = grouped[:, 1:] != grouped[:, :1]
    if axes:
        changed = changed.any(axis=axes)
    return changed.reshape(changed.shape[0] * 2, -1).sum(axis=1)


def _per_moved(base_counts: np.ndarray) -> np.ndarray:
    """A per-row count of the base rows, repeated for their two moved rows."""
    return np.repeat(base_counts.reshape(-1, 3)[:, 0], 2)


def _tracked_record(tracked: dict[str, np.ndarray], row: int) -> dict[str, Any]:
    from .records import rounded

    distance = tracked["distance"][row]
    return {"step_distance": rounded(distance.tolist(), 4),
            "step_routing": tracked["routing"][row].tolist(),
            "step_relu": tracked["relu"][row].tolist(),
            "step_ties": tracked["ties"][row].tolist(),
            "parting": label_parting(distance, tracked["routing"][row], tracked["relu"][row])}


def label_parting(distance: np.ndarray, routing: np.ndarray, relu: np.ndarray
                  ) -> dict[str, Any]:
    """What the tracked steps show, up to the step where the distance first passes PARTED:
    the decades gained, the share gained at steps with a switch (a routing change or a
    ReLU sign change), the largest one-step jump and whether it had a switch, the average
    growth in decades per step -- and a label (:data:`LABELS`): a *discontinuity* when the
    switches carry at least half of the growth or a jump of JUMP decades or more happens
    at a switch; else *growth without switches* (the runs part by amplification of the
    difference, step after step: chaos at this learning rate)."""
    d = np.asarray(distance, dtype=np.float64)
    base = {"parted_step": None, "decades": None, "share_at_switches": None,
            "largest_jump": None, "jump_step": None, "jump_switched": None,
            "decades_per_step": None}
    if d.size < 2 or d[-1] == 0:
        return {**base, "label": LABELS[3] if d.size >= 2 else LABELS[2]}
    over = np.flatnonzero(d[1:] > PARTED)
    if not over.size:
        return {**base, "label": LABELS[2]}
    parted = int(over[0]) + 1
    with np.errstate(divide="ignore"):
        logs = np.log10(d[: parted + 1])
    growth = np.diff(np.where(np.isfinite(logs), logs, np.log10(np.finfo(float).tiny)))
    switched = (np.asarray(routing[:parted]) + np.asarray(relu[:parted])) > 0
    gained = growth[growth > 0].sum()
    share = float(growth[(growth > 0) & switched].sum() / gained) if gained > 0 else 0.0
    step = int(np.argmax(growth))
    discontinuity = share >= 0.5 or (growth[step] >= JUMP and switched[step])
    return {"label": LABELS[0] if discontinuity else LABELS[1], "parted_step": parted,
            "decades": float(logs[-1] - logs[0]) if np.isfinite(logs[0]) else None,
            "share_at_switches": share, "largest_jump": float(growth[step]),
            "jump_step": step + 1, "jump_switched": bool(switched[step]),
            "decades_per_step": float(growth.sum() / parted)}


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
    for experiment in config.sensitivity_list:
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
        partings = [r.get("parting") or {} for r in mine]
        out[kind] = {"runs": len(mine),
                     "first_epoch_over": {str(t): [_first_crossing(r["relative_distance"], t)
                                                   for r in mine] for t in THRESHOLDS},
                     "final_relative_distance": finals,
                     "final_cost_change": [_cost_change(r) for r in mine],
                     "labels": {label: sum(1 for p in partings if p.get("label") == label)
                                for label in LABELS},
                     **{key: [p.get(key) for p in partings]
                        for key in ("parted_step", "decades_per_step", "share_at_switches",
                                    "largest_jump", "jump_switched")}}
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
