"""``handprop bench``: speed, and PyTorch's when it is installed."""

from __future__ import annotations

import argparse
from pathlib import Path

from .common import command, int_in, output_file, write_results


def source_tree(text: str) -> str:
    """An argparse type: a folder holding a ``handprop`` package (e.g. a git worktree)."""
    path = Path(text).expanduser().resolve()
    if not (path / "handprop" / "__init__.py").is_file():
        raise argparse.ArgumentTypeError(f"{text} holds no handprop package "
                                         "(expected PATH/handprop/__init__.py)")
    return str(path)


def _setup_bench(p: argparse.ArgumentParser) -> None:
    from ..training.epoch import ENGINES

    p.add_argument("--json", type=output_file)
    p.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--engine", choices=["auto", "numpy", "compiled"], default="auto",
                   help="in-process rows: auto (default) measures both engines | numpy | "
                        "compiled")
    p.add_argument("--fresh-engine", action="append", choices=ENGINES,
                   help="an engine timed in the fresh-process rows (repeatable; default "
                        "numpy)")
    p.add_argument("--baseline", action="append", type=source_tree, default=[],
                   metavar="PATH", help="also time the NumPy engine of the handprop in PATH "
                                        "(e.g. a git worktree of an earlier commit) in the "
                                        "fresh-process rows (repeatable)")
    p.add_argument("--repeats", type=int_in(1, 50), default=3,
                   help="in-process repeats and fresh-process blocks (default 3)")


@command("bench", "measure speed (and PyTorch's, when installed)", _setup_bench, order=30)
def cmd_bench(args: argparse.Namespace) -> int:
    from ..integrations.benchmark import FRESH_ENGINES, format_bench, run_bench

    engines = ("numpy", "compiled") if args.engine == "auto" else (args.engine,)
    fresh_engines = tuple(dict.fromkeys(args.fresh_engine or FRESH_ENGINES))
    results = run_bench(quick=args.quick, with_torch=not args.no_torch, engines=engines,
                        fresh_engines=fresh_engines, baselines=args.baseline,
                        repeats=args.repeats)
    print(format_bench(results))
    write_results(args.json, results)
    return 0
