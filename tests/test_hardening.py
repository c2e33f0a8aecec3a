"""Issue 9, the cases that are not one malformed input (those are in test_bad_input.py):
file modes, the end-of-run interrupt, progress lines, what ``train`` says on an
interrupt, numbers for people, the feature-map title, flags that agree with a checkpoint."""

from __future__ import annotations

import io
import os
import signal
import stat
from pathlib import Path

import numpy as np
import pytest
from helpers import load_json, run_cli

import handprop.cli.train as cli_train
import handprop.studies.progress as progress
from handprop.cli import main
from handprop.cli.common import format_number
from handprop.core.io import atomic_write_text, write_json
from handprop.pictures.show import _verdict
from handprop.studies.progress import ProgressBar
from handprop.training.checkpoint import load_checkpoint

# -- (9.11) files follow the umask -----------------------------------------------------


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640), (0o002, 0o664)])
def test_written_files_follow_the_umask(tmp_path, umask, mode):
    previous = os.umask(umask)
    try:
        path = write_json(tmp_path / "r.json", {"a": 1})
    finally:
        os.umask(previous)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_replaced_file_keeps_its_mode(tmp_path):
    path = tmp_path / "r.txt"
    atomic_write_text(path, "one")
    path.chmod(0o600)
    atomic_write_text(path, "two")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600 and path.read_text() == "two"


def test_checkpoint_json_and_png_follow_the_umask(tmp_path):
    previous = os.umask(0o022)
    try:
        assert main(["train", "--epochs", "1", "--quiet", "--checkpoint", str(tmp_path / "c.npz"),
                     "--json", str(tmp_path / "r.json")]) == 0
        assert main(["show", "cost", "--checkpoint", str(tmp_path / "c.npz"), "--out",
                     str(tmp_path / "pics")]) == 0
    finally:
        os.umask(previous)
    for name in ("c.npz", "r.json", "pics/cost.png"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o644, name


# -- (9.8) interrupted while the report is written ---------------------------------------

@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_interrupt_while_the_report_is_drawn_still_writes_it(reproduce_quick_copy, monkeypatch,
                                                            signum, python_sigint):
    """SIGTERM/Ctrl-C while the figures are drawn: the report, summary.json and summary.txt
    are still written whole, then exit 130."""
    from handprop.studies.reproduce import ReproduceStudy

    out = reproduce_quick_copy
    for name in ("summary.json", "report.md", "summary.txt"):
        (out / name).unlink()
    draw = ReproduceStudy.write_figures

    def interrupted_drawing(self, records, summary):
        os.kill(os.getpid(), signum)
        return draw(self, records, summary)

    monkeypatch.setattr(ReproduceStudy, "write_figures", interrupted_drawing)
    code, stdout, stderr = run_cli("reproduce", "--quick", "--out", out, "--quiet")
    assert code == 130 and "handprop: interrupted" in stderr and "Traceback" not in stderr
    summary = load_json(out / "summary.json")
    assert summary["meta"]["finished_jobs"] == summary["meta"]["jobs"]
    assert "# handprop reproduce" in (out / "report.md").read_text()
    assert (out / "summary.txt").read_text().strip()


# -- (9.13) progress ------------------------------------------------------------------------

def test_progress_lines_for_logs():
    stream = io.StringIO()
    bar = ProgressBar(12, "reproduce", stream=stream, mode="lines", interval=0)
    bar.update(0, "0/12 jobs")
    bar.update(6, "6/12 jobs")
    bar.close()
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue() and len(lines) == 3
    assert lines[0].startswith("reproduce: 0/12 jobs, 0%,") and lines[0].endswith("ETA --")
    assert lines[1].startswith("reproduce: 6/12 jobs, 50%,") and "elapsed, ETA " in lines[1]
    assert "nan" not in stream.getvalue()


def test_progress_modes():
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    assert ProgressBar(1, stream=Terminal()).mode == "bar"
    assert ProgressBar(1, stream=io.StringIO()).mode == "lines"
    assert ProgressBar(1, stream=Terminal(), enabled=False).mode == "none"
    assert ProgressBar(1, stream=io.StringIO(), mode="bar").mode == "bar"
    stream = Terminal()
    bar = ProgressBar(10, "x", stream=stream)
    bar.update(0)
    assert "ETA      --" in stream.getvalue() and "nan" not in stream.getvalue()


def test_train_progress_lines(monkeypatch):
    monkeypatch.setattr(progress, "LINE_INTERVAL", 0.0)
    code, _, stderr = run_cli("train", "--epochs", "3", "--progress", "lines")
    assert code == 0
    lines = stderr.splitlines()
    assert lines[0].startswith("train seed: epoch 1/3, 33%,") and ", cost " in lines[0]
    assert lines[-1].startswith("train seed: epoch 3/3, 100%") and ", cost " in lines[-1]


def test_study_progress_lines(reproduce_quick_copy, monkeypatch):
    monkeypatch.setattr(progress, "LINE_INTERVAL", 0.0)
    (reproduce_quick_copy / "runs" / "corrected" / "fc18-20" / "exact" /
     "article-seed0.json").unlink()
    code, _, stderr = run_cli("reproduce", "--quick", "--out", reproduce_quick_copy,
                              "--backend", "sequential", "--progress", "lines")
    assert code == 0
    assert "reproduce: 1/1 jobs, 100%" in stderr and "\r" not in stderr


def test_quiet_is_progress_none(capsys):
    assert main(["train", "--epochs", "2", "--progress", "bar", "--quiet"]) == 0
    assert capsys.readouterr().err == ""


# -- (9.13) train says how to resume after an interrupt ----------------------------------

def test_interrupted_train_says_how_to_resume(tmp_path, monkeypatch, capsys):
    path = tmp_path / "run.npz"
    save = cli_train.save_checkpoint

    def save_then_interrupt(where, run, state):
        save(where, run, state)
        if state.epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(cli_train, "save_checkpoint", save_then_interrupt)
    assert main(["train", "--epochs", "5", "--quiet", "--checkpoint", str(path)]) == 130
    err = capsys.readouterr().err
    assert f"checkpoint {path} holds epoch 2 of 5" in err
    assert f"resume with: handprop train --resume {path}\n" in err
    assert err.endswith("handprop: interrupted\n")
    assert load_checkpoint(path).meta["state"]["epoch"] == 2


def test_interrupted_train_without_checkpoint_says_so(monkeypatch, capsys):
    from handprop.training import loop

    def interrupted_fit(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "fit", interrupted_fit)
    assert main(["train", "--epochs", "5", "--quiet"]) == 130
    assert "no checkpoint was saved" in capsys.readouterr().err


def test_interrupted_before_the_first_save_does_not_point_at_a_stale_file(tmp_path, monkeypatch,
                                                                          capsys):
    from handprop.training import loop

    stale = tmp_path / "old.npz"
    assert main(["train", "--epochs", "1", "--quiet", "--checkpoint", str(stale)]) == 0

    def interrupted_fit(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "fit", interrupted_fit)
    assert main(["train", "--epochs", "5", "--quiet", "--checkpoint", str(stale)]) == 130
    err = capsys.readouterr().err
    assert "no checkpoint was saved" in err and "--resume" not in err


# -- (9.9) flags that agree with the checkpoint are fine ---------------------------------

def test_resume_accepts_flags_that_match_the_checkpoint(tmp_path):
    path = tmp_path / "c.npz"
    assert main(["train", "--epochs", "1", "--quiet", "--checkpoint", str(path), "--rule", "fa",
                 "--shuffle"]) == 0
    assert main(["train", "--resume", str(path), "--epochs", "2", "--quiet", "--rule", "fa",
                 "--shuffle", "--lr", "0.09", "--seed", "0", "--init", "normal"]) == 0
    assert load_checkpoint(path).meta["state"]["epoch"] == 2


# -- (9.12) numbers for people, (9.13) the feature-map title ------------------------------

@pytest.mark.parametrize(("value", "text"), [(1e300, "1e+300"), (12.345678, "12.3457"),
                                             (0.5, "0.5000"), (0.0, "0.0000"),
                                             (1.5e-7, "1.5e-07"), (float("nan"), "nan"),
                                             (None, "n/a")])
def test_format_number(value, text):
    assert format_number(value) == text


def test_train_prints_a_huge_cost_short(monkeypatch, capsys):
    from handprop.training.loop import History

    monkeypatch.setattr(History, "cost_list", lambda self, replica=None: [1e300, 2.5e299])
    assert main(["train", "--epochs", "1", "--quiet"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("cost:"))
    assert line == "cost: first epoch 1e+300, last epoch 2.5e+299"


def test_feature_map_title_names_truth_and_prediction():
    assert _verdict(np.array([0.9]), 0, (0, 1)) == ": true class 0, predicted 1 (wrong)"
    assert _verdict(np.array([0.1, 0.7, 0.2]), 1, ("a", "b", "c")) == \
        ": true class b, predicted b (right)"
    assert _verdict(np.array([0.2]), None, None) == ": predicted 0"


def test_show_maps_passes_the_true_class(tmp_path, monkeypatch):
    from handprop.pictures import show

    seen = {}
    draw = show.feature_maps

    def spy(net, image, path, **kwargs):
        seen.update(kwargs)
        return draw(net, image, path, **kwargs)

    monkeypatch.setattr(show, "feature_maps", spy)
    assert main(["train", "--epochs", "1", "--quiet", "--checkpoint",
                 str(tmp_path / "c.npz")]) == 0
    assert main(["show", "maps", "--image", "3", "--checkpoint", str(tmp_path / "c.npz"),
                 "--out", str(tmp_path / "p")]) == 0
    assert seen["classes"] == (0, 1) and seen["label"] in (0, 1)
    assert (tmp_path / "p" / "maps-test-3.png").is_file()


def test_show_checks_the_image_index_before_training(monkeypatch, capsys, tmp_path):
    from handprop.training import loop

    monkeypatch.setattr(loop, "fit", lambda *a, **k: pytest.fail("trained before checking"))
    assert main(["show", "maps", "--image", "99", "--out", str(tmp_path / "p")]) == 2
    assert "--image 99 is out of range" in capsys.readouterr().err
    assert not (tmp_path / "p").exists()


def test_outputs_are_checked_before_training(monkeypatch, capsys, tmp_path):
    """(9.3) ``--json`` under a regular file is refused before any training."""
    from handprop.training import loop

    monkeypatch.setattr(loop, "fit", lambda *a, **k: pytest.fail("trained before checking"))
    blocker = tmp_path / "file"
    blocker.write_text("x")
    assert main(["train", "--json", str(blocker / "x.json")]) == 2
    assert "not a directory" in capsys.readouterr().err


def test_a_study_that_cannot_reach_its_backend_leaves_no_folder(tmp_path, monkeypatch):
    """(9.3) a failing backend leaves no config.toml behind."""
    import handprop.studies.runner as runner
    from handprop.core.errors import ConfigError

    def unreachable(address, *timeout):
        raise ConfigError(f"cannot reach the Dask scheduler at {address}: refused")

    monkeypatch.setattr(runner, "_dask_client", unreachable)
    out = tmp_path / "a" / "out"
    code, _, stderr = run_cli("reproduce", "--quick", "--backend", "dask", "--scheduler",
                              "tcp://127.0.0.1:1", "--out", out)
    assert code == 2 and "cannot reach" in stderr
    assert not (tmp_path / "a").exists()


def test_pid_does_not_change_fingerprints_or_results(reproduce_quick):
    """Records carry the process that trained them, outside what is compared."""
    from handprop.studies.reproduce import build_jobs, load_config

    jobs = build_jobs(load_config(reproduce_quick / "config.toml"), reproduce_quick)
    assert all(job.is_done() for job in jobs)
    record = load_json(jobs[0].outputs[0])
    assert isinstance(record["pid"], int) and "pid" not in jobs[0].spec


def test_library_users_get_the_same_limits():
    from handprop.core.limits import memory_budget

    budget, source = memory_budget()
    assert budget > 0 and source


def test_memory_budget_from_the_environment(monkeypatch):
    from handprop.core.errors import ConfigError
    from handprop.core.limits import memory_budget

    monkeypatch.setenv("HANDPROP_MEMORY_BUDGET", "2G")
    assert memory_budget() == (2 * 10**9, "HANDPROP_MEMORY_BUDGET=2G")
    monkeypatch.setenv("HANDPROP_MEMORY_BUDGET", "lots")
    with pytest.raises(ConfigError, match="HANDPROP_MEMORY_BUDGET"):
        memory_budget()


def test_deferred_interrupts_let_a_second_one_through(python_sigint):
    from handprop.core.interrupts import deferred_interrupts

    with pytest.raises(KeyboardInterrupt), deferred_interrupts():
        os.kill(os.getpid(), signal.SIGINT)
        assert True  # still running: the first one waits
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            for _ in range(1000):  # give the handler a chance to run
                pass


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_an_interrupt_dropped_in_a_ctypes_callback_is_raised_later():
    """Python prints and drops an exception raised in a ctypes callback (Numba's
    compiler runs one): the handprop handler keeps the signal, and the study runner's
    check after each job raises it."""
    import ctypes

    from handprop.core.interrupts import interrupt, raise_if_interrupted

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        def signalled() -> None:
            os.kill(os.getpid(), signal.SIGTERM)
            for _ in range(1000):  # the handler runs in here
                pass

        callback = ctypes.CFUNCTYPE(None)(signalled)
        callback()  # its KeyboardInterrupt is printed and dropped
        with pytest.raises(KeyboardInterrupt):
            raise_if_interrupted()
        raise_if_interrupted()  # handled: once only
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_umask_reader_matches(tmp_path):
    from handprop.core.io import _umask

    previous = os.umask(0o037)
    try:
        assert _umask() == 0o037
    finally:
        os.umask(previous)


@pytest.fixture(autouse=True)
def _cwd(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return Path(tmp_path)
