"""A study's run records: what every record carries (versions, rounded floats), and
reading the records back into matrices for summaries and figures."""

from __future__ import annotations

import contextlib
import json
import math
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError, HandpropError
from ..core.limits import check_seed
from ..core.schema import check_type


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


class RecordError(HandpropError):
    """A run record that is not what handprop wrote (corrupt, or edited by hand)."""


MAX_RECORD_BYTES = 64 * 10**6

RECORD_SCHEMA: dict[str, Any] = {
    "version": int, "fingerprint": str, "rule": str, "seed": int, "diverged": dict | None,
    "cost": list[float | None], "base_cost": list[float | None],
    "alignment": dict | None, "alignment_epochs": list[int] | None,
    "protocol": str, "fold": int | None, "train_images": int, "test_images": int,
    "test_accuracy": float | None, "test_error": float | None,
    "test_correct": list[bool] | None, "test_raw": list[float | None],
}
"""The types of the keys the studies' records hold (each checked where present)."""


def read_record(path: Path) -> dict[str, Any]:
    """Load one run's JSON record, checked against :data:`RECORD_SCHEMA` (a corrupt or
    hand-edited file is an error naming it)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_RECORD_BYTES + 1)
        if len(raw) > MAX_RECORD_BYTES:
            raise RecordError(f"record {path} is larger than any handprop writes")
        record = json.loads(raw.decode("utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise RecordError(f"corrupt record {path}: {exc}") from None
    except RecursionError:
        raise RecordError(f"corrupt record {path}: nested too deeply") from None
    try:
        check_type(record, dict, "the record")
        for key, hint in RECORD_SCHEMA.items():
            if key in record:
                check_type(record[key], hint, key)
        if "seed" in record:
            check_seed(record["seed"])
    except ConfigError as exc:
        raise RecordError(f"record {path} is not what handprop wrote ({exc}); delete it to "
                          "run its job again") from None
    return record


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


def alignment_epochs(records: list[dict]) -> list[int] | None:
    """The epochs at which the records' alignment was measured (0: before training)."""
    for record in records:
        if record.get("alignment_epochs"):
            return list(record["alignment_epochs"])
    return None


def final_alignment(records: list[dict], section: str = "gradient") -> dict[str, dict[str, Any]]:
    """Per layer, each metric's value after the last epoch, averaged over the runs where
    it is defined (``<metric>_final_mean``, or None), and how many runs it was undefined
    in (``<metric>_final_undefined``). An earlier epoch's value never stands in."""
    per_layer: dict[str, dict[str, list[float | None]]] = {}
    for record in records:
        if record.get("diverged"):
            continue  # like cost and accuracy: a diverged run has no final state
        for layer, metrics in ((record.get("alignment") or {}).get(section) or {}).items():
            slot = per_layer.setdefault(layer, {})
            for metric, values in metrics.items():
                slot.setdefault(metric, []).append(values[-1] if values else None)
    out: dict[str, dict[str, Any]] = {}
    for layer, metrics in per_layer.items():
        row = out.setdefault(layer, {})
        for metric, finals in metrics.items():
            defined = [v for v in finals if v is not None and math.isfinite(v)]
            row[f"{metric}_final_mean"] = float(np.mean(defined)) if defined else None
            row[f"{metric}_final_undefined"] = len(finals) - len(defined)
    return out
