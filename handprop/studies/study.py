"""The study skeleton, written once: what ``reproduce``, ``compare`` and any new study do.

A study is a config (a dataclass, defaults in ``configs/<name>.toml``), a list of jobs
that each train a group of runs and write one record per run, a summary of the records,
and its outputs: ``config.toml`` (the resolved config), ``summary.json``, ``report.md``,
``summary.txt`` and figures. :meth:`Study.run` is the template:

    check the config -> prepare -> build jobs -> check memory and the results folder
    -> open the backend -> save config.toml -> run the jobs (runner.run_study)
    -> load records -> summarize -> write outputs -> re-raise an interrupt or error

A subclass supplies only what differs. Registering it (``@register_study``) is all it
takes to get a ``handprop <name>`` command: the CLI derives the command's flags from
the config's fields declared with :func:`option`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import math
import os
import pkgutil
import sys
import tomllib
import typing
from collections.abc import Iterator
from dataclasses import MISSING, asdict
from importlib import resources
from pathlib import Path
from typing import Any, ClassVar

from ..core.errors import ConfigError, HandpropError
from ..core.interrupts import deferred_interrupts
from ..core.io import atomic_write_text, check_output_dir, folder_lock, write_json
from ..core.limits import check_int, check_memory, memory_budget, processes_bytes
from ..core.schema import check_type
from .records import RecordError, collect
from .runner import (
    WAIT_FOR_WORKERS,
    Backend,
    Job,
    StudyRun,
    local_workers,
    remove_progress,
    run_study,
)

STUDIES: dict[str, type[Study]] = {}


def register_study(study: type[Study]) -> type[Study]:
    """Class decorator: make ``study`` known (and a ``handprop <study.name>`` command)."""
    STUDIES[study.name] = study
    return study


def registered_studies() -> dict[str, type[Study]]:
    """Every registered study. The modules of this package are imported first, so a new
    study needs no list to be added to: its file registers it when imported."""
    package = importlib.import_module(__package__)
    for info in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{__package__}.{info.name}")
    return dict(STUDIES)


def option(default: Any = MISSING, *, help: str | None = None,
           default_factory: Any = MISSING, low: int | None = None,
           high: int | None = None) -> Any:
    """A config field that is also a command-line flag (``first_seed`` -> ``--first-seed``).

    ``help`` is the flag's help text. An ``int``/``float`` field takes a number, a ``str``
    field a string, a ``list[str]`` field a comma-separated list. ``low``/``high`` bound an
    ``int`` field (in the TOML file and on the command line alike).
    """
    return dataclasses.field(default=default, default_factory=default_factory,
                             metadata={"flag": True, "help": help, "low": low, "high": high})


def bounded(low: int | None = None, high: int | None = None, **kwargs: Any) -> Any:
    """A config field that is not a flag, with bounds (as :func:`option`'s)."""
    return dataclasses.field(**kwargs, metadata={"low": low, "high": high})


@dataclasses.dataclass(frozen=True)
class Flag:
    """A command-line flag derived from a config field."""

    field: str
    kind: type  # int, float, str or list (comma-separated strings)
    help: str | None
    low: int | None = None
    high: int | None = None

    @property
    def name(self) -> str:
        return "--" + self.field.replace("_", "-")


class Study:
    """The skeleton. Subclasses set the class attributes and implement the hooks marked
    "required"; the others have defaults that fit a simple study."""

    name: ClassVar[str]                  # the command, the TOML table, the progress label
    help: ClassVar[str]                  # one line, for ``handprop --help``
    config_class: ClassVar[type]         # a dataclass; flags come from its option() fields
    default_out: ClassVar[str] = "results"
    quick: ClassVar[dict[str, Any]] = {}  # what ``--quick`` sets
    quick_help: ClassVar[str] = "a smoke run"
    flag_order: ClassVar[tuple[str, ...]] = ()  # flags in --help (default: field order)
    order: ClassVar[int] = 100           # place in ``handprop --help``
    summary_key: ClassVar[str] = "results"    # summary.json: {summary_key: ..., }
    findings_key: ClassVar[str] = "findings"  # ... findings_key: ..., "meta": ...}

    def __init__(self, config: Any, out: Path, backend: str = "loky",
                 n_jobs: int | None = None, scheduler: str | None = None,
                 show_progress: bool | None = None, progress: str | None = None,
                 wait_for_workers: float = WAIT_FOR_WORKERS) -> None:
        self.config = config
        self.out = Path(out)
        self.backend = backend
        self.n_jobs = n_jobs
        self.scheduler = scheduler
        self.show_progress = show_progress
        self.progress = progress  # auto | bar | lines | none (wins over show_progress)
        self.wait_for_workers = wait_for_workers

    # -- the config ----------------------------------------------------------------

    @classmethod
    def default_config_text(cls) -> str | None:
        """The packaged ``configs/<name>.toml``; None when the study ships none (then the
        dataclass's defaults are the defaults)."""
        path = resources.files(__package__).joinpath(f"configs/{cls.name}.toml")
        return path.read_text() if path.is_file() else None

    @classmethod
    def load_config(cls, path: str | Path | None = None) -> Any:
        """The default config, or the ``[<name>]`` table of a TOML file, validated."""
        from ..core.spec import load_toml

        if path is None:
            text = cls.default_config_text()
            data = tomllib.loads(text) if text is not None else {cls.name: {}}
            source = f"configs/{cls.name}.toml"
        else:
            data, source = load_toml(path), str(path)
        table = data.get(cls.name)
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: no [{cls.name}] table")
        unknown = sorted(set(table) - cls.table_keys())
        if unknown:
            raise ConfigError(f"{source}: unknown key(s) in [{cls.name}]: {', '.join(unknown)}")
        return cls.check_config(cls.config_from_table(table, source), source)

    @classmethod
    def table_keys(cls) -> set[str]:
        """The keys a TOML table may hold: the config's fields, except those marked
        ``metadata={"toml": False}``."""
        return {f.name for f in dataclasses.fields(cls.config_class)
                if f.metadata.get("toml", True)}

    @classmethod
    def config_from_table(cls, table: dict[str, Any], source: str) -> Any:
        """The config from a TOML table whose keys are known (lists are copied)."""
        return cls.config_class(**{key: list(value) if isinstance(value, list) else value
                                   for key, value in table.items()})

    @classmethod
    def check_config(cls, config: Any, source: str = "config") -> Any:
        """Check every field against its type hint and bounds (the schema), then the
        study's own rules (:meth:`validate_config`); return the config."""
        if not isinstance(config, cls.config_class):
            raise ConfigError(f"{source}: expected a {cls.config_class.__name__}, got "
                              f"{type(config).__name__}")
        hints = typing.get_type_hints(cls.config_class)
        for f in dataclasses.fields(cls.config_class):
            if not f.metadata.get("toml", True):
                continue
            value = check_type(getattr(config, f.name), hints[f.name], f"{source}: {f.name}")
            low, high = f.metadata.get("low"), f.metadata.get("high")
            if low is not None or high is not None:
                check_int(value, f"{source}: {f.name}", -(2**63) if low is None else low,
                          2**63 - 1 if high is None else high)
            elif hints[f.name] is float and not math.isfinite(value):
                raise ConfigError(f"{source}: {f.name} must be a finite number, got {value}")
        return cls.validate_config(config, source)

    @classmethod
    def validate_config(cls, config: Any, source: str = "config") -> Any:
        """Required: check what the field types and bounds do not (``source`` names
        where the config came from in errors); return the config."""
        raise NotImplementedError

    @classmethod
    def flags(cls) -> list[Flag]:
        """The command-line flags of the config's :func:`option` fields."""
        hints = typing.get_type_hints(cls.config_class)
        found = {}
        for f in dataclasses.fields(cls.config_class):
            if f.metadata.get("flag"):
                hint = hints[f.name]
                kind = list if typing.get_origin(hint) is list else hint
                found[f.name] = Flag(f.name, kind, f.metadata.get("help"),
                                     f.metadata.get("low"), f.metadata.get("high"))
        order = [name for name in cls.flag_order if name in found]
        return [found[name] for name in order + [n for n in found if n not in order]]

    def save_config(self, path: Path) -> None:
        """The resolved config as TOML (pass it back with ``--config`` to rerun)."""
        from ..core.spec import dump_toml

        keys = self.table_keys()
        data = {key: value for key, value in asdict(self.config).items() if key in keys}
        atomic_write_text(path, "# resolved config of this study\n" + dump_toml(self.name, data))

    # -- the template --------------------------------------------------------------

    def run(self) -> dict[str, Any]:
        """Run (or resume) the study and write its outputs.

        Everything that can be checked is checked before anything is written: the
        config, the data (:meth:`prepare`), the memory the jobs need
        (:meth:`memory_needed`), the results folder, the backend (a Dask cluster is
        connected to first). A run that fails before any job finished leaves nothing
        behind. After Ctrl-C/SIGTERM, a lost Dask scheduler or a failed job, the outputs
        cover what finished, then the interrupt or the error is raised again; an
        interrupt that arrives while the outputs are written waits until they are.
        """
        self.config = self.check_config(self.config, "config")
        self.prepare()
        jobs = self.jobs = self.build_jobs()  # kept: what the run wrote (e.g. to mirror it)
        self._say_design()
        self._check_memory(jobs)
        check_output_dir(self.out)
        with Backend(self.backend, self.n_jobs, self.scheduler,
                     self.wait_for_workers) as backend:
            created = _make_folder(self.out)
            with _locked(self.out, created):
                run = self._run_jobs(jobs, backend, created)
                with deferred_interrupts(), self._records_in_use():
                    records = self.load_records(jobs)
                    summary = self.summarize(records)
                    meta = self.meta(run)
                    self.write_outputs(records, summary, meta)
        if run.interrupted:
            raise KeyboardInterrupt
        if run.error is not None:
            raise type(run.error)(f"{run.error}; {run.finished} of {run.jobs} jobs finished, "
                                  f"reported in {self.out / 'report.md'}")
        return {"summary": summary, "meta": meta}

    def _run_jobs(self, jobs: list[Job], backend: Backend, created: list[Path]) -> StudyRun:
        """Save the config and run the jobs (in the locked results folder). A run that
        fails before any job finished removes what it made, and raises."""
        config_path = self.out / "config.toml"
        if not config_path.exists():
            created.append(config_path)
        try:
            self.check_engine(jobs)
            self.save_config(config_path)
            run = run_study(jobs, self.out, backend, None, None, self.show_progress,
                            self.name, self.progress)
        except BaseException:
            _remove_if_unused(created, jobs, self.out)
            raise
        if run.error is not None and not _any_record(jobs):
            _remove_if_unused(created, jobs, self.out)
            raise run.error
        return run

    def check_engine(self, jobs: list[Job]) -> None:
        """With ``engine = "compiled"``: every job not done yet is set up in this process
        up to the point its training would start, and refused there if the compiled
        engine cannot run it (see :mod:`handprop.training.preflight`); nothing trains.
        A job that never trains (no ``fit``) simply runs here."""
        from ..training.preflight import EngineChecked, engine_check_only

        if getattr(self.config, "engine", None) != "compiled":
            return
        with engine_check_only():
            for job in jobs:
                if job.is_done():
                    continue
                module, _, function = job.target.partition(":")
                try:
                    getattr(importlib.import_module(module), function)(dict(job.spec))
                except EngineChecked:
                    continue
                except HandpropError as exc:
                    raise type(exc)(f"{self.name}: job {job.id}: {exc}") from None

    @contextlib.contextmanager
    def _records_in_use(self) -> Iterator[None]:
        """Around the summary, report and figures: records are checked as they are read
        (``records.py``), and a value in them the summary or a figure cannot use is one
        line too, never a traceback."""
        try:
            yield
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            detail = f"{type(exc).__name__}: {exc}"[:200]
            raise RecordError(f"the run records in {self.out} cannot be summarized ({detail});"
                              " was one edited by hand? Delete it to run its job again"
                              ) from None

    def design_check(self) -> list[str]:
        """Lines saying, before any training, what the study's claims can decide with its
        seeds (printed to stderr unless progress is off). Default: nothing."""
        return []

    def _say_design(self) -> None:
        """Print :meth:`design_check` where progress shows: a terminal, or progress lines
        asked for (a log); never with ``--quiet``, nor into a captured stream by default."""
        shown = self.progress in ("bar", "lines") or (
            self.progress in (None, "auto") and self.show_progress is not False
            and sys.stderr.isatty())
        if not shown:
            return
        lines = self.design_check()
        if lines:
            print("\n".join(f"{self.name}: design check: {line}" if i == 0 else
                            f"{self.name}:   {line}" for i, line in enumerate(lines)),
                  file=sys.stderr, flush=True)

    def memory_needed(self, jobs: list[Job]) -> list[tuple[str, int]]:
        """(what, bytes) of memory the jobs need at once, checked against the budget of
        :mod:`handprop.core.limits` before anything runs. Default: nothing to check."""
        return []

    def _check_memory(self, jobs: list[Job]) -> None:
        """The jobs' memory (:meth:`memory_needed`) plus what the processes that run them
        cost (this one, and the local workers actually started), against the budget;
        when fewer workers would fit, the refusal says how many."""
        workers = local_workers(self.backend, self.n_jobs, len(jobs))
        at_once = self.concurrent_jobs(jobs)
        budget, _ = memory_budget()
        for what, needed in self.memory_needed(jobs):
            hint = ""
            if workers > 1:
                per_job = needed / at_once
                fits = [k for k in range(1, workers)
                        if processes_bytes(k if k > 1 else 0) + per_job * k <= budget]
                hint = f"; --jobs {max(fits)} would fit" if fits else ""
            where = f", in {workers} worker processes" if workers else ""
            check_memory(processes_bytes(workers) + needed, what + where, hint)

    def concurrent_jobs(self, jobs: list[Job]) -> int:
        """How many of ``jobs`` run at once in this process's machine."""
        if self.backend != "loky":
            return 1  # this process, or one job per Dask worker (on its own machine)
        return max(1, min(len(jobs), self.n_jobs or os.cpu_count() or 1))

    def prepare(self) -> None:
        """Checks that must fail before anything is written (e.g. that the data loads)."""

    def build_jobs(self) -> list[Job]:
        """Required: the study's jobs (their targets are ``"module:function"``)."""
        raise NotImplementedError

    def load_records(self, jobs: list[Job]) -> Any:
        """The records written with the current settings; by default by job id."""
        return collect(jobs)

    def summarize(self, records: Any) -> dict[str, Any]:
        """Required: the numbers of ``summary.json``."""
        raise NotImplementedError

    def meta(self, run: StudyRun) -> dict[str, Any]:
        """How the study ran, for ``summary.json`` and the report."""
        stopped_by = (str(run.error) if run.error is not None
                      else "interrupt" if run.interrupted else None)
        return {"seconds": run.seconds, "jobs": run.jobs, "skipped_jobs": run.skipped,
                "finished_jobs": run.finished,
                "interrupted": run.interrupted or run.error is not None,
                "stopped_by": stopped_by,
                "backend": self.backend, **self.extra_meta(), "config": asdict(self.config)}

    def extra_meta(self) -> dict[str, Any]:
        """Study-specific entries of ``meta`` (before ``config``)."""
        return {}

    # -- the outputs ---------------------------------------------------------------

    def write_outputs(self, records: Any, summary: dict[str, Any],
                      meta: dict[str, Any]) -> None:
        """summary.json, figures, report.md and summary.txt; the summary is printed."""
        findings = self.findings(records, summary)
        figures = self.write_figures(records, summary)
        write_json(self.out / "summary.json",
                   {self.summary_key: summary, self.findings_key: findings, "meta": meta})
        atomic_write_text(self.out / "report.md", self.report(summary, findings, meta, figures))
        text = self.terminal_summary(summary, findings, meta)
        atomic_write_text(self.out / "summary.txt", text + "\n")
        print(text)

    def findings(self, records: Any, summary: dict[str, Any]) -> dict[str, Any]:
        """What the data say about the study's questions (claims, the literature)."""
        return {}

    def write_figures(self, records: Any, summary: dict[str, Any]) -> list[Path]:
        """PNG figures in ``self.out``; the paths written (linked from the report)."""
        return []

    def report(self, summary: dict[str, Any], findings: dict[str, Any],
               meta: dict[str, Any], figures: list[Path]) -> str:
        """Required: the Markdown of ``report.md``."""
        raise NotImplementedError

    def terminal_summary(self, summary: dict[str, Any], findings: dict[str, Any],
                         meta: dict[str, Any]) -> str:
        """Required: the text printed at the end and kept in ``summary.txt``."""
        raise NotImplementedError


# -- leaving no trace of a run that did nothing ----------------------------------------

def _make_folder(out: Path) -> list[Path]:
    """Create ``out`` (and its parents); the folders created, outermost first."""
    missing = [p for p in [out, *out.parents] if not p.exists()][::-1]
    out.mkdir(parents=True, exist_ok=True)
    return missing


def _any_record(jobs: list[Job]) -> bool:
    return any(path.exists() for job in jobs for path in job.outputs)


def _remove_if_unused(created: list[Path], jobs: list[Job], out: Path) -> None:
    """After a run in which no job wrote anything: remove the files and folders it made
    (the config it saved, its progress files, empty folders)."""
    for path in created:
        if path.is_file():
            path.unlink(missing_ok=True)
    remove_progress(out, jobs)
    for folder in sorted((p for p in created if p.is_dir()), key=lambda p: -len(p.parts)):
        try:
            for inner in sorted(folder.rglob("*"), key=lambda p: -len(p.parts)):
                if inner.is_dir():
                    inner.rmdir()  # only empty folders (a record would stop it)
            folder.rmdir()
        except OSError:
            pass


@contextlib.contextmanager
def _locked(out: Path, created: list[Path]) -> Iterator[None]:
    """Hold the results folder (see :func:`~handprop.core.io.folder_lock`); after a
    failure, the folders this run made are removed if they are empty once it lets go
    (the folder another run holds never is)."""
    try:
        with folder_lock(out):
            yield
    except BaseException:
        _remove_empty(created)
        raise


def _remove_empty(created: list[Path]) -> None:
    """The folders made for a run that did not start, if still empty."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()
