"""``handprop compare``: learning rules side by side with exact back-propagation.

Every rule trains the same network from the same initial weights, on the same data
split in the same order, for each seed (paired). Runs of one rule are trained in
lockstep as replicas. Per layer and epoch the study logs how close each rule's update
is to the exact gradient (angle), and for rules with feedback matrices B how B relates
to W (angle, norm ratio, sign concordance). The report sets the test errors and angles
against what the literature reports (Lillicrap et al. 2016; BioTorch's benchmark).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.io import atomic_write_text, write_json
from ..core.spec import dump_toml
from .stats import bootstrap_ci, paired_summary
from .study import (
    alignment_matrices,
    collect,
    cost_matrix,
    final_alignment,
    rounded,
    train_group,
    versions,
)

RECORD_VERSION = 1
# BioTorch (Sanfiz & Akrout 2021), LeNet on MNIST, top-1 error %.
BIOTORCH_LENET_MNIST = {"exact": 0.91, "usf": 0.94, "brsf": 0.91, "frsf": 0.97, "fa": 1.70,
                        "dfa": 1.61}


@dataclass
class CompareConfig:
    rules: list[str]
    seeds: int = 5
    first_seed: int = 0
    data: str = "digits10"
    net: str = "small"
    epochs: int = 100
    batch_size: int = 32
    optimizer: str = "adam"
    lr: float = 0.001
    momentum: float = 0.9
    probe: int = 256

    @property
    def seed_list(self) -> list[int]:
        return list(range(self.first_seed, self.first_seed + self.seeds))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_KEYS = {"rules", "seeds", "first_seed", "data", "net", "epochs", "batch_size", "optimizer",
         "lr", "momentum", "probe"}


def validate_config(config: CompareConfig, source: str = "config") -> CompareConfig:
    from ..rules import RULES
    from ..training.loop import TrainConfig

    for name, minimum in (("seeds", 1), ("first_seed", 0), ("epochs", 1), ("batch_size", 1),
                          ("probe", 1)):
        value = getattr(config, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise ConfigError(f"{source}: {name} must be an integer >= {minimum}, got {value!r}")
    if not config.rules or len(set(config.rules)) != len(config.rules):
        raise ConfigError(f"{source}: rules must be a non-empty list without repeats")
    for rule in config.rules:
        if rule not in RULES:
            raise ConfigError(f"{source}: unknown rule {rule!r}; choose from {', '.join(RULES)}")
    if not isinstance(config.data, str) or not isinstance(config.net, str):
        raise ConfigError(f"{source}: data and net must be strings")
    if config.data.startswith("idx:") and config.net == "small":
        config.net = "lenet"  # users' MNIST-format files: the 28x28 network
    try:
        TrainConfig(epochs=config.epochs, batch_size=config.batch_size,
                    optimizer=config.optimizer, lr=config.lr, momentum=config.momentum).validate()
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    return config


def load_config(path: str | Path | None = None) -> CompareConfig:
    """The default comparison, or the ``[compare]`` table of a TOML file."""
    import tomllib

    from ..core.spec import load_toml

    if path is None:
        text = resources.files("handprop.studies").joinpath("configs/compare.toml").read_text()
        data, source = tomllib.loads(text), "configs/compare.toml"
    else:
        data, source = load_toml(path), str(path)
    table = data.get("compare")
    if not isinstance(table, dict):
        raise ConfigError(f"{source}: no [compare] table")
    unknown = sorted(set(table) - _KEYS)
    if unknown:
        raise ConfigError(f"{source}: unknown key(s) in [compare]: {', '.join(unknown)}")
    config = CompareConfig(rules=list(table.get("rules", [])))
    for key in _KEYS - {"rules"}:
        if key in table:
            setattr(config, key, table[key])
    return validate_config(config, source)


def _network(config: CompareConfig, data):
    from ..core.spec import build_net

    return build_net(config.net, None, data.input_shape, data.num_classes)


def record_path(out: Path, rule: str, seed: int) -> Path:
    return out / "runs" / rule / f"seed{seed}.json"


def run_job(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one rule on every seed in lockstep; write one record per seed."""
    from ..training.data import load_data
    from ..training.loop import TrainConfig

    config = CompareConfig(**spec["config"])
    seeds = config.seed_list
    datasets = [load_data(config.data, seed=seed) for seed in seeds]
    net = _network(config, datasets[0]).init(replicas=seeds)
    train = TrainConfig(epochs=config.epochs, batch_size=config.batch_size,
                        optimizer=config.optimizer, lr=config.lr, momentum=config.momentum,
                        shuffle=True, seed=seeds[0])
    test_y = np.stack([d.y_test for d in datasets])
    result = train_group(net, spec["rule"], np.stack([d.x_train for d in datasets]),
                         np.stack([d.y_train for d in datasets]),
                         np.stack([d.x_test for d in datasets]), test_y, train, config.probe,
                         spec["out"], spec["job_id"])
    for r, seed in enumerate(seeds):
        diverged = result.history.diverged[r]
        accuracy = float(np.mean(result.evaluation.predicted[r] == test_y[r]))
        record = {
            "version": RECORD_VERSION, "fingerprint": spec["fingerprint"],
            "rule": spec["rule"], "seed": seed,
            "net": net.name, "data": config.data,
            "cost": rounded(result.history.cost_list(r)),
            "diverged": diverged,
            "test_error": None if diverged else 1 - accuracy,
            "test_images": int(test_y.shape[1]),
            "alignment": result.alignment.as_lists(r) if spec["rule"] != "exact" else None,
            "alignment_probe": f"first {min(config.probe, datasets[r].x_train.shape[0])} "
                               "training images, after every epoch (entry 0: before training)",
            "config": config.to_dict(),
            "seconds_for_job": result.seconds,
            "engine": result.history.extra["engine"],
            "versions": versions(),
        }
        write_json(record_path(Path(spec["out"]), spec["rule"], seed), record)
    return {"job_id": spec["job_id"], "seconds": result.seconds}


def build_jobs(config: CompareConfig, out: Path, steps_per_epoch: int = 1) -> list:
    """One job per rule (its seeds in lockstep); ``steps_per_epoch`` only feeds the ETA."""
    from .runner import Job

    jobs = []
    for rule in config.rules:
        outputs = [record_path(out, rule, seed) for seed in config.seed_list]
        spec = {"job_id": f"compare/{rule}", "out": str(out), "rule": rule,
                "config": config.to_dict()}
        jobs.append(Job(spec["job_id"], "handprop.studies.compare:run_job", spec, outputs,
                        steps=config.epochs * steps_per_epoch))
    return jobs


def load_records(jobs: list) -> dict[str, list[dict]]:
    """Records with the study's current settings, by rule."""
    by_id = collect(jobs)
    return {job.spec["rule"]: by_id[job.id] for job in jobs}


def _errors(records: list[dict]) -> dict[int, float]:
    return {r["seed"]: (math.nan if r["test_error"] is None else r["test_error"])
            for r in records}


def summarize(records: dict[str, list[dict]], config: CompareConfig) -> dict[str, Any]:
    exact = _errors(records.get("exact", []))
    summary: dict[str, Any] = {}
    for rule, runs in records.items():
        errors = _errors(runs)
        values = np.array(list(errors.values()), dtype=float)
        finite = values[np.isfinite(values)]
        low, high = bootstrap_ci(finite)
        costs = cost_matrix(runs)
        row: dict[str, Any] = {
            "runs": len(runs),
            "diverged": sum(1 for r in runs if r["diverged"]),
            "test_error_mean": float(finite.mean()) if finite.size else None,
            "test_error_ci": [low, high],
            "final_cost_mean": (float(np.nanmean(costs[:, -1]))
                                if costs.size and np.isfinite(costs[:, -1]).any() else None),
            "alignment": final_alignment(runs, "gradient"),
            "weight_alignment": final_alignment(runs, "weights"),
        }
        if rule != "exact" and exact:
            common = sorted(set(errors) & set(exact))
            row["vs_exact"] = paired_summary(np.array([errors[s] for s in common]),
                                             np.array([exact[s] for s in common]))
        summary[rule] = row
    return summary


def _within_90(records: list[dict]) -> dict[str, dict[str, Any]]:
    """Per layer: the mean angle curve, the first epoch from which it stays below 90."""
    out = {}
    for layer, matrix in alignment_matrices(records).items():
        mean = np.nanmean(matrix, axis=0)
        below = mean < 90
        stays = next((e for e in range(len(mean)) if below[e:].all()), None)
        out[layer] = {"initial": float(mean[0]), "epoch1": float(mean[min(1, len(mean) - 1)]),
                      "final": float(mean[-1]), "below_90_from_epoch": stays,
                      "max_after_epoch1": float(np.max(mean[1:])) if len(mean) > 1 else None}
    return out


def _pct(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{100 * value:.2f}"


def _deg(value: float | None) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.1f}"


def literature(summary: dict[str, Any], records: dict[str, list[dict]]) -> dict[str, Any]:
    """The data held up against Lillicrap et al. (FA within 90 degrees) and BioTorch."""
    result: dict[str, Any] = {}
    if records.get("fa"):
        layers = _within_90(records["fa"])
        hidden = dict(list(layers.items())[:-1])  # the output layer's update is exact in FA
        early = {layer: v["below_90_from_epoch"] is not None and v["below_90_from_epoch"] <= 1
                 for layer, v in hidden.items()}
        held = [layer for layer, ok in early.items() if ok]
        missed = [layer for layer, ok in early.items() if not ok]
        verdict = ("consistent for every hidden layer" if not missed else
                   f"consistent for {', '.join(held) or 'no layer'}; not for {', '.join(missed)}")
        result["lillicrap"] = {
            "claim": "feedback alignment's hidden-layer updates come within 90 degrees of the "
                     "back-propagation updates early in training and stay there",
            "layers": hidden,
            "verdict": verdict,
        }
    errors = {rule: row["test_error_mean"] for rule, row in summary.items()}
    if errors.get("exact") is not None:
        base = errors["exact"]
        gaps = {rule: (None if e is None else e - base) for rule, e in errors.items()}
        sign = [gaps[r] for r in ("usf", "brsf", "frsf") if gaps.get(r) is not None]
        behind = [gaps[r] for r in ("fa", "dfa") if gaps.get(r) is not None]
        verdict = "not enough rules to compare"
        if sign and behind:
            verdict = ("consistent: every sign-symmetry rule is closer to exact than FA and DFA"
                       if max(sign) < min(behind) else
                       "not consistent: some sign-symmetry rule is not closer to exact than "
                       "FA/DFA")
        result["biotorch"] = {
            "claim": "sign symmetry close to back-propagation, FA and DFA behind (BioTorch, "
                     "LeNet on MNIST, top-1 error %: " + ", ".join(
                         f"{k} {v}" for k, v in BIOTORCH_LENET_MNIST.items()) + ")",
            "gap_to_exact": gaps,
            "verdict": verdict,
        }
    return result


def write_outputs(out: Path, config: CompareConfig, records, summary, meta) -> str:
    from ..pictures.plots import alignment_grid, curves, grouped_points

    lit = literature(summary, records)
    figures = []
    values = {("test error", rule): (row["test_error_mean"], *row["test_error_ci"])
              for rule, row in summary.items() if row["test_error_mean"] is not None}
    figures.append(grouped_points(out / "test_error.png", ["test error"], config.rules, values,
                                  f"test error per rule ({config.seeds} seeds, mean and 95% CI)",
                                  "test error (fraction)"))
    figures.append(curves(out / "cost.png", {rule: cost_matrix(records[rule])
                                             for rule in config.rules},
                          "training cost per epoch (mean, 95% band)", "cost", log=True))
    align = {rule: alignment_matrices(records[rule]) for rule in config.rules if rule != "exact"}
    layers = list(dict.fromkeys(layer for per in align.values() for layer in per))
    if layers:
        figures.append(alignment_grid(out / "alignment_gradient.png", layers, align,
                                      "angle between each rule's update and the exact gradient"))
    weights = {rule: alignment_matrices(records[rule], "weights") for rule in config.rules}
    weights = {rule: m for rule, m in weights.items() if m}
    wlayers = list(dict.fromkeys(layer for per in weights.values() for layer in per))
    if wlayers:
        figures.append(alignment_grid(out / "alignment_weights.png", wlayers, weights,
                                      "angle between feedback B and forward weights W",
                                      "angle(B, W) (degrees)"))
    write_json(out / "summary.json", {"rules": summary, "literature": lit, "meta": meta})
    text = _markdown(config, summary, lit, meta, figures)
    atomic_write_text(out / "report.md", text)
    table = terminal_table(summary, lit, meta)
    atomic_write_text(out / "summary.txt", table + "\n")
    return table


def terminal_table(summary: dict[str, Any], lit: dict[str, Any], meta: dict[str, Any]) -> str:
    lines = [f"{'rule':<14}{'runs':>5}{'div':>5}{'test error %':>14}{'95% CI':>18}"
             f"{'angle first layer':>19}{'angle last hidden':>19}"]
    for rule, row in summary.items():
        angles = [v.get("angle_deg_final_mean") for v in row["alignment"].values()]
        first = angles[0] if angles else None
        last_hidden = angles[-2] if len(angles) > 1 else None
        low, high = row["test_error_ci"]
        lines.append(f"{rule:<14}{row['runs']:>5}{row['diverged']:>5}"
                     f"{_pct(row['test_error_mean']):>14}"
                     f"{'[' + _pct(low) + ', ' + _pct(high) + ']':>18}"
                     f"{_deg(first):>19}{_deg(last_hidden):>19}")
    for key, item in lit.items():
        lines.append(f"{key}: {item['verdict']}")
    lines.append(f"time: {meta['seconds']:.1f}s")
    return "\n".join(lines)


def _markdown(config, summary, lit, meta, figures) -> str:
    lines = [
        "# handprop compare: learning rules against exact back-propagation", "",
        f"Network `{meta['net']}` on `{config.data}` ({meta['train_images']} training images, "
        f"{meta['test_images']} held-out test images per seed), softmax cross-entropy, "
        f"minibatches of {config.batch_size}, {config.optimizer} (lr {config.lr}"
        f"{'' if config.optimizer in ('adam', 'sgd') else f', momentum {config.momentum}'}), "
        f"{config.epochs} epochs, reshuffled every epoch.",
        f"Seeds {config.first_seed}..{config.first_seed + config.seeds - 1}, paired: for a "
        "seed, every rule starts from the same weights and sees the same split and order. "
        "Intervals are 95% bootstrap intervals over seeds; `vs exact` is the paired mean "
        "difference in test error with an exact sign-flip permutation test (with n seeds "
        "the smallest two-sided p it can give is 2 / 2^n: 0.0625 for 5 seeds).",
        f"Alignment is measured before training and after every epoch on a fixed probe batch "
        f"(the first {config.probe} training images of each run).",
        f"Time: {meta['seconds']:.1f} s ({meta['skipped_jobs']} of {meta['jobs']} jobs reused).",
        "",
        "## Test error", "",
        "| rule | runs | diverged | test error % (mean) | 95% CI | vs exact (pp) | p | final "
        "train cost |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for rule, row in summary.items():
        low, high = row["test_error_ci"]
        versus = row.get("vs_exact")
        diff = (f"{100 * versus['mean_diff']:+.2f} [{100 * versus['ci_low']:+.2f}, "
                f"{100 * versus['ci_high']:+.2f}]") if versus and versus["n"] else ""
        p = f"{versus['p_value']:.3g}" if versus and versus["n"] else ""
        cost = "n/a" if row["final_cost_mean"] is None else f"{row['final_cost_mean']:.4g}"
        lines.append(f"| {rule} | {row['runs']} | {row['diverged']} | "
                     f"{_pct(row['test_error_mean'])} | [{_pct(low)}, {_pct(high)}] | {diff} | "
                     f"{p} | {cost} |")
    lines += ["", "## Alignment at the last epoch (mean over seeds)", "",
              "Angle between the rule's update and the exact gradient (0 = same direction, "
              "90 = orthogonal), and for rules with a feedback matrix B in place of W: "
              "angle(B, W), |B| / |W| and the fraction of entries where sign(B) = sign(W).", "",
              "| rule | layer | update angle | same-sign entries | angle(B, W) | norm ratio "
              "\\|B\\| / \\|W\\| | sign concordance |", "|---|---|---|---|---|---|---|"]
    for rule, row in summary.items():
        for layer, metrics in row["alignment"].items():
            weight = row["weight_alignment"].get(layer, {})
            ratio = weight.get("norm_ratio_final_mean")
            concord = weight.get("sign_concordance_final_mean")
            lines.append(
                f"| {rule} | {layer} | {_deg(metrics.get('angle_deg_final_mean'))} | "
                f"{_pct(metrics.get('sign_agreement_final_mean'))}% | "
                f"{_deg(weight.get('angle_deg_final_mean'))} | "
                f"{'n/a' if ratio is None else f'{ratio:.3g}'} | "
                f"{'n/a' if concord is None else f'{100 * concord:.1f}%'} |")
    lines += ["", "## Against the literature", ""]
    if "lillicrap" in lit:
        item = lit["lillicrap"]
        lines += [f"**Lillicrap et al. 2016**: {item['claim']}.", "",
                  "| layer | angle before training | after epoch 1 | last epoch | below 90 "
                  "from epoch | max after epoch 1 |", "|---|---|---|---|---|---|"]
        for layer, v in item["layers"].items():
            lines.append(f"| {layer} | {_deg(v['initial'])} | {_deg(v['epoch1'])} | "
                         f"{_deg(v['final'])} | {v['below_90_from_epoch']} | "
                         f"{_deg(v['max_after_epoch1'])} |")
        lines += ["", f"Verdict: {item['verdict']}.", ""]
    if "biotorch" in lit:
        item = lit["biotorch"]
        lines += [f"**BioTorch**: {item['claim']}.", "",
                  "| rule | BioTorch LeNet/MNIST error % | here: test error % | here: gap to "
                  "exact (pp) |", "|---|---|---|---|"]
        for rule, gap in item["gap_to_exact"].items():
            ours = summary[rule]["test_error_mean"]
            lines.append(f"| {rule} | {BIOTORCH_LENET_MNIST.get(rule, '')} | {_pct(ours)} | "
                         f"{'' if gap is None else f'{100 * gap:+.2f}'} |")
        lines += ["", f"Verdict (qualitative, ordering of the gaps): {item['verdict']}.", ""]
    lines += ["## Figures", ""] + [f"![{p.stem}]({p.name})" for p in figures] + [""]
    return "\n".join(lines)


def main_study(config: CompareConfig, out: Path, backend: str = "loky",
               n_jobs: int | None = None, scheduler: str | None = None,
               show_progress: bool | None = None) -> dict[str, Any]:
    from ..training.data import load_data
    from .runner import run_study

    data = load_data(config.data, seed=config.first_seed)  # fail early on bad data
    net = _network(config, data)
    if net.input_shape != data.input_shape:
        raise ConfigError(f"network {net.name!r} takes inputs {net.input_shape}, the data has "
                          f"{data.input_shape}")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.toml", "# resolved config of this study\n"
                      + dump_toml("compare", config.to_dict()))
    jobs = build_jobs(config, out, -(-len(data.y_train) // config.batch_size))
    run = run_study(jobs, out, backend, n_jobs, scheduler, show_progress, "compare")
    interrupted = run.interrupted
    records = load_records(jobs)
    summary = summarize(records, config)
    meta = {"seconds": run.seconds, "jobs": run.jobs, "skipped_jobs": run.skipped,
            "finished_jobs": run.finished, "interrupted": interrupted, "backend": backend,
            "net": net.name,
            "train_images": int(data.x_train.shape[0]), "test_images": int(data.x_test.shape[0]),
            "config": config.to_dict()}
    print(write_outputs(out, config, records, summary, meta))
    if interrupted:
        raise KeyboardInterrupt
    return {"summary": summary, "meta": meta}
