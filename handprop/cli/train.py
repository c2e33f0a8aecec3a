"""``handprop train``, and the run preparation and restoring that ``show`` shares."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.errors import ConfigError, ShapeError
from ..core.presets import preset_defaults
from ..core.spec import build_net
from .common import EXIT_DIVERGED, command, versions, write_results

if TYPE_CHECKING:
    from ..training.loop import History, TrainConfig, TrainState


def add_train_args(p: argparse.ArgumentParser) -> None:
    """The options that describe a training run (``train`` and ``show`` take them)."""
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
    add_train_args(p)
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


# -- a run from flags ------------------------------------------------------------------

def _defaults(net_name: str) -> dict[str, Any]:
    # A network from a TOML file trains with the small CNN's settings.
    return preset_defaults(net_name)


def _check_compatible(net, data) -> None:
    if net.input_shape != data.input_shape:
        raise ShapeError(
            f"network {net.name!r} takes inputs of shape {net.input_shape} but the data "
            f"{data.name!r} has images of shape {data.input_shape}"
        )


def _train_config(args: argparse.Namespace, defaults: dict[str, Any]) -> TrainConfig:
    """The flags, with the network's defaults where a flag was not given."""
    from ..training.loop import TrainConfig

    def given(value: Any, key: str) -> Any:
        return value if value is not None else defaults[key]

    return TrainConfig(
        epochs=given(args.epochs, "epochs"),
        batch_size=given(args.batch_size, "batch_size"),
        optimizer=args.optimizer or defaults["optimizer"],
        lr=given(args.lr, "lr"),
        momentum=given(args.momentum, "momentum"),
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        shuffle=args.shuffle,
        seed=args.seed,
        dtype=args.dtype,
        init=args.init,
    ).validate()


def prepare_run(args: argparse.Namespace) -> TrainRun:
    """A fresh run from the command line: data, network, its initial weights, the rule."""
    from ..rules import make_rule
    from ..training.data import load_data

    args.net = args.net or "seed"
    defaults = _defaults(args.net)
    data_spec = args.data or defaults["data"]
    if data_spec is None:
        raise ConfigError(f"--net {args.net} needs --data (e.g. --data idx:PATH for 28x28 images)")
    data = load_data(data_spec, seed=args.seed, scale=args.scale or None)
    net = build_net(args.net, args.fc, data.input_shape, data.num_classes)
    _check_compatible(net, data)
    config = _train_config(args, defaults)
    net.init(config.seed, scheme=config.init, dtype=config.dtype)
    rule = make_rule(args.rule, net, config.seed)
    recipe = {"net": args.net, "fc": list(args.fc) if args.fc else None, "data": data_spec,
              "scale": bool(args.scale), "rule": args.rule}
    return TrainRun(net, data, config, rule, recipe)


# -- a run from a checkpoint -----------------------------------------------------------

def _saved_config(path: Path, saved: dict[str, Any], epochs: int | None) -> TrainConfig:
    """The checkpoint's training config, extended to ``epochs`` when that is possible."""
    from ..training.loop import TrainConfig

    if epochs is not None and epochs != saved["epochs"]:
        if saved.get("schedule") in ("step", "cosine"):
            raise ConfigError(f"{path}: the {saved['schedule']} schedule is laid out over "
                              f"{saved['epochs']} epochs; it cannot be extended to {epochs}")
        saved["epochs"] = epochs
    return TrainConfig(**saved).validate()


def restore_run(path: Path, epochs: int | None, to_train: bool = True,
                net_name: str | None = None, fc: Sequence[int] | None = None
                ) -> tuple[TrainRun, TrainState]:
    """A run rebuilt from a checkpoint, and the training state to continue from.

    ``net_name``/``fc``: the network the user asked for; by default the checkpoint's own.
    A checkpoint for another architecture is refused.
    """
    from ..rules import make_rule
    from ..training.checkpoint import (
        CheckpointError,
        check_architecture,
        load_checkpoint,
        restore_network,
    )
    from ..training.data import load_data
    from ..training.loop import TrainState

    checkpoint = load_checkpoint(path)
    meta = checkpoint.meta
    try:
        recipe = meta["recipe"]
        config = _saved_config(path, dict(meta["config"]), epochs)
        data = load_data(recipe["data"], seed=config.seed, scale=recipe["scale"] or None)
        net = build_net(net_name or recipe["net"], fc if fc is not None else recipe["fc"],
                        data.input_shape, data.num_classes)
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a training checkpoint ({exc})") from None
    check_architecture(checkpoint, net, str(path))
    net.init(config.seed, scheme=config.init, dtype=config.dtype)
    restore_network(checkpoint, net)  # parameters and state (e.g. running statistics)
    rule = make_rule(recipe["rule"], net, config.seed)
    rule.load_state({**meta.get("rule_state", {}), **checkpoint.rule})
    state = TrainState.restore(meta["state"], {**meta.get("optimizer_state", {}),
                                               **checkpoint.optimizer}, config)
    if to_train and state.epoch >= config.epochs:
        raise ConfigError(f"{path} already holds {state.epoch} epochs; pass --epochs N with "
                          f"N > {state.epoch} to train further")
    return TrainRun(net, data, config, rule, recipe), state


def save_checkpoint(path: Path, run: TrainRun, state: TrainState) -> None:
    from ..training.checkpoint import save_checkpoint as save

    save(path, run.net, {"kind": "train", "recipe": run.recipe,
                         "config": run.config.to_dict(), "state": state.to_meta()},
         optimizer_state=state.optimizer.state(), rule_state=run.rule.state())


# -- training --------------------------------------------------------------------------

def train_run(run: TrainRun, quiet: bool, checkpoint: Path | None = None,
              state: TrainState | None = None) -> History:
    """Train with a progress bar; checkpoint after every epoch when asked."""
    from ..studies.progress import ProgressBar
    from ..training.loop import fit

    config = run.config
    bar = ProgressBar(config.epochs, f"train {run.net.name}", enabled=False if quiet else None)
    if state is not None:
        bar.update(state.epoch)

    def progress(epoch: int, total: int, cost: float) -> None:
        bar.update(epoch, f"cost {cost:.4g}")

    def on_epoch(epoch: int, history: History) -> None:
        if checkpoint is not None:
            # Looked up at call time, so tests can interrupt right after a save.
            save_checkpoint(checkpoint, run, history.state)

    try:
        return fit(run.net, run.data.x_train, run.data.y_train, config, rule=run.rule,
                   progress=progress, on_epoch=on_epoch, state=state)
    finally:
        bar.close()


def _print_outcome(run: TrainRun, history: History, evaluation: Any,
                   checkpoint: Path | None) -> None:
    from ..training.loop import prediction_table

    net, data = run.net, run.data
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


def _results(run: TrainRun, history: History, evaluation: Any) -> dict[str, Any]:
    """What ``--json`` writes."""
    net, data, config = run.net, run.data, run.config
    diverged = history.diverged[0]
    return {
        "cost_history": history.cost_list(),
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
    }


@command("train", "train a network and print the test table", _setup_train, order=10)
def cmd_train(args: argparse.Namespace) -> int:
    from ..training.loop import evaluate

    if args.resume is not None:
        run, state = restore_run(args.resume, args.epochs, net_name=args.net, fc=args.fc)
        checkpoint = args.checkpoint or args.resume
    else:
        run, state, checkpoint = prepare_run(args), None, args.checkpoint
    history = train_run(run, args.quiet, checkpoint, state)
    with np.errstate(all="ignore"):  # a diverged network predicts NaN quietly
        evaluation = evaluate(run.net, run.data.x_test, run.data.y_test)
    _print_outcome(run, history, evaluation, checkpoint)
    write_results(args.json, _results(run, history, evaluation))
    return EXIT_DIVERGED if history.diverged[0] else 0
