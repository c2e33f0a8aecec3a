"""``handprop gradcheck``: finite differences against every hand-written gradient."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from ..core.limits import MAX_CHECK_BATCH, MAX_CHECK_ENTRIES, MAX_SEED
from ..core.spec import build_net
from .common import EXIT_FAILED, command, int_in, output_file, versions, write_results

THRESHOLD = 1e-6  # largest relative error accepted (measured: about 1e-9)


def _setup_gradcheck(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", nargs="+", default=["seed", "lenet"],
                   help="networks to check (default: seed lenet)")
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=0)
    p.add_argument("--init", default="lecun",
                   help="initialisation of the checked point (default lecun: unsaturated)")
    p.add_argument("--batch", type=int_in(1, MAX_CHECK_BATCH), default=2)
    p.add_argument("--entries", type=int_in(1, MAX_CHECK_ENTRIES),
                   help="random entries per parameter (default: all for small nets, 64 for "
                        "large ones)")
    p.add_argument("--json", type=output_file)


def _check_one(net: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Check one network, print its table; its results for ``--json``."""
    from ..core.gradcheck import check_network

    rng = np.random.default_rng(args.seed + 1)
    x = rng.standard_normal((args.batch, *net.input_shape))
    # Every entry of a small net; a random sample of a large one (each costs two passes).
    limit = None if net.num_params <= 5000 and not args.entries else (args.entries or 64)
    checks = check_network(net, x, rng, max_entries=limit)
    print(f"{net.name}: central differences (h=1e-6, float64) vs hand-written backward, "
          f"random upstream gradient, batch {args.batch}")
    print(f"  {'parameter':<16} {'shape':<18} {'checked':>8} {'rel error':>10}")
    for check in checks:
        shape = str(net.param_shapes[check.name])
        flag = "ok" if check.rel_error <= THRESHOLD else "FAIL"
        print(f"  {check.name:<16} {shape:<18} {check.checked:>5}/{check.size:<5}"
              f"{check.rel_error:>10.2e}  {flag}")
    worst = max(c.rel_error for c in checks)
    print(f"  max relative error {worst:.2e} (threshold {THRESHOLD:g})")
    return {
        "max_rel_error": worst,
        "per_parameter": {c.name: {"rel_error": c.rel_error, "checked": c.checked,
                                   "size": c.size} for c in checks},
    }


@command("gradcheck", "prove the hand-written gradients with finite differences",
         _setup_gradcheck, order=20)
def cmd_gradcheck(args: argparse.Namespace) -> int:
    nets = {}
    for name in args.net:  # every network built first: a bad name fails before any check
        nets[name] = build_net(name, None)
        nets[name].init(args.seed, scheme=args.init, dtype="float64")
    results_by_net = {name: _check_one(net, args) for name, net in nets.items()}
    worst = max([0.0, *(r["max_rel_error"] for r in results_by_net.values())])
    # One net: parameters by name; several: "net:parameter".
    per_parameter = {f"{n}:{p}" if len(args.net) > 1 else p: v
                     for n, r in results_by_net.items() for p, v in r["per_parameter"].items()}
    write_results(args.json, {"max_rel_error": worst, "threshold": THRESHOLD,
                              "per_parameter": per_parameter, "nets": results_by_net,
                              "seed": args.seed, "init": args.init, "versions": versions()})
    return 0 if worst <= THRESHOLD else EXIT_FAILED
