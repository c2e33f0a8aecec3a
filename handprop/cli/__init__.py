"""The ``handprop`` command.

Every user mistake (bad option, shape, value or file) ends in one line on standard
error, ``handprop: error: ...``, and exit status 2; no traceback. Results are written
atomically, so a failed or interrupted command leaves no half-written file.

Exit status: 0 done, 1 a check failed (gradcheck), 2 bad input, 3 training diverged
(results up to the divergence are still written), 130 interrupted.
"""

from __future__ import annotations

import argparse
import platform
import signal
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from .. import __version__
from ..core.errors import ConfigError, HandpropError, ShapeError
from ..core.io import write_json
from ..core.presets import NET_DEFAULTS, seed_net
from ..core.spec import build_net

EXIT_FAILED, EXIT_USAGE, EXIT_DIVERGED, EXIT_INTERRUPTED = 1, 2, 3, 130


class _Parser(argparse.ArgumentParser):
    """argparse, but its errors are one line and exit 2 like every other user error."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"handprop: error: {self.prog.removeprefix('handprop ')}: {message}\n")
        raise SystemExit(EXIT_USAGE)


def versions() -> dict[str, str]:
    return {"handprop": __version__, "numpy": np.__version__, "python": platform.python_version()}


# -- shared pieces ---------------------------------------------------------------------

def _defaults(net_name: str) -> dict[str, Any]:
    return NET_DEFAULTS.get(net_name, NET_DEFAULTS["small"])


def _check_compatible(net, data) -> None:
    if net.input_shape != data.input_shape:
        raise ShapeError(
            f"network {net.name!r} takes inputs of shape {net.input_shape} but the data "
            f"{data.name!r} has images of shape {data.input_shape}"
        )


# -- train -----------------------------------------------------------------------------

def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", help="seed | lenet | small | PATH.toml (default seed)")
    p.add_argument("--fc", type=int, nargs=2, metavar=("W3", "W4"),
                   help="seed net: widths of its two hidden dense layers (default 28 36)")
    p.add_argument("--data", help="digits | digits10 | tiny | idx:PATH (default: the net's)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int, help="1 = online SGD (the article)")
    p.add_argument("--optimizer", help="sgd | momentum | nesterov | adam")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--momentum", type=float, help="momentum (the article's alpha)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--schedule", default="constant",
                   help="constant | step | cosine | article (the article's defect)")
    p.add_argument("--shuffle", action="store_true", help="reshuffle the data every epoch")
    p.add_argument("--scale", action="store_true", help="scale pixels to [0, 1]")
    p.add_argument("--init", help="normal | he | lecun | glorot | torch (default: the net's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", default="float64", choices=["float32", "float64"])
    p.add_argument("--rule", default="exact", help="learning rule (see `handprop rules`)")
    p.add_argument("--json", type=Path, help="write the results here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _setup_train(p: argparse.ArgumentParser) -> None:
    _add_train_args(p)
    p.add_argument("--checkpoint", type=Path,
                   help="save a checkpoint (.npz) here after every epoch")
    p.add_argument("--resume", type=Path,
                   help="continue from this checkpoint (its settings; --epochs may extend)")


@dataclass
class TrainRun:
    """Everything a ``train`` run is made of, from flags or from a checkpoint."""

    net: Any
    data: Any
    config: Any
    rule: Any
    recipe: dict[str, Any]  # how to rebuild net, data and rule: saved in checkpoints


def _prepare_run(args: argparse.Namespace) -> TrainRun:
    from ..rules import make_rule
    from ..training.data import load_data
    from ..training.loop import TrainConfig

    args.net = args.net or "seed"
    defaults = _defaults(args.net)
    data_spec = args.data or defaults["data"]
    if data_spec is None:
        raise ConfigError(f"--net {args.net} needs --data (e.g. --data idx:PATH for 28x28 images)")
    data = load_data(data_spec, seed=args.seed, scale=args.scale or None)
    net = build_net(args.net, args.fc, data.input_shape, data.num_classes)
    _check_compatible(net, data)
    config = TrainConfig(
        epochs=args.epochs if args.epochs is not None else defaults["epochs"],
        batch_size=args.batch_size if args.batch_size is not None else defaults["batch_size"],
        optimizer=args.optimizer or defaults["optimizer"],
        lr=args.lr if args.lr is not None else defaults["lr"],
        momentum=args.momentum if args.momentum is not None else defaults["momentum"],
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        shuffle=args.shuffle,
        seed=args.seed,
        dtype=args.dtype,
        init=args.init,
    ).validate()
    net.init(config.seed, scheme=config.init, dtype=config.dtype)
    rule = make_rule(args.rule, net, config.seed)
    recipe = {"net": args.net, "fc": list(args.fc) if args.fc else None, "data": data_spec,
              "scale": bool(args.scale), "rule": args.rule}
    return TrainRun(net, data, config, rule, recipe)


def _restore_run(path: Path, epochs: int | None, to_train: bool = True,
                 net_name: str | None = None, fc: Sequence[int] | None = None):
    """A run rebuilt from a checkpoint, and the training state to continue from.

    ``net_name``/``fc``: the network the user asked for; by default the checkpoint's own.
    A checkpoint for another architecture is refused.
    """
    from ..rules import make_rule
    from ..training.checkpoint import CheckpointError, check_architecture, load_checkpoint
    from ..training.data import load_data
    from ..training.loop import TrainConfig, TrainState

    checkpoint = load_checkpoint(path)
    meta = checkpoint.meta
    try:
        recipe, saved = meta["recipe"], dict(meta["config"])
        if epochs is not None and epochs != saved["epochs"]:
            if saved.get("schedule") in ("step", "cosine"):
                raise ConfigError(f"{path}: the {saved['schedule']} schedule is laid out over "
                                  f"{saved['epochs']} epochs; it cannot be extended to {epochs}")
            saved["epochs"] = epochs
        config = TrainConfig(**saved).validate()
        data = load_data(recipe["data"], seed=config.seed, scale=recipe["scale"] or None)
        net = build_net(net_name or recipe["net"], fc if fc is not None else recipe["fc"],
                        data.input_shape, data.num_classes)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a training checkpoint ({exc})") from None
    check_architecture(checkpoint, net, str(path))
    net.init(config.seed, scheme=config.init, dtype=config.dtype)
    net.set_params(net.unflatten(checkpoint.params))
    rule = make_rule(recipe["rule"], net, config.seed)
    rule.load_state({**meta.get("rule_state", {}), **checkpoint.rule})
    state = TrainState.restore(meta["state"], {**meta.get("optimizer_state", {}),
                                               **checkpoint.optimizer}, config)
    if to_train and state.epoch >= config.epochs:
        raise ConfigError(f"{path} already holds {state.epoch} epochs; pass --epochs N with "
                          f"N > {state.epoch} to train further")
    return TrainRun(net, data, config, rule, recipe), state


def _save_checkpoint(path: Path, run: TrainRun, state) -> None:
    from ..training.checkpoint import save_checkpoint

    save_checkpoint(path, run.net, {"kind": "train", "recipe": run.recipe,
                                    "config": run.config.to_dict(), "state": state.to_meta()},
                    optimizer_state=state.optimizer.state(), rule_state=run.rule.state())


def _train(run: TrainRun, quiet: bool, checkpoint: Path | None = None, state=None):
    """Train with a progress bar; checkpoint after every epoch when asked."""
    from ..studies.progress import ProgressBar
    from ..training.loop import fit

    config = run.config
    bar = ProgressBar(config.epochs, f"train {run.net.name}", enabled=False if quiet else None)
    if state is not None:
        bar.update(state.epoch)

    def progress(epoch: int, total: int, cost: float) -> None:
        bar.update(epoch, f"cost {cost:.4g}")

    def on_epoch(epoch: int, history) -> None:
        if checkpoint is not None:
            _save_checkpoint(checkpoint, run, history.state)

    try:
        return fit(run.net, run.data.x_train, run.data.y_train, config, rule=run.rule,
                   progress=progress, on_epoch=on_epoch, state=state)
    finally:
        bar.close()


def cmd_train(args: argparse.Namespace) -> int:
    from ..training.loop import evaluate, prediction_table

    if args.resume is not None:
        run, state = _restore_run(args.resume, args.epochs, net_name=args.net, fc=args.fc)
        checkpoint = args.checkpoint or args.resume
    else:
        run, state, checkpoint = _prepare_run(args), None, args.checkpoint
    history = _train(run, args.quiet, checkpoint, state)
    net, data, config = run.net, run.data, run.config
    with np.errstate(all="ignore"):  # a diverged network predicts NaN quietly
        evaluation = evaluate(net, data.x_test, data.y_test)
    diverged = history.diverged[0]
    costs = history.cost_list()
    print(f"{net.name} net, {len(costs)} epochs, {history.steps} steps in "
          f"{history.seconds:.1f}s ({1e6 * history.seconds / max(history.steps, 1):.0f} us/step)")
    if costs:
        print(f"cost: first epoch {costs[0]:.4f}, last epoch {costs[-1]:.4f}")
    if diverged:
        print(f"training diverged at epoch {diverged['epoch']}, step {diverged['step']}: the cost "
              f"became NaN/inf; the history up to epoch {diverged['epoch'] - 1} is kept")
    print(f"test set ({data.name}, {len(data.y_test)} images):")
    print(prediction_table(evaluation, data.classes))
    if checkpoint is not None:
        print(f"checkpoint: {checkpoint}")
    if args.json:
        write_json(args.json, {
            "cost_history": costs,
            "test_accuracy": evaluation.accuracy if not diverged else None,
            "diverged": diverged,
            "config": {**config.to_dict(), **run.recipe, "rule": run.rule.describe()},
            "network": net.spec(),
            "data": {"name": data.name, "train": len(data.y_train), "test": len(data.y_test),
                     "classes": list(data.classes), **data.info},
            "predictions": {"truth": [data.classes[t] for t in evaluation.truth],
                            "raw": evaluation.raw.reshape(len(evaluation.truth), -1).tolist(),
                            "predicted": [data.classes[p] for p in evaluation.predicted]},
            "seconds": history.seconds,
            "steps": history.steps,
            "versions": versions(),
        })
        print(f"wrote {args.json}")
    return EXIT_DIVERGED if diverged else 0


# -- show ------------------------------------------------------------------------------

SHOW_WHAT = ("kernels", "maps", "misclassified", "cost", "all")


def _setup_show(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="+", choices=SHOW_WHAT, help="which pictures")
    _add_train_args(p)
    p.add_argument("--checkpoint", type=Path,
                   help="draw this checkpoint's network instead of training one")
    p.add_argument("--image", type=int, default=0, help="maps: index of the image")
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument("--limit", type=int, default=36, help="misclassified: at most this many")
    p.add_argument("--out", type=Path, default=Path("pictures"), help="folder for the PNGs")


def cmd_show(args: argparse.Namespace) -> int:
    from ..pictures import show

    if args.checkpoint is not None:
        run, state = _restore_run(args.checkpoint, None, to_train=False, net_name=args.net,
                                  fc=args.fc)
        cost = state.cost_history()
    else:
        run = _prepare_run(args)
        cost = _train(run, args.quiet).cost
    x = run.data.x_test if args.split == "test" else run.data.x_train
    y = run.data.y_test if args.split == "test" else run.data.y_train
    if not 0 <= args.image < len(x):
        raise ConfigError(f"--image {args.image} is out of range: the {args.split} set has "
                          f"{len(x)} images (0..{len(x) - 1})")
    if args.limit < 1:
        raise ConfigError(f"--limit must be >= 1, got {args.limit}")
    wanted = set(SHOW_WHAT[:-1]) if "all" in args.what else set(args.what)
    written = []
    if "kernels" in wanted:
        written.append(show.kernels(run.net, args.out / "kernels.png"))
    if "maps" in wanted:
        written.append(show.feature_maps(run.net, x[args.image],
                                         args.out / f"maps-{args.split}-{args.image}.png"))
    if "misclassified" in wanted:
        written.append(show.misclassified(run.net, x, y, run.data.classes,
                                          args.out / f"misclassified-{args.split}.png",
                                          limit=args.limit))
    if "cost" in wanted:
        written.append(show.cost_curve(cost, args.out / "cost.png"))
    for path in written:
        print(f"wrote {path}")
    return 0


# -- gradcheck -------------------------------------------------------------------------

def cmd_gradcheck(args: argparse.Namespace) -> int:
    from ..core.gradcheck import check_network

    threshold = 1e-6
    results_by_net = {}
    worst = 0.0
    for name in args.net:
        net = build_net(name, None)
        net.init(args.seed, scheme=args.init, dtype="float64")
        rng = np.random.default_rng(args.seed + 1)
        x = rng.standard_normal((args.batch, *net.input_shape))
        limit = None if net.num_params <= 5000 and not args.entries else (args.entries or 64)
        checks = check_network(net, x, rng, max_entries=limit)
        print(f"{net.name}: central differences (h=1e-6, float64) vs hand-written backward, "
              f"random upstream gradient, batch {args.batch}")
        print(f"  {'parameter':<16} {'shape':<18} {'checked':>8} {'rel error':>10}")
        for check in checks:
            shape = str(net.param_shapes[check.name])
            flag = "ok" if check.rel_error <= threshold else "FAIL"
            print(f"  {check.name:<16} {shape:<18} {check.checked:>5}/{check.size:<5}"
                  f"{check.rel_error:>10.2e}  {flag}")
        net_worst = max(c.rel_error for c in checks)
        worst = max(worst, net_worst)
        print(f"  max relative error {net_worst:.2e} (threshold {threshold:g})")
        results_by_net[name] = {
            "max_rel_error": net_worst,
            "per_parameter": {c.name: {"rel_error": c.rel_error, "checked": c.checked,
                                       "size": c.size} for c in checks},
        }
    if args.json:
        per_parameter = {f"{n}:{p}" if len(args.net) > 1 else p: v
                         for n, r in results_by_net.items() for p, v in r["per_parameter"].items()}
        write_json(args.json, {"max_rel_error": worst, "threshold": threshold,
                               "per_parameter": per_parameter, "nets": results_by_net,
                               "seed": args.seed, "init": args.init, "versions": versions()})
        print(f"wrote {args.json}")
    return 0 if worst <= threshold else EXIT_FAILED


# -- bench -----------------------------------------------------------------------------

def cmd_bench(args: argparse.Namespace) -> int:
    from ..integrations.benchmark import format_bench, run_bench

    results = run_bench(quick=args.quick, with_torch=not args.no_torch)
    print(format_bench(results))
    if args.json:
        write_json(args.json, results)
        print(f"wrote {args.json}")
    return 0


# -- reproduce -------------------------------------------------------------------------

def _setup_reproduce(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML file with a [reproduce] table "
                   "(default: handprop/configs/reproduce.toml)")
    p.add_argument("--out", type=Path, default=Path("results"), help="results folder")
    p.add_argument("--quick", action="store_true",
                   help="a smoke run: 5 epochs, 2 seeds, 2 folds")
    p.add_argument("--seeds", type=int, help="number of paired seeds")
    p.add_argument("--first-seed", type=int)
    p.add_argument("--epochs", type=int)
    p.add_argument("--rules", help="comma-separated rules")
    p.add_argument("--folds", type=int, help="k of the held-out k-fold CV (0: none)")
    p.add_argument("--probe", type=int, help="images in the alignment probe batch")
    _add_study_args(p)


def cmd_reproduce(args: argparse.Namespace) -> int:
    from ..studies.reproduce import ReproduceStudy

    config = ReproduceStudy.load_config(args.config)
    if args.quick:
        config.epochs, config.seeds, config.folds = 5, 2, 2
    _override(config, args, ("seeds", "first_seed", "epochs", "folds", "probe"))
    return _run_study(ReproduceStudy, config, args)


def _run_study(study: Any, config: Any, args: argparse.Namespace) -> int:
    """Check a study's resolved config and options, run it, say where the results are."""
    study.validate_config(config, "command line")
    _check_backend(args)
    study(config, args.out, args.backend, args.jobs, args.scheduler,
          show_progress=False if args.quiet else None).run()
    print(f"wrote {args.out / 'report.md'}, {args.out / 'summary.json'} and figures")
    return 0


def _add_study_args(p: argparse.ArgumentParser) -> None:
    """Options every study has: where its jobs run."""
    p.add_argument("--backend", default="loky", help="loky (local processes) | sequential | dask")
    p.add_argument("--scheduler", help="Dask scheduler address, with --backend dask")
    p.add_argument("--jobs", type=int, help="parallel processes (default: all cores)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def _override(config: Any, args: argparse.Namespace, keys: Sequence[str]) -> None:
    """Flags given on the command line replace the config's values."""
    for key in keys:
        value = getattr(args, key)
        if value is not None:
            setattr(config, key, value)
    if args.rules:
        config.rules = [r.strip() for r in args.rules.split(",") if r.strip()]


def _check_backend(args: argparse.Namespace) -> None:
    from ..studies.runner import BACKENDS

    if args.backend not in BACKENDS:
        raise ConfigError(f"unknown backend {args.backend!r}; choose from {', '.join(BACKENDS)}")
    if args.backend == "dask" and not args.scheduler:
        raise ConfigError("--backend dask needs --scheduler ADDRESS (e.g. tcp://127.0.0.1:8786)")
    if args.jobs is not None and args.jobs < 1:
        raise ConfigError(f"--jobs must be >= 1, got {args.jobs}")


# -- compare ---------------------------------------------------------------------------

def _setup_compare(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML file with a [compare] table "
                   "(default: handprop/configs/compare.toml)")
    p.add_argument("--out", type=Path, default=Path("results-compare"), help="results folder")
    p.add_argument("--quick", action="store_true", help="a smoke run: 2 epochs, 2 seeds")
    p.add_argument("--rules", help="comma-separated rules")
    p.add_argument("--seeds", type=int)
    p.add_argument("--first-seed", type=int)
    p.add_argument("--data", help="digits10 | idx:PATH (MNIST-format files; uses lenet)")
    p.add_argument("--net", help="small | lenet | PATH.toml")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer")
    p.add_argument("--lr", type=float)
    p.add_argument("--momentum", type=float)
    p.add_argument("--probe", type=int)
    _add_study_args(p)


def cmd_compare(args: argparse.Namespace) -> int:
    from ..studies.compare import CompareStudy

    config = CompareStudy.load_config(args.config)
    if args.quick:
        config.epochs, config.seeds, config.probe = 2, 2, 64
    _override(config, args, ("seeds", "first_seed", "data", "net", "epochs", "batch_size",
                              "optimizer", "lr", "momentum", "probe"))
    return _run_study(CompareStudy, config, args)


# -- demo ------------------------------------------------------------------------------

def _ascii(image: np.ndarray) -> list[str]:
    shades = " .:-=+*#%@"
    top = max(float(image.max()), 1e-12)
    return ["".join(shades[int(v / top * (len(shades) - 1))] * 2 for v in row) for row in image]


def cmd_demo(args: argparse.Namespace) -> int:
    from ..training.data import load_tiny
    from ..training.loop import TrainConfig, evaluate, fit, prediction_table

    data = load_tiny()
    net = seed_net().init(args.seed)
    config = TrainConfig(epochs=args.epochs, lr=0.09, momentum=0.0009, seed=args.seed)
    print("the article's interactive version: the seed net on four built-in images "
          "(0, 1, 1, 0), online SGD")

    def on_epoch(epoch: int, history) -> None:
        if (epoch + 1) % max(args.epochs // 10, 1) == 0 or epoch == 0:
            print(f"  epoch {epoch + 1:>4}  cost {history.cost[-1]:.6f}")

    history = fit(net, data.x_train, data.y_train, config, on_epoch=on_epoch)
    evaluation = evaluate(net, data.x_test, data.y_test)
    print(f"trained in {history.seconds:.2f}s")
    for image, truth, raw in zip(data.x_test[:, 0], data.y_test, evaluation.raw[:, 0],
                                 strict=True):
        rows = _ascii(image)
        rows[3] += f"   truth {truth}   prediction {raw:.4f} -> {int(raw >= 0.5)}"
        print("\n".join("  " + row for row in rows) + "\n")
    print(prediction_table(evaluation, data.classes))
    return 0


def _setup_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, default=500)
    p.add_argument("--seed", type=int, default=0)


# -- rules -----------------------------------------------------------------------------

def cmd_rules(args: argparse.Namespace) -> int:
    from ..rules import RULES

    for name, (description, _) in RULES.items():
        print(f"{name:<20} {description}")
    print("\nper layer: --rule 'conv2=seed-broken,fc3=fa,*=exact'")
    return 0


# -- main ------------------------------------------------------------------------------

def _setup_gradcheck(p: argparse.ArgumentParser) -> None:
    p.add_argument("--net", nargs="+", default=["seed", "lenet"],
                   help="networks to check (default: seed lenet)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--init", default="lecun",
                   help="initialisation of the checked point (default lecun: unsaturated)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--entries", type=int, help="random entries per parameter (default: all "
                   "for small nets, 64 for large ones)")
    p.add_argument("--json", type=Path)


def _setup_bench(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", type=Path)
    p.add_argument("--quick", action="store_true", help="a few steps only (smoke test)")
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")


Setup = Callable[[argparse.ArgumentParser], None]
Run = Callable[[argparse.Namespace], int]

# name -> (help, add its arguments, run it)
COMMANDS: dict[str, tuple[str, Setup, Run]] = {
    "train": ("train a network and print the test table", _setup_train, cmd_train),
    "gradcheck": ("prove the hand-written gradients with finite differences",
                  _setup_gradcheck, cmd_gradcheck),
    "bench": ("measure speed (and PyTorch's, when installed)", _setup_bench, cmd_bench),
    "reproduce": ("the article's experiments, many seeds, statistics, plots, report",
                  _setup_reproduce, cmd_reproduce),
    "compare": ("learning rules side by side with exact back-propagation",
                _setup_compare, cmd_compare),
    "demo": ("the article's interactive version: four built-in images, about a second",
             _setup_demo, cmd_demo),
    "rules": ("list the learning rules", lambda p: None, cmd_rules),
    "show": ("pictures: learned kernels, feature maps, misclassified digits, cost",
             _setup_show, cmd_show),
}


def make_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="handprop", description="NumPy CNNs with hand-written backward passes.")
    parser.add_argument("--version", action="version", version=f"handprop {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    for name, (help_text, setup, _) in COMMANDS.items():
        setup(sub.add_parser(name, help=help_text, description=help_text))
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = make_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a one-line usage error
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    _, _, run = COMMANDS[args.command]
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return run(args)
    except HandpropError as exc:
        sys.stderr.write(f"handprop: error: {exc}\n")
        return EXIT_USAGE
    except KeyboardInterrupt:
        sys.stderr.write("handprop: interrupted\n")
        return EXIT_INTERRUPTED
    except MemoryError:
        sys.stderr.write("handprop: error: out of memory (try a smaller batch or dataset)\n")
        return EXIT_USAGE
    finally:
        signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM is handled like Ctrl-C: finished work is kept and reported."""
    raise KeyboardInterrupt


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())

