"""The extension points: a command is one module of handprop.cli, a study is one module
that registers a Study subclass; neither needs an edit anywhere else.

A tiny study is registered here, in the test module, to prove that it gets a
``handprop`` subcommand (flags derived from its config) and runs through the shared
skeleton: config.toml, records, summary.json, report.md, summary.txt, resuming, and the
report of what finished after an interrupt.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from helpers import load_json as load
from helpers import run_cli

from handprop.core.errors import ConfigError
from handprop.core.io import write_json
from handprop.studies.runner import Job
from handprop.studies.study import Study, option, register_study, registered_studies

BUILTIN = ["train", "gradcheck", "bench", "reproduce", "compare", "demo", "rules", "show"]


# -- a study defined outside handprop ---------------------------------------------------

@dataclass
class EchoConfig:
    words: list[str] = option(default_factory=lambda: ["hello"],
                              help="comma-separated words, one job each")
    repeat: int = option(2, help="how often each word is echoed")
    separator: str = option(" ")
    note: str = "not a flag"  # a plain field: in the TOML table, not on the command line


def echo_job(spec: dict[str, Any]) -> dict[str, Any]:
    """The trivial job: one record holding the echoed word ("stop" acts like Ctrl-C)."""
    if spec["word"] == "stop":
        raise KeyboardInterrupt
    text = spec["separator"].join([spec["word"]] * spec["repeat"])
    write_json(Path(spec["outputs"][0]), {"fingerprint": spec["fingerprint"],
                                          "word": spec["word"], "text": text})
    return {}


@register_study
class EchoStudy(Study):
    name = "echo-test"
    help = "a test study: echo words"
    config_class = EchoConfig
    default_out = "results-echo"
    quick = {"repeat": 1}
    quick_help = "a smoke run: each word once"

    @classmethod
    def validate_config(cls, config: EchoConfig, source: str = "config") -> EchoConfig:
        if not isinstance(config.repeat, int) or config.repeat < 1:
            raise ConfigError(f"{source}: repeat must be an integer >= 1, got {config.repeat!r}")
        return config

    def build_jobs(self) -> list[Job]:
        jobs = []
        for word in self.config.words:
            output = self.out / "runs" / f"{word}.json"
            spec = {"word": word, "repeat": self.config.repeat,
                    "separator": self.config.separator, "outputs": [str(output)]}
            jobs.append(Job(f"echo/{word}", f"{__name__}:echo_job", spec, [output]))
        return jobs

    def summarize(self, records: dict[str, list[dict]]) -> dict[str, Any]:
        return {job_id: [r["text"] for r in found] for job_id, found in records.items()}

    def report(self, summary, findings, meta, figures) -> str:
        lines = ["# echo", ""] + [f"* {job}: {texts}" for job, texts in summary.items()]
        return "\n".join(lines) + "\n"

    def terminal_summary(self, summary, findings, meta) -> str:
        return f"echoed {sum(map(len, summary.values()))} records"


def echo(out: Path, *flags: str) -> tuple[int, str, str]:
    return run_cli("echo-test", "--out", out, "--backend", "sequential", "--quiet", *flags)


# -- commands ---------------------------------------------------------------------------

def test_every_command_is_in_help_and_has_a_module(capsys):
    from handprop.cli import load_commands, main

    commands = load_commands()
    assert main(["--help"]) == 0
    listed = re.findall(r"^    (\S+)", capsys.readouterr().out, re.M)
    assert listed == [c.name for c in commands]
    assert [name for name in listed if name in BUILTIN] == BUILTIN  # today's order
    studies = registered_studies()
    for command in commands:
        module = importlib.import_module(command.module)
        assert Path(module.__file__).is_file(), command.name
        if command.name not in studies:  # a study's command lives in the study's module
            # a plain command lives in its own module of handprop.cli
            assert command.module.startswith("handprop.cli."), command.name
        else:
            assert command.module == studies[command.name].__module__, command.name
    by_name = {c.name: c.module for c in commands}
    assert by_name["reproduce"] == "handprop.studies.reproduce"
    assert by_name["compare"] == "handprop.studies.compare"
    assert by_name[EchoStudy.name] == __name__


def test_study_flags_keep_their_names_and_order(capsys):
    from handprop.cli import main

    expected = {
        "reproduce": ["--config", "--out", "--quick", "--seeds", "--first-seed", "--epochs",
                      "--rules", "--variant", "--transform", "--folds", "--seeding",
                      "--ablation-epochs", "--sensitivity", "--sensitivity-experiments",
                      "--track-epochs", "--probe", "--align-every", "--engine", "--backend",
                      "--scheduler", "--jobs", "--wait-workers", "--progress", "--quiet",
                      "--track"],
        "compare": ["--config", "--out", "--quick", "--rules", "--seeds", "--first-seed",
                    "--data", "--net", "--epochs", "--batch-size", "--optimizer", "--lr",
                    "--momentum", "--probe", "--align-every", "--engine", "--backend",
                    "--scheduler", "--jobs",
                    "--wait-workers", "--progress", "--quiet", "--track"],
    }
    for name, flags in expected.items():
        assert main([name, "--help"]) == 0
        text = capsys.readouterr().out
        usage = text.split("\n\n")[0]
        assert re.findall(r"\[(--[a-z-]+)", usage) == flags, name
    assert main(["reproduce", "--help"]) == 0
    text = capsys.readouterr().out
    assert "a smoke run: 5 epochs, 2 seeds, 1 sensitivity seed" in text
    assert "k-fold CV per seed instead of the single 80/20 split" in text


@pytest.mark.slow
@pytest.mark.parametrize("module", ["handprop", "handprop.cli"])
def test_python_dash_m_runs_the_command(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    for name in BUILTIN:
        assert re.search(rf"^    {name}\b", result.stdout, re.M), name


# -- a registered study -----------------------------------------------------------------

def test_registered_study_gets_a_command_with_flags_from_its_config(capsys):
    from handprop.cli import main

    assert main(["--help"]) == 0
    assert re.search(r"^    echo-test\s+a test study: echo words$", capsys.readouterr().out,
                     re.M)
    assert main(["echo-test", "--help"]) == 0
    text = capsys.readouterr().out
    for flag, help_text in [("--words WORDS", "comma-separated words, one job each"),
                            ("--repeat REPEAT", "how often each word is echoed"),
                            ("--quick", "a smoke run: each word once"),
                            ("--config CONFIG", "[echo-test] table"),
                            ("--backend BACKEND", "loky")]:
        assert flag in text and help_text in text, flag
    assert "--separator SEPARATOR" in text
    assert "--note" not in text  # not an option() field


def test_registered_study_runs_through_the_skeleton(tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = echo(out, "--words", "a, b", "--repeat", "3", "--separator", "-")
    assert code == 0, stderr
    assert "echoed 2 records" in stdout
    assert f"wrote {out / 'report.md'}, {out / 'summary.json'}" in stdout
    config = tomllib.loads((out / "config.toml").read_text())["echo-test"]
    assert config == {"words": ["a", "b"], "repeat": 3, "separator": "-", "note": "not a flag"}
    assert load(out / "runs" / "a.json")["text"] == "a-a-a"
    summary = load(out / "summary.json")
    assert summary["results"] == {"echo/a": ["a-a-a"], "echo/b": ["b-b-b"]}
    assert summary["findings"] == {}
    meta = summary["meta"]
    assert meta["jobs"] == meta["finished_jobs"] == 2 and meta["skipped_jobs"] == 0
    assert meta["backend"] == "sequential" and meta["interrupted"] is False
    assert meta["config"]["words"] == ["a", "b"]
    assert "* echo/a: ['a-a-a']" in (out / "report.md").read_text()
    assert (out / "summary.txt").read_text() == "echoed 2 records\n"
    # the saved config reruns the study: every job is reused
    code, _, stderr = echo(out, "--config", out / "config.toml")
    assert code == 0, stderr
    assert load(out / "summary.json")["meta"]["skipped_jobs"] == 2


def test_registered_study_defaults_quick_and_bad_values(tmp_path):
    code, _, stderr = echo(tmp_path / "default")
    assert code == 0, stderr
    assert load(tmp_path / "default" / "runs" / "hello.json")["text"] == "hello hello"
    code, _, stderr = echo(tmp_path / "quick", "--quick")
    assert code == 0, stderr
    assert load(tmp_path / "quick" / "runs" / "hello.json")["text"] == "hello"
    code, _, stderr = echo(tmp_path / "bad", "--repeat", "0")
    assert code == 2 and stderr == "handprop: error: command line: repeat must be an " \
                                   "integer >= 1, got 0\n"
    assert not (tmp_path / "bad").exists()
    bad = tmp_path / "bad.toml"
    bad.write_text('[echo-test]\nwords = ["x"]\ncolour = "red"\n')
    code, _, stderr = echo(tmp_path / "bad", "--config", bad)
    assert code == 2 and "unknown key(s) in [echo-test]: colour" in stderr


def test_registered_study_reports_what_finished_when_interrupted(tmp_path):
    out = tmp_path / "out"
    code, stdout, stderr = echo(out, "--words", "a,stop,b")
    assert code == 130 and "handprop: interrupted" in stderr
    summary = load(out / "summary.json")
    assert summary["meta"]["interrupted"] is True
    assert summary["meta"]["finished_jobs"] == 1
    assert summary["results"] == {"echo/a": ["a a"], "echo/stop": [], "echo/b": []}
    assert "echoed 1 records" in stdout and (out / "report.md").is_file()
