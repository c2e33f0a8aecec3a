"""Experiment tracking: mirror handprop's results into an MLflow store (``--track DIR``).

Optional: ``pip install 'handprop[mlflow]'`` (MLflow's client with its SQLite store).
handprop's own files stay the record. The tracker only mirrors them, after they are
written, so a tracker that fails loses nothing: a one-line warning, and the results are
where they always are.

The store is ``DIR/mlflow.db`` (SQLite) with artifacts under ``DIR/artifacts``; browse it
with ``mlflow ui --backend-store-uri sqlite:///DIR/mlflow.db`` (the UI comes with the full
``mlflow`` package). What is written:

* a study (experiment ``handprop <study>``): one parent run per results folder (its
  config as params, the numbers of ``summary.json`` as metrics, ``report.md``, the
  summaries, ``config.toml`` and the figures as artifacts) and, nested under it, one run
  per record (rule, seed, config): the record's settings as params, every per-epoch
  series as a metric with the epoch as its step, the alignment angles per layer the
  same way, its final numbers, and the record file itself. Mirroring the same folder
  again (after a resumed or extended study) adds only the records not yet mirrored;
* ``handprop train`` (experiment ``handprop train``): one run with the training config,
  the cost per epoch, the test accuracy, and the ``--json`` and checkpoint files.
"""

from __future__ import annotations

import json
import logging
import math
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..core.errors import ConfigError

INSTALL = "pip install 'handprop[mlflow]'"
STORE = "mlflow.db"
ARTIFACTS = "artifacts"
MAX_PARAM = 500  # characters of a parameter's value kept (MLflow allows more; keep it readable)
MAX_METRICS = 1000  # MLflow's limit per log_batch call
PARENT_METRIC_PARTS = ("mean", "low", "high", "n", "diverged", "runs")


def require_mlflow() -> None:
    """Refuse ``--track`` before any work when MLflow is not installed (one line)."""
    try:
        import mlflow.tracking  # noqa: F401
    except ImportError:
        raise ConfigError(f"--track needs MLflow, which is not installed: {INSTALL}") from None


def tracking_uri(folder: str | Path) -> str:
    return f"sqlite:///{Path(folder).resolve() / STORE}"


class Tracker:
    """An MLflow client on ``folder``'s SQLite store (created on first use)."""

    def __init__(self, folder: str | Path) -> None:
        require_mlflow()
        from mlflow.tracking import MlflowClient

        self.folder = Path(folder).resolve()
        self.folder.mkdir(parents=True, exist_ok=True)
        for name in ("mlflow", "alembic"):  # table creation is not the user's business
            logging.getLogger(name).setLevel(logging.WARNING)
        self.client = MlflowClient(tracking_uri=tracking_uri(self.folder))

    def experiment(self, name: str) -> str:
        found = self.client.get_experiment_by_name(name)
        if found is not None:
            return found.experiment_id
        location = (self.folder / ARTIFACTS / name.replace(" ", "-")).as_uri()
        return self.client.create_experiment(name, artifact_location=location)

    def find(self, experiment: str, tags: dict[str, str]) -> list[Any]:
        query = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
        return self.client.search_runs([experiment], filter_string=query, max_results=50000)

    def start(self, experiment: str, name: str, tags: dict[str, str],
              parent: str | None = None) -> str:
        tags = dict(tags)
        if parent is not None:
            tags["mlflow.parentRunId"] = parent
        return self.client.create_run(experiment, run_name=name, tags=tags).info.run_id

    def log(self, run: str, params: dict[str, Any], metrics: Iterable[tuple[str, float, int]]
            ) -> None:
        """Params (values cut to MAX_PARAM characters) and metrics (key, value, step)."""
        from mlflow.entities import Metric, Param

        now = _now_ms()
        params_out = [Param(_key(k), str(v)[:MAX_PARAM]) for k, v in params.items()]
        metrics_out = [Metric(_key(k), v, now, step) for k, v, step in metrics
                       if isinstance(v, int | float) and math.isfinite(v)]
        for start in range(0, max(len(params_out), 1), 100):
            self.client.log_batch(run, params=params_out[start:start + 100])
        for start in range(0, len(metrics_out), MAX_METRICS):
            self.client.log_batch(run, metrics=metrics_out[start:start + MAX_METRICS])

    def files(self, run: str, paths: Iterable[Path], folder: str | None = None) -> None:
        for path in paths:
            if path is not None and Path(path).is_file():
                self.client.log_artifact(run, str(path), folder)

    def finish(self, run: str, status: str = "FINISHED") -> None:
        self.client.set_terminated(run, status)


def _now_ms() -> int:
    import time

    return int(time.time() * 1000)


def _key(name: str) -> str:
    """An MLflow-safe key (letters, digits, ``_-./`` and spaces)."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in str(name))[:250]


def flat(data: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Leaves of nested dicts as ``("a.b.c", value)``."""
    if isinstance(data, dict):
        for key, value in data.items():
            yield from flat(value, f"{prefix}{key}.")
    else:
        yield prefix[:-1], data


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# -- what a record becomes ---------------------------------------------------------------

def record_params(record: dict[str, Any]) -> dict[str, Any]:
    """A record's settings: its top-level strings and whole numbers that name the run
    (rule, seed, net, ...), and its config, flattened (lists as JSON)."""
    params = {key: value for key, value in record.items()
              if isinstance(value, str) or (isinstance(value, int) and key in ("seed",))}
    for key, value in flat(record.get("config") or {}, "config."):
        params[key] = json.dumps(value) if isinstance(value, list | dict) else value
    return params


def record_metrics(record: dict[str, Any]) -> list[tuple[str, float, int]]:
    """Per-epoch series (every top-level list of numbers, step = epoch, 1-based), the
    alignment angles (step = the epoch measured after, 0 = before training) and the final
    numbers (step 0)."""
    metrics: list[tuple[str, float, int]] = []
    for key, value in record.items():
        if _number(value) and key not in ("version", "pid", "seed"):
            metrics.append((key, float(value), 0))
        elif isinstance(value, list) and value and all(v is None or _number(v) for v in value):
            metrics += [(key, float(v), i + 1) for i, v in enumerate(value) if v is not None]
    epochs = record.get("alignment_epochs") or []
    for section, layers in (record.get("alignment") or {}).items():
        for layer, series in (layers or {}).items():
            for metric, values in series.items():
                steps = epochs if len(epochs) == len(values) else range(len(values))
                metrics += [(f"alignment.{section}.{layer}.{metric}", float(v), int(step))
                            for v, step in zip(values, steps, strict=False) if v is not None]
    return metrics


def _run_name(record: dict[str, Any], fallback: str) -> str:
    parts = [str(record[k]) for k in ("experiment", "variant", "rule") if record.get(k)]
    if "seed" in record:
        parts.append(f"seed {record['seed']}")
    return " ".join(parts) or fallback


# -- a study ---------------------------------------------------------------------------

def mirror_study(folder: str | Path, name: str, out: Path, config: dict[str, Any],
                 records: dict[Path, dict[str, Any]]) -> int:
    """Mirror a finished study's results folder ``out``: its parent run (created once per
    folder) and one nested run per record not mirrored yet. Returns the runs added."""
    tracker = Tracker(folder)
    experiment = tracker.experiment(f"handprop {name}")
    out = out.resolve()
    key = {"handprop.kind": "study", "handprop.out": str(out)}
    found = tracker.find(experiment, key)
    parent = found[0].info.run_id if found else tracker.start(
        experiment, f"{name} {out.name}", key)
    if not found:
        tracker.log(parent, {k: json.dumps(v) if isinstance(v, list | dict) else v
                             for k, v in flat(config)}, [])
    tracker.log(parent, {}, _summary_metrics(out / "summary.json"))
    tracker.files(parent, [out / f for f in ("report.md", "summary.json", "summary.txt",
                                              "config.toml")])
    tracker.files(parent, sorted(out.glob("*.png")), "figures")
    known = {run.data.tags.get("handprop.record")
             for run in tracker.find(experiment, {"handprop.parent": parent})}
    added = 0
    for path, record in records.items():
        tag = f"{path.relative_to(out)}@{record.get('fingerprint', '')}"
        if tag in known:
            continue
        child = tracker.start(experiment, _run_name(record, path.stem),
                              {"handprop.record": tag, "handprop.parent": parent}, parent)
        tracker.log(child, record_params(record), record_metrics(record))
        tracker.files(child, [path])
        tracker.finish(child, "FAILED" if record.get("diverged") else "FINISHED")
        added += 1
    tracker.finish(parent)
    return added


def _summary_metrics(path: Path) -> list[tuple[str, float, int]]:
    """The numbers of ``summary.json`` a reader looks for (means, interval bounds,
    counts), keyed by their path in the file."""
    try:
        summary = json.loads(path.read_text())
    except (OSError, ValueError):
        return []
    return [(key, float(value), 0) for key, value in flat(summary)
            if _number(value) and key.rsplit(".", 1)[-1] in PARENT_METRIC_PARTS][:MAX_METRICS]


# -- handprop train --------------------------------------------------------------------

def mirror_train(folder: str | Path, results: dict[str, Any], files: Iterable[Path | None]
                 ) -> str:
    """One run of ``handprop train``: config as params, the cost per epoch, the test
    accuracy, and the files it wrote. Returns the run's id."""
    tracker = Tracker(folder)
    experiment = tracker.experiment("handprop train")
    config = results.get("config") or {}
    name = f"{results.get('network', {}).get('name', 'net')} {config.get('rule', '')}".strip()
    run = tracker.start(experiment, name, {"handprop.kind": "train"})
    metrics = [("cost", float(c), i + 1) for i, c in enumerate(results.get("cost_history", []))
               if c is not None]
    for key in ("test_accuracy", "seconds", "steps"):
        if _number(results.get(key)):
            metrics.append((key, float(results[key]), 0))
    tracker.log(run, {**{k: v for k, v in flat(config)},
                      "data": (results.get("data") or {}).get("name"),
                      "engine": results.get("engine")}, metrics)
    tracker.files(run, [f for f in files if f is not None])
    tracker.finish(run, "FAILED" if results.get("diverged") else "FINISHED")
    return run


def warn_failure(exc: BaseException, where: str) -> None:
    """A tracker that failed: one line; handprop's files are the results."""
    sys.stderr.write(f"handprop: warning: tracking to {where} failed ({type(exc).__name__}: "
                     f"{str(exc).splitlines()[0] if str(exc) else ''}); the results are in "
                     "handprop's own files\n")
