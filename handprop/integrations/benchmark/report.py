"""The benchmark's ratios, targets and text table (from :func:`.run_bench`'s results)."""

from __future__ import annotations

from typing import Any

from .fresh import best_ratio, spread
from .settings import (
    NOISY_SPREAD,
    REPLICAS,
    TARGET_COMPARE_BASELINE_RATIO,
    TARGET_LENET_RATIO,
    TARGET_ONLINE_RATIO,
    TARGET_ONLINE_US,
    TARGET_REPLICA15_US,
    TARGET_REPLICA24_US,
    TARGET_SEED_BATCH32_RATIO,
)

LABEL = 56  # width of the first column


def in_process_ratios(results: dict[str, Any]) -> None:
    """torch over handprop for times, handprop over torch for rates (> 1: we are faster)."""
    if "rule_step_us" in results:
        results["ratio_rule_step"] = {
            name: {width: results["torch_online_step_us"] / us for width, us in row.items()}
            for name, row in results["rule_step_us"].items()}
    for suffix in ["", *(f"_{e}" for e in results["engines"])]:
        if f"online_step_us{suffix}" not in results:
            continue
        results[f"ratio_online{suffix}"] = (
            results["torch_online_step_us"] / results[f"online_step_us{suffix}"])
        results[f"ratio_online_torch_1thread{suffix}"] = (
            results["torch_1thread_online_step_us"] / results[f"online_step_us{suffix}"])
        results[f"ratio_seed_batch32{suffix}"] = (
            results[f"seed_batch32_samples_per_s{suffix}"]
            / results["torch_seed_batch32_samples_per_s"])


def _target(text: str, value: float | None, met: bool | None) -> dict[str, Any]:
    return {"target": text, "value": value, "met": None if value is None else bool(met)}


def _at_least(bound: float, value: float | None, what: str) -> dict[str, Any]:
    return _target(f">= {bound:g}x {what}", value, value is not None and value >= bound)


def _at_most(bound: float, value: float | None) -> dict[str, Any]:
    return _target(f"<= {bound:g} us", value, value is not None and value <= bound)


def targets(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each target with its value and whether it is met: the fastest engine's figure in
    process; the median over the blocks of the fastest engine's ratio in fresh processes."""
    r15, r24 = (min((results[f"replica_step_us_{e}"][r] for e in results["engines"]),
                    default=None) for r in ("15", "24"))
    fresh = results.get("fresh", {})
    lenet, compare = fresh.get("lenet_batch64"), fresh.get("compare_cnn_batch32")

    def median(entry: dict | None, workers: int, **kind: Any) -> float | None:
        found = best_ratio(entry, workers, **kind) if entry else None
        return None if found is None else found["median"]

    compare_cores = max((row["workers"] for row in compare["rows"].values()), default=1) \
        if compare else 1
    return {
        "online_step_us": _at_most(TARGET_ONLINE_US, results.get("online_step_us")),
        "ratio_online": _at_least(TARGET_ONLINE_RATIO, results.get("ratio_online"), "torch"),
        "replica_step_us_r15": _at_most(TARGET_REPLICA15_US, r15),
        "replica_step_us_r24": _at_most(TARGET_REPLICA24_US, r24),
        "ratio_seed_batch32": _at_least(TARGET_SEED_BATCH32_RATIO,
                                        results.get("ratio_seed_batch32"), "torch"),
        "ratio_lenet_batch64_1core": _at_least(
            TARGET_LENET_RATIO, median(lenet, 1, library="torch"), "torch 1 thread, 1 core"),
        "ratio_lenet_batch64_2cores": _at_least(
            TARGET_LENET_RATIO, median(lenet, 2, library="torch"), "torch 2 threads"),
        "ratio_compare_cnn_batch32_baseline": _at_least(
            TARGET_COMPARE_BASELINE_RATIO, median(compare, compare_cores, baseline=True),
            "baseline numpy"),
    }


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}" if value < 1000 else f"{value:,.0f}"


def _met(target: dict[str, Any]) -> str:
    return {True: "yes", False: "NO", None: "n/a"}[target["met"]]


def _row(label: str, ours: float | None, theirs: float | None, ratio: float | None,
         row_targets: list[dict[str, Any]]) -> str:
    ratio_text = "-" if ratio is None else f"{ratio:.2f}x"
    target_text = ", ".join(t["target"] for t in row_targets)
    met = "/".join(_met(t) for t in row_targets)
    return (f"{label:<{LABEL}}{_num(ours):>11}{_num(theirs):>11}{ratio_text:>10}  "
            f"{target_text:<24}{met}")


def format_bench(results: dict) -> str:
    """A readable table of :func:`.run_bench`'s results, with the targets and whether each
    is met."""
    lines = _header_lines(results) + _main_rows(results) + _replica_lines(results)
    lines += _fresh_lines(results) + _rule_lines(results) + _footer_lines(results)
    return "\n".join(lines)


def _header_lines(results: dict) -> list[str]:
    machine = results.get("machine", {})
    cpu = machine.get("cpu_model") or machine.get("processor") or machine.get("machine")
    torch_text = (
        f"torch {machine['torch']} ({machine['torch_threads']} threads by default)"
        if machine.get("torch") else results.get("torch_error", "torch not run")
    )
    load = machine.get("load_average")
    return [
        "handprop benchmark" + ("  [quick: smoke-test sizes, numbers are noisy]"
                                if results.get("quick") else ""),
        f"machine: {machine.get('platform')}, {cpu}, {machine.get('cpu_count')} CPUs"
        + (f", load average {load[0]:.2f} at the start" if load else ""),
        f"numpy {machine.get('numpy')} (BLAS: {machine.get('blas') or 'unknown'}), {torch_text}",
        f"in process: best of {results.get('repeats')} runs each; ratio > 1 means handprop "
        "is faster",
        "",
        f"{'measurement':<{LABEL}}{'handprop':>11}{'torch':>11}{'ratio':>10}  "
        f"{'target':<24}met",
    ]


_MAIN_ROWS = [
    ("(a) seed online step, batch 1, f64 (us/step)", "online_step_us",
     "torch_online_step_us", "ratio_online", ("online_step_us", "ratio_online")),
    ("(b) seed batch-32, f64 (samples/s)", "seed_batch32_samples_per_s",
     "torch_seed_batch32_samples_per_s", "ratio_seed_batch32", ("ratio_seed_batch32",)),
]


def _main_rows(results: dict) -> list[str]:
    """(a), (b): the fastest engine against torch, then each engine."""
    found, engines, lines = results.get("targets", {}), results.get("engines", []), []
    for label, ours, theirs, ratio, target_keys in _MAIN_ROWS:
        fastest = results.get("fastest", {}).get(ours)
        lines.append(_row(label + (f" [{fastest}]" if fastest else ""), results.get(ours),
                          results.get(theirs), results.get(ratio),
                          [found.get(k, {"target": "", "met": None}) for k in target_keys]))
        for engine in engines:
            lines.append(_row(f"    {engine} engine", results.get(f"{ours}_{engine}"), None,
                              results.get(f"{ratio}_{engine}"), []))
        if ours == "online_step_us" and "torch_1thread_online_step_us" in results:
            lines.append(_row("    torch on one thread (fastest engine)", None,
                              results["torch_1thread_online_step_us"],
                              results.get("ratio_online_torch_1thread"), []))
        if ours == "online_step_us":
            lines.append(
                f"{'    numpy bare loop, no fit bookkeeping':<{LABEL}}"
                f"{_num(results.get('online_step_us_raw')):>11}"
            )
    return lines


def _replica_lines(results: dict) -> list[str]:
    """us per replica-step at each R, per engine, with the R=15 and R=24 targets."""
    engines, found = results.get("engines", []), results.get("targets", {})
    if not engines:
        return []
    lines = ["", f"{'us per replica-step, seed, one core':<{LABEL}}"
             + "".join(f"{'R=' + r:>9}" for r in map(str, REPLICAS))]
    for engine in engines:
        per = results.get(f"replica_step_us_{engine}", {})
        lines.append(f"{'    ' + engine + ' engine':<{LABEL}}"
                     + "".join(f"{_num(per.get(str(r)), 2):>9}" for r in REPLICAS))
    for r in ("15", "24"):
        target = found.get(f"replica_step_us_r{r}")
        if target:
            lines.append(f"{'    target at R=' + r:<{LABEL}}{target['target']:>9}  met: "
                         f"{_met(target)}")
    return lines


def _spread_text(summary: dict[str, float] | None, digits: int = 0, suffix: str = "") -> str:
    """``median [min-max]``."""
    if not summary:
        return "-"
    return (f"{summary['median']:,.{digits}f}{suffix} [{summary['min']:,.{digits}f}-"
            f"{summary['max']:,.{digits}f}]")


_FRESH_TARGETS = {("lenet_batch64", 1): "ratio_lenet_batch64_1core",
                  ("lenet_batch64", 2): "ratio_lenet_batch64_2cores"}


def _fresh_lines(results: dict) -> list[str]:
    """Each fresh-process workload: samples/s and page faults per contender, the ratios."""
    fresh = results.get("fresh")
    if not fresh:
        return []
    lines = ["", f"fresh processes, real runs: {results.get('fresh_blocks')} interleaved "
             "blocks, median [min-max] over the blocks; minor page faults per epoch"]
    for key, entry in fresh.items():
        lines += [f"{entry['label']}", f"    {entry['text']}",
                  f"{'':<{LABEL}}{'samples/s':>26}{'faults, last epoch':>26}{'first':>10}"]
        for label, row in entry["rows"].items():
            used = row.get("engine_used")
            if used and row["library"] == "handprop" and used != row["engine"]:
                label = f"{label} (ran {used})"
            first = spread(row["faults_first_epoch"])
            lines.append(f"{'    ' + label:<{LABEL}}{_spread_text(row['summary']):>26}"
                         f"{_spread_text(spread(row['faults_last_epoch'])):>26}"
                         f"{_num(first and first['median'], 0):>10}"
                         + (f"  failed: {row['errors'][-1]}" if row["errors"] else ""))
        for ratio in entry["ratios"].values():
            lines.append(_fresh_ratio_line(results, key, entry, ratio))
    return lines


def _fresh_ratio_line(results: dict, key: str, entry: dict, ratio: dict) -> str:
    """``numerator  median [min-max]x  over denominator``, and its target if it has one."""
    target = results.get("targets", {}).get(
        _FRESH_TARGETS.get((key, entry["rows"][ratio["numerator"]]["workers"])))
    judged = target and entry["rows"][ratio["denominator"]]["library"] == "torch"
    return (f"{'    ' + ratio['numerator']:<{LABEL}}{_spread_text(ratio['summary'], 2, 'x'):>26}"
            f"  over {ratio['denominator']}"
            + (f"  (target {target['target']}: {_met(target)})" if judged else ""))


def _rule_lines(results: dict) -> list[str]:
    """The per-rule table: us per replica-step at each width (and torch's ratio)."""
    table, ratios = results.get("rule_step_us"), results.get("ratio_rule_step", {})
    if not table:
        return []
    widths = list(next(iter(table.values())))
    lines = ["", f"{'us per replica-step, R=24, compiled (x torch online)':<{LABEL}}"
             + "".join(f"{w:>16}" for w in widths)]
    for name, row in table.items():
        cells = []
        for width in widths:
            ratio = ratios.get(name, {}).get(width)
            cells.append(f"{_num(row[width], 2)}" + (f" ({ratio:.0f}x)" if ratio else ""))
        lines.append(f"{'    ' + name:<{LABEL}}" + "".join(f"{c:>16}" for c in cells))
    return lines


def _footer_lines(results: dict) -> list[str]:
    """Compile times, engines not measured, noisy repeats, what ran, the total time."""
    lines = []
    compile_time = results.get("compile_seconds")
    if compile_time:
        lines.append(f"compiled engine, first epoch in a fresh process: cold (empty Numba "
                     f"cache) {compile_time['cold']:.1f} s, warm (cached) "
                     f"{compile_time['warm']:.1f} s")
    for engine, reason in results.get("engine_errors", {}).items():
        lines.append(f"{engine} engine not measured: {reason}")
    noisy = [
        f"{name} ({max(times) / min(times):.1f}x)"
        for name, times in results.get("runs", {}).items()
        if len(times) > 1 and min(times) > 0 and max(times) / min(times) > NOISY_SPREAD
    ]
    if noisy:
        lines.append(
            f"warning: repeats varied by more than {NOISY_SPREAD:g}x (slowest/fastest) for "
            f"{', '.join(noisy)}: the machine was busy; the best run is reported, but rerun "
            "to confirm"
        )
    config = results.get("config", {})
    if config:
        lines.append("")
        lines.extend(f"{key}: {text}" for key, text in config.items())
    if "seconds_total" in results:
        load = results.get("load_average_end")
        lines.append(f"total benchmark time: {results['seconds_total']:.1f} s"
                     + (f"; load average {load[0]:.2f} at the end" if load else ""))
    return lines
