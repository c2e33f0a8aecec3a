"""``--track DIR``: handprop's results mirrored into an MLflow store (SQLite), read back
here with MLflow's own client; without MLflow, one line before any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from helpers import run_cli
from test_fashion_mnist import needs_installed_files

ROOT = Path(__file__).resolve().parents[1]

_NO_MLFLOW = textwrap.dedent(
    """
    import importlib.abc, sys

    class Blocker(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name == "mlflow" or name.startswith("mlflow."):
                raise ImportError(f"No module named {name!r} (blocked by the test)")

    sys.meta_path.insert(0, Blocker())
    from handprop.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.parametrize("command", [["train", "--net", "small", "--data", "digits10"],
                                     ["biotorch", "--quick"], ["compare", "--quick"]])
def test_without_mlflow_track_fails_in_one_line_before_any_work(tmp_path, command):
    out, store = tmp_path / "out", tmp_path / "store"
    extra = [] if command[0] == "train" else ["--out", str(out)]
    done = subprocess.run([sys.executable, "-c", _NO_MLFLOW, *command, *extra, "--track",
                           str(store)], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 2, done.stderr
    assert done.stderr.count("\n") == 1
    assert "pip install 'handprop[mlflow]'" in done.stderr
    assert not out.exists() and not store.exists()  # nothing was done


def _client(store: Path):
    tracking = pytest.importorskip("mlflow.tracking")
    return tracking.MlflowClient(tracking_uri=f"sqlite:///{store / 'mlflow.db'}")


def test_train_run_is_read_back(tmp_path):
    store, results = tmp_path / "store", tmp_path / "run.json"
    code, out, err = run_cli("train", "--net", "small", "--data", "digits10", "--epochs", "3",
                             "--track", store, "--json", results, "--progress", "none")
    assert code == 0, err
    assert f"tracked in sqlite:///{store.resolve() / 'mlflow.db'}" in out
    client = _client(store)
    experiment = client.get_experiment_by_name("handprop train")
    (run,) = client.search_runs([experiment.experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.params["optimizer"] == "momentum" and run.data.params["data"] == "digits10"
    history = client.get_metric_history(run.info.run_id, "cost")
    saved = json.loads(results.read_text())
    assert [m.step for m in history] == [1, 2, 3]
    assert [m.value for m in history] == pytest.approx(saved["cost_history"])
    assert run.data.metrics["test_accuracy"] == pytest.approx(saved["test_accuracy"])
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["run.json"]


def test_study_is_mirrored_with_one_nested_run_per_record(tmp_path):
    needs_installed_files()
    store, out = tmp_path / "store", tmp_path / "bt"
    args = ["biotorch", "--quick", "--rules", "exact,fa",
            "--out", out, "--track", store, "--quiet"]
    code, stdout, err = run_cli(*args)
    assert code == 0, err
    assert "(4 new runs)" in stdout
    client = _client(store)
    experiment = client.get_experiment_by_name("handprop biotorch").experiment_id
    (parent,) = client.search_runs([experiment], "tags.`handprop.kind` = 'study'")
    children = client.search_runs([experiment],
                                  f"tags.`mlflow.parentRunId` = '{parent.info.run_id}'")
    assert sorted(c.info.run_name for c in children) == [
        "exact seed 0", "exact seed 1", "fa seed 0", "fa seed 1"]
    assert parent.data.params["epochs"] == "2"
    assert "rules.exact.honest.mean" in parent.data.metrics
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"report.md", "summary.json", "config.toml", "figures"} <= artifacts
    figures = {a.path for a in client.list_artifacts(parent.info.run_id, "figures")}
    assert "figures/curves.png" in figures
    child = next(c for c in children if c.info.run_name == "fa seed 1")
    record = json.loads((out / "runs" / "fa" / "seed1.json").read_text())
    assert child.data.params["rule"] == "fa" and child.data.params["seed"] == "1"
    assert child.data.params["config.momentum"] == "0.9"
    history = client.get_metric_history(child.info.run_id, "test_error_pct")
    assert [(m.step, m.value) for m in history] == [
        (i + 1, v) for i, v in enumerate(record["test_error_pct"])]
    angles = client.get_metric_history(child.info.run_id,
                                       "alignment.gradient.conv1.weight.angle_deg")
    assert [m.step for m in angles] == record["alignment_epochs"]
    assert child.data.metrics["test_error_pct_selected"] == record["test_error_pct_selected"]
    code, stdout, err = run_cli(*args)  # the same folder again: nothing new to mirror
    assert code == 0 and "(0 new runs)" in stdout, err
    assert len(client.search_runs([experiment], "tags.`handprop.kind` = 'study'")) == 1


def test_a_failing_tracker_loses_no_results(tmp_path, monkeypatch):
    needs_installed_files()
    import handprop.integrations.tracking as tracking

    def broken(*args, **kwargs):
        raise RuntimeError("the store is on fire")

    monkeypatch.setattr(tracking, "mirror_study", broken)
    out = tmp_path / "bt"
    code, stdout, err = run_cli("biotorch", "--quick", "--rules", "exact", "--seeds", "1",
                                "--out", out, "--track", tmp_path / "store", "--quiet")
    assert code == 0
    assert "warning: tracking" in err and "the store is on fire" in err
    assert (out / "report.md").is_file() and (out / "runs" / "exact" / "seed0.json").is_file()
