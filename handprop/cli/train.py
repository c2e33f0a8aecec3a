"""``handprop train``, and the run preparation and restoring that ``show`` shares."""

from __future__ import annotations

import argparse
import inspect
import shlex
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..core.errors import ConfigError, HandpropError, ShapeError
from ..core.limits import (
    MAX_BATCH,
    MAX_EPOCHS,
    MAX_SEED,
    MAX_WIDTH,
    check_memory,
    processes_bytes,
)
from ..core.presets import preset_defaults
from ..core.spec import build_net, network_from_spec
from ..training.memory import estimate_run_bytes
from .common import (
    EXIT_DIVERGED,
    add_progress_args,
    add_track_arg,
    check_track,
    command,
    format_number,
    int_in,
    output_file,
    progress_mode,
    versions,
    write_results,
)

if TYPE_CHECKING:
    from ..training.loop import History, TrainConfig, TrainState


# Flags whose default is applied when the run is prepared (not by argparse), so that a
# flag given on the command line can be told from one left out (see _conflicts).
FLAG_DEFAULTS = {"weight_decay": 0.0, "schedule": "constant", "shuffle": False,
                 "scale": False, "seed": 0, "dtype": "float64", "rule": "exact"}


def add_train_args(p: argparse.ArgumentParser, json: bool = True) -> None:
    """The options that describe a training run (``train`` and ``show`` take them).
    Sizes are checked against :mod:`handprop.core.limits` while parsing."""
    p.add_argument("--net", help="seed | lenet | small | PATH.toml (default seed)")
    p.add_argument("--fc", type=int_in(1, MAX_WIDTH), nargs=2, metavar=("W3", "W4"),
                   help="seed net: widths of its two hidden dense layers (default 28 36)")
    p.add_argument("--data", help="digits | digits10 | tiny | idx:PATH | fashion-mnist[:DIR] "
                   "(default: the net's)")
    p.add_argument("--epochs", type=int_in(1, MAX_EPOCHS))
    p.add_argument("--batch-size", type=int_in(1, MAX_BATCH),
                   help="1 = online SGD (the article)")
    p.add_argument("--optimizer", help="sgd | momentum | nesterov | adam")
    p.add_argument("--lr", type=float, help="learning rate")
    p.add_argument("--momentum", type=float, help="momentum (the article's alpha)")
    p.add_argument("--weight-decay", type=float, help="L2 penalty (default 0)")
    p.add_argument("--schedule",
                   help="constant (default) | step | multistep (x0.1 at 1/2 and 3/4 of the epochs, "
                        "BioTorch's) | cosine | article (the article's defect)")
    p.add_argument("--shuffle", action="store_true", default=None,
                   help="reshuffle the data every epoch")
    p.add_argument("--scale", action="store_true", default=None, help="scale pixels to [0, 1]")
    p.add_argument("--init", help="normal | he | lecun | glorot | torch (default: the net's)")
    p.add_argument("--seed", type=int_in(0, MAX_SEED), help="(default 0)")
    p.add_argument("--dtype", choices=["float32", "float64"], help="(default float64)")
    p.add_argument("--rule", help="learning rule (see `handprop rules`; default exact)")
    p.add_argument("--engine", choices=["auto", "numpy", "compiled"], default="auto",
                   help="auto (default: compiled wherever it supports the run) | numpy (the "
                        "readable reference) | compiled")
    if json:
        p.add_argument("--json", type=output_file, help="write the results here")
    add_progress_args(p)


def _setup_train(p: argparse.ArgumentParser) -> None:
    add_train_args(p)
    p.add_argument("--checkpoint", type=output_file,
                   help="save a checkpoint (.npz) here after every epoch")
    p.add_argument("--resume", type=Path,
                   help="continue from this checkpoint (its settings; --epochs may extend)")
    add_track_arg(p)


def flag(args: argparse.Namespace, name: str) -> Any:
    """A flag's value, or its default when it was not given."""
    value = getattr(args, name, None)
    return FLAG_DEFAULTS.get(name) if value is None else value


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
        weight_decay=flag(args, "weight_decay"),
        schedule=flag(args, "schedule"),
        shuffle=flag(args, "shuffle"),
        seed=flag(args, "seed"),
        dtype=flag(args, "dtype"),
        init=args.init,
    ).validate()


def _check_fc(net_name: str, fc: Sequence[int] | None) -> None:
    """``--fc`` names the seed net's hidden widths; refused for any other network."""
    from ..core.presets import PRESETS

    takes = net_name in PRESETS and "fc" in inspect.signature(PRESETS[net_name].build).parameters
    if fc is not None and not takes:
        raise ConfigError(f"--fc only applies to --net seed, not {net_name!r}")


def _check_memory(net: Any, args: argparse.Namespace, config: TrainConfig, samples: int) -> None:
    """Refuse a network and batch that would need more memory than the budget, naming the
    flags that size them (before the network is allocated)."""
    what = f"--net {args.net}" + (f" --fc {args.fc[0]} {args.fc[1]}" if args.fc else "")
    what += f" with --batch-size {config.batch_size}"
    needed = estimate_run_bytes(net, 1, min(config.batch_size, samples), samples,
                                np.dtype(config.dtype).itemsize, getattr(args, "engine", "auto"))
    check_memory(processes_bytes(0) + needed, f"{what} ({net.num_params} parameters)")


def prepare_run(args: argparse.Namespace) -> TrainRun:
    """A fresh run from the command line: every flag checked first, then the data, the
    network (its memory checked before it is allocated), its initial weights, the rule."""
    from ..rules import make_rule, parse_rule
    from ..training.data import load_data

    args.net = args.net or "seed"
    defaults = _defaults(args.net)
    config = _train_config(args, defaults)
    _check_fc(args.net, args.fc)
    parse_rule(flag(args, "rule"))  # a misspelt rule fails before the data is loaded
    data_spec = args.data or defaults["data"]
    if data_spec is None:
        raise ConfigError(f"--net {args.net} needs --data (e.g. --data idx:PATH for 28x28 images)")
    scale = True if args.scale else None
    data = load_data(data_spec, seed=config.seed, scale=scale, size=defaults.get("image_size"))
    net = build_net(args.net, args.fc, data.input_shape, data.num_classes)
    _check_compatible(net, data)
    _check_memory(net, args, config, len(data.y_train))
    net.init(config.seed, scheme=config.init, dtype=config.dtype)
    rule = make_rule(flag(args, "rule"), net, config.seed)
    recipe = {"net": args.net, "fc": list(args.fc) if args.fc else None, "data": data_spec,
              "scale": bool(args.scale), "rule": flag(args, "rule")}
    return TrainRun(net, data, config, rule, recipe)


# -- a run from a checkpoint -----------------------------------------------------------

def _saved_config(path: Path, config: TrainConfig, epochs: int | None) -> TrainConfig:
    """The checkpoint's training config, extended to ``epochs`` when that is possible."""
    if epochs is not None and epochs != config.epochs:
        if config.schedule in ("step", "cosine"):
            raise ConfigError(f"{path}: the {config.schedule} schedule is laid out over "
                              f"{config.epochs} epochs; it cannot be extended to {epochs}")
        config = replace(config, epochs=epochs).validate()
    return config


# The flags a checkpoint's settings answer (with --net/--fc: checked as the architecture)
SAVED_FLAGS = ("data", "scale", "rule", "batch_size", "optimizer", "lr", "momentum",
               "weight_decay", "schedule", "shuffle", "seed", "dtype", "init")


def _conflicts(path: Path, args: argparse.Namespace, saved: dict[str, Any],
               to_train: bool = True) -> None:
    """Refuse flags that say something else than the checkpoint: a checkpoint keeps the
    settings it was saved with (silently ignoring ``--lr 100`` would be worse)."""
    differ = [(name, getattr(args, name), saved[name]) for name in saved
              if getattr(args, name, None) is not None and getattr(args, name) != saved[name]]
    if differ:
        def shown(name: str, value: Any) -> str:
            flag_name = "--" + name.replace("_", "-")
            return flag_name if isinstance(value, bool) else f"{flag_name} {value}"

        given = ", ".join(shown(name, value) for name, value, _ in differ)
        kept = ", ".join(f"{name} {value}" for name, _, value in differ)
        extend = " (only --epochs may extend it)" if to_train else ""
        raise ConfigError(f"{given} conflict{'s' if len(differ) == 1 else ''} with the "
                          f"checkpoint {path} ({kept}): a checkpoint keeps the settings it "
                          f"was saved with{extend}; leave "
                          f"{'it' if len(differ) == 1 else 'them'} out"
                          f"{', or start a new run' if to_train else ''}")


def restore_run(path: Path, args: argparse.Namespace, to_train: bool = True
                ) -> tuple[TrainRun, TrainState]:
    """A run rebuilt from a checkpoint, and the training state to continue from.

    Every value of the checkpoint is checked before it is used. ``args.net``/``args.fc``:
    the network the user asked for (by default the checkpoint's own); a checkpoint for
    another architecture is refused, and so is any other flag that differs from the
    checkpoint's settings. ``to_train``: the run continues (``--epochs`` may extend it);
    otherwise it is only looked at (``show``), and ``--epochs`` must match too.
    """
    from ..rules import make_rule
    from ..training.checkpoint import (
        check_architecture,
        load_checkpoint,
        restore_network,
        restore_training_state,
        training_settings,
    )
    from ..training.data import load_data

    checkpoint = load_checkpoint(path)
    recipe, saved = training_settings(checkpoint, str(path))
    net_elsewhere = _files_elsewhere(recipe, path, args)
    net_name = args.net or recipe["net"]
    fc = args.fc if args.fc is not None else recipe["fc"]
    if args.net is not None or args.fc is not None:
        _check_fc(net_name, args.fc)
    data = load_data(recipe["data"], seed=saved.seed, scale=recipe["scale"] or None,
                     size=_defaults(net_name).get("image_size"))
    if net_elsewhere:  # not read: the checkpoint's own description of it (checked)
        net = network_from_spec(checkpoint.meta.get("network"))
    else:
        net = build_net(net_name, fc, data.input_shape, data.num_classes)
    check_architecture(checkpoint, net, str(path))
    settings = {**{k: v for k, v in recipe.items() if k in SAVED_FLAGS},
                **{k: v for k, v in asdict(saved).items() if k in SAVED_FLAGS},
                "init": saved.init or net.init_scheme}
    if not to_train:
        settings["epochs"] = saved.epochs
    _conflicts(path, args, settings, to_train)
    config = _saved_config(path, saved, args.epochs if to_train else None)
    net.init(config.seed, scheme=config.init, dtype=config.dtype)
    restore_network(checkpoint, net)  # parameters and state (e.g. running statistics)
    rule = make_rule(recipe["rule"], net, config.seed)
    state = restore_training_state(checkpoint, net, config, rule, str(path))
    if to_train and state.epoch >= config.epochs:
        raise ConfigError(f"{path} already holds {state.epoch} epochs; pass --epochs N with "
                          f"N > {state.epoch} to train further")
    return TrainRun(net, data, config, rule, recipe), state


def _files_elsewhere(recipe: dict[str, Any], path: Path, args: argparse.Namespace) -> bool:
    """A checkpoint is untrusted: the files its recipe names outside its own folder are
    not read unless the command line names them again. Data there is refused (pass
    --data); for a network file there, True: the network is rebuilt from the
    checkpoint's own spec instead."""
    from ..training.checkpoint import files_outside

    given = {"net": args.net, "data": getattr(args, "data", None)}
    outside = dict(files_outside(recipe, path, given))
    if "data" in outside:
        shown = outside["data"] if len(outside["data"]) <= 80 else outside["data"][:77] + "..."
        raise ConfigError(f"{path} names data {shown!r}, outside the checkpoint's folder; "
                          f"pass --data {shown} to read it (a checkpoint alone cannot point "
                          "handprop at files elsewhere)")
    return "net" in outside


def save_checkpoint(path: Path, run: TrainRun, state: TrainState) -> None:
    from ..training.checkpoint import save_checkpoint as save

    save(path, run.net, {"kind": "train", "recipe": run.recipe,
                         "config": run.config.to_dict(), "state": state.to_meta()},
         optimizer_state=state.optimizer.state(), rule_state=run.rule.state())


# -- training --------------------------------------------------------------------------

def train_run(run: TrainRun, progress: str, checkpoint: Path | None = None,
              state: TrainState | None = None, engine: str = "auto") -> History:
    """Train on ``engine`` with progress (``auto``, ``bar``, ``lines`` or ``none``);
    checkpoint after every epoch when asked."""
    from ..studies.progress import ProgressBar
    from ..training.loop import fit

    config = run.config
    bar = ProgressBar(config.epochs, f"train {run.net.name}", mode=progress, unit="epoch")
    if state is not None:
        bar.update(state.epoch)

    def on_progress(epoch: int, total: int, cost: float) -> None:
        bar.update(epoch, f"cost {format_number(cost)}")

    def on_epoch(epoch: int, history: History) -> None:
        if checkpoint is not None:
            # Looked up at call time, so tests can interrupt right after a save.
            save_checkpoint(checkpoint, run, history.state)

    try:
        return fit(run.net, run.data.x_train, run.data.y_train, config, rule=run.rule,
                   progress=on_progress, on_epoch=on_epoch, state=state, engine=engine)
    finally:
        bar.close()


def _stamp(path: Path | None) -> int | None:
    """A file's modification time (ns), None when there is no file."""
    try:
        return path.stat().st_mtime_ns if path is not None else None
    except OSError:
        return None


def _how_to_resume(checkpoint: Path | None, epochs: int) -> str:
    """After an interrupt: what the checkpoint holds and the command that continues."""
    from ..training.checkpoint import load_checkpoint

    if checkpoint is None or not checkpoint.is_file():
        return ("handprop: no checkpoint was saved (interrupted before the first epoch ended, "
                "or no --checkpoint PATH to make the run resumable)")
    try:
        epoch = load_checkpoint(checkpoint).meta["state"]["epoch"]
    except (HandpropError, KeyError, TypeError):
        return f"handprop: the checkpoint {checkpoint} cannot be read back"
    return (f"handprop: checkpoint {checkpoint} holds epoch {epoch} of {epochs}; resume with: "
            f"handprop train --resume {shlex.quote(str(checkpoint))}")


def _print_outcome(run: TrainRun, history: History, evaluation: Any,
                   checkpoint: Path | None) -> None:
    from ..training.loop import prediction_table

    net, data = run.net, run.data
    diverged = history.diverged[0]
    costs = history.cost_list()
    print(f"{net.name} net, {len(costs)} epochs, {history.steps} steps in "
          f"{history.seconds:.1f}s ({1e6 * history.seconds / max(history.steps, 1):.0f} us/step, "
          f"{history.extra.get('engine')} engine)")
    if costs:
        print(f"cost: first epoch {format_number(costs[0])}, last epoch "
              f"{format_number(costs[-1])}")
    if diverged:
        print(f"training diverged at epoch {diverged['epoch']}, step {diverged['step']}: the cost "
              f"became NaN/inf; the history up to epoch {diverged['epoch'] - 1} is kept")
    resized = data.info.get("resized_from")
    size = (f", resized from {resized[0]}x{resized[1]} to {data.input_shape[-2]}x"
            f"{data.input_shape[-1]} for {net.name}" if resized else "")
    print(f"test set ({data.name}, {len(data.y_test)} images{size}):")
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
        "engine": history.extra.get("engine"),
        "versions": versions(),
    }


@command("train", "train a network and print the test table", _setup_train, order=10)
def cmd_train(args: argparse.Namespace) -> int:
    from ..training.loop import evaluate

    check_track(args)
    if args.resume is not None:
        run, state = restore_run(args.resume, args)
        checkpoint = args.checkpoint or args.resume
    else:
        run, state, checkpoint = prepare_run(args), None, args.checkpoint
    before = _stamp(checkpoint)
    try:
        history = train_run(run, progress_mode(args), checkpoint, state, args.engine)
    except KeyboardInterrupt:
        # The checkpoint this run saved (not a stale file from an earlier run), else the
        # one it resumed from.
        saved = checkpoint if _stamp(checkpoint) not in (None, before) else args.resume
        sys.stderr.write(_how_to_resume(saved, run.config.epochs) + "\n")
        raise
    with np.errstate(all="ignore"):  # a diverged network predicts NaN quietly
        evaluation = evaluate(run.net, run.data.x_test, run.data.y_test)
    results = _results(run, history, evaluation)
    write_results(args.json, results)  # results first
    _print_outcome(run, history, evaluation, checkpoint)
    if args.track:
        _mirror(args.track, results, [args.json, checkpoint])
    return EXIT_DIVERGED if history.diverged[0] else 0


def _mirror(folder: Path, results: dict[str, Any], files: list[Path | None]) -> None:
    """After the results are written and printed: mirror them to the MLflow store."""
    from ..integrations.tracking import mirror_train, tracking_uri, warn_failure

    try:
        mirror_train(folder, results, files)
        print(f"tracked in {tracking_uri(folder)}")
    except Exception as exc:  # the results are out: a tracker must not undo that
        warn_failure(exc, str(folder))
