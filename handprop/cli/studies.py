"""One ``handprop`` command per registered study (``reproduce``, ``compare``, ...).

Nothing here names a study: each command's flags come from the study's config fields
(see :func:`handprop.studies.study.option`), so a new study needs no edit here.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigError
from ..core.limits import MAX_JOBS
from .common import (
    Command,
    add_progress_args,
    add_track_arg,
    check_track,
    command_source,
    int_in,
    output_dir,
    progress_mode,
)

if TYPE_CHECKING:
    from ..studies.study import Flag, Study


def _config_help(study: type[Study]) -> str:
    if study.default_config_text() is None:
        return f"TOML file with a [{study.name}] table (default: the built-in defaults)"
    return (f"TOML file with a [{study.name}] table "
            f"(default: handprop/studies/configs/{study.name}.toml)")


def _add_backend_args(p: argparse.ArgumentParser) -> None:
    """Options every study has: where its jobs run, and how progress shows."""
    from ..studies.runner import WAIT_FOR_WORKERS

    p.add_argument("--backend", default="loky", help="loky (local processes) | sequential | dask")
    p.add_argument("--scheduler", help="Dask scheduler address, with --backend dask")
    p.add_argument("--jobs", type=int_in(1, MAX_JOBS),
                   help="parallel processes, with --backend loky (default: all cores)")
    p.add_argument("--wait-workers", type=float, metavar="SECONDS",
                   help="with --backend dask: warn when no worker has been connected for this "
                        f"long (default {WAIT_FOR_WORKERS:g})")
    add_progress_args(p)


def _flag_type(flag: Flag) -> Any:
    """A flag's argparse type: bounded integers are checked while parsing (the error
    names the flag and the limit); a list is given comma-separated and split when
    applied (see _override)."""
    if flag.kind is int and (flag.low is not None or flag.high is not None):
        return int_in(-(2**63) if flag.low is None else flag.low,
                      2**63 - 1 if flag.high is None else flag.high)
    return flag.kind if flag.kind in (int, float) else None


def setup_study(study: type[Study], p: argparse.ArgumentParser) -> None:
    """``--config``, ``--out``, ``--quick``, one flag per config option, the backend."""
    p.add_argument("--config", type=Path, help=_config_help(study))
    p.add_argument("--out", type=output_dir, default=Path(study.default_out),
                   help="results folder")
    p.add_argument("--quick", action="store_true", help=study.quick_help)
    for flag in study.flags():
        p.add_argument(flag.name, type=_flag_type(flag), help=flag.help)
    _add_backend_args(p)
    add_track_arg(p)


def _override(config: Any, study: type[Study], args: argparse.Namespace) -> None:
    """Flags given on the command line replace the config's values."""
    for flag in study.flags():
        value = getattr(args, flag.field)
        if flag.kind is list:
            if value:  # an empty --rules "" keeps the config's list
                setattr(config, flag.field, [v.strip() for v in value.split(",") if v.strip()])
        elif value is not None:
            setattr(config, flag.field, value)


def _check_backend(args: argparse.Namespace) -> None:
    """The backend flags, each named in its error; flags that would be ignored are
    refused."""
    from ..studies.runner import BACKENDS, check_scheduler_address

    if args.backend not in BACKENDS:
        raise ConfigError(f"unknown backend {args.backend!r}; choose from {', '.join(BACKENDS)}")
    if args.backend == "dask":
        if not args.scheduler:
            raise ConfigError("--backend dask needs --scheduler ADDRESS "
                              "(e.g. tcp://127.0.0.1:8786)")
        try:
            check_scheduler_address(args.scheduler)
        except ConfigError as exc:
            raise ConfigError(f"--scheduler {exc}") from None
        if args.jobs is not None:
            raise ConfigError("--jobs does not apply to --backend dask (the cluster's workers "
                              "run the jobs)")
    else:
        for name, value in (("--scheduler", args.scheduler),
                            ("--wait-workers", args.wait_workers)):
            if value is not None:
                raise ConfigError(f"{name} only applies to --backend dask")
        if args.backend == "sequential" and args.jobs is not None:
            raise ConfigError("--jobs does not apply to --backend sequential (one process)")
    if args.wait_workers is not None and not (0 < args.wait_workers < float("inf")):
        raise ConfigError(f"--wait-workers must be a number of seconds > 0, got "
                          f"{args.wait_workers}")


def run_study(study: type[Study], args: argparse.Namespace) -> int:
    """Resolve the config (file, ``--quick``, flags), check it and the backend, run the
    study, say where the results are."""
    from ..studies.runner import WAIT_FOR_WORKERS

    _check_backend(args)
    check_track(args)
    config = study.load_config(args.config)
    if args.quick:
        for key, value in study.quick.items():
            setattr(config, key, value)
    _override(config, study, args)
    study.check_config(config, "command line")
    running = study(config, args.out, args.backend, args.jobs, args.scheduler,
                    progress=progress_mode(args),
                    wait_for_workers=args.wait_workers or WAIT_FOR_WORKERS)
    running.run()
    print(f"wrote {args.out / 'report.md'}, {args.out / 'summary.json'} and figures")
    if args.track:
        _mirror(running, args.track)
    return 0


def _mirror(running: Study, folder: Path) -> None:
    """After the study's own files are written: mirror them to the MLflow store."""
    from ..integrations.tracking import mirror_study, tracking_uri, warn_failure
    from ..studies.records import read_record

    try:
        records = {path: read_record(path) for job in running.jobs for path in job.outputs
                   if path.is_file()}
        added = mirror_study(folder, running.name, running.out, asdict(running.config),
                             records)
        print(f"tracked in {tracking_uri(folder)} ({added} new run{'s' if added != 1 else ''})")
    except Exception as exc:  # the results are written: a tracker must not undo that
        warn_failure(exc, str(folder))


@command_source
def study_commands() -> list[Command]:
    from ..studies.study import registered_studies

    return [Command(study.name, study.help, partial(run_study, study),
                    partial(setup_study, study), study.order, module=study.__module__)
            for study in registered_studies().values()]
