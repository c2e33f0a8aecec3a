"""``handprop bench``: speed, and PyTorch's when it is installed."""

from __future__ import annotations

import argparse

from .common import command, output_file, write_results


def _setup_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", type=output_file)
    p.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    p.add_argument("--engine", choices=["auto", "numpy", "compiled"], default="auto",
                   help="auto (default): measure both engines | numpy | compiled")


@command("bench", "measure speed (and PyTorch's, when installed)", _setup_bench, order=30)
def cmd_bench(args: argparse.Namespace) -> int:
    from ..integrations.benchmark import format_bench, run_bench

    engines = ("numpy", "compiled") if args.engine == "auto" else (args.engine,)
    results = run_bench(quick=args.quick, with_torch=not args.no_torch, engines=engines)
    print(format_bench(results))
    write_results(args.json, results)
    return 0
