"""One ``handprop`` command per registered study (``reproduce``, ``compare``, ...).

Nothing here names a study: each command's flags come from the study's config fields
(see :func:`handprop.studies.study.option`), so a new study needs no edit here.
"""

from __future__ import annotations

import argparse
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..core.errors import ConfigError
from .common import Command, command_source

if TYPE_CHECKING:
    from ..studies.study import Study


def _config_help(study: type[Study]) -> str:
    if study.default_config_text() is None:
        return f"TOML file with a [{study.name}] table (default: the built-in defaults)"
    return (f"TOML file with a [{study.name}] table "
            f"(default: handprop/studies/configs/{study.name}.toml)")


def _add_backend_args(p: argparse.ArgumentParser) -> None:
    """Options every study has: where its jobs run."""
    p.add_argument("--backend", default="loky", help="loky (local processes) | sequential | dask")
    p.add_argument("--scheduler", help="Dask scheduler address, with --backend dask")
    p.add_argument("--jobs", type=int, help="parallel processes (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def setup_study(study: type[Study], p: argparse.ArgumentParser) -> None:
    """``--config``, ``--out``, ``--quick``, one flag per config option, the backend."""
    p.add_argument("--config", type=Path, help=_config_help(study))
    p.add_argument("--out", type=Path, default=Path(study.default_out), help="results folder")
    p.add_argument("--quick", action="store_true", help=study.quick_help)
    for flag in study.flags():
        # A list is given comma-separated and split when applied (see _override).
        kind = flag.kind if flag.kind in (int, float) else None
        p.add_argument(flag.name, type=kind, help=flag.help)
    _add_backend_args(p)


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
    from ..studies.runner import BACKENDS

    if args.backend not in BACKENDS:
        raise ConfigError(f"unknown backend {args.backend!r}; choose from {', '.join(BACKENDS)}")
    if args.backend == "dask" and not args.scheduler:
        raise ConfigError("--backend dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")


def run_study(study: type[Study], args: argparse.Namespace) -> int:
    """Resolve the config (file, ``--quick``, flags), check it and the backend, run the
    study, say where the results are."""
    config = study.load_config(args.config)
    if args.quick:
        for key, value in study.quick.items():
            setattr(config, key, value)
    _override(config, study, args)
    study.validate_config(config, "command line")
    _check_backend(args)
    study(config, args.out, args.backend, args.jobs, args.scheduler,
          show_progress=False if args.quiet else None).run()
    print(f"wrote {args.out / 'report.md'}, {args.out / 'summary.json'} and figures")
    return 0


@command_source
def study_commands() -> list[Command]:
    from ..studies.study import registered_studies

    return [Command(study.name, study.help, partial(run_study, study),
                    partial(setup_study, study), study.order, module=study.__module__)
            for study in registered_studies().values()]
