"""``handprop show``: pictures of a trained network (from a checkpoint, or trained now)."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from ..core.errors import ConfigError
from ..core.limits import MAX_PICTURES
from .common import command, int_in, output_dir, progress_mode
from .train import TrainRun, add_train_args, prepare_run, restore_run, train_run

SHOW_WHAT = ("kernels", "maps", "misclassified", "cost", "all")


def _setup_show(p: argparse.ArgumentParser) -> None:
    p.add_argument("what", nargs="+", choices=SHOW_WHAT, help="which pictures")
    add_train_args(p, json=False)  # show writes pictures, not results: no --json
    p.add_argument("--checkpoint", type=Path,
                   help="draw this checkpoint's network instead of training one")
    p.add_argument("--image", type=int, default=0, help="maps: index of the image")
    p.add_argument("--split", choices=["test", "train"], default="test")
    p.add_argument("--limit", type=int_in(1, MAX_PICTURES), default=36,
                   help="misclassified: at most this many")
    p.add_argument("--out", type=output_dir, default=Path("pictures"),
                   help="folder for the PNGs")


def _images(run: TrainRun, split: str) -> tuple[np.ndarray, np.ndarray]:
    data = run.data
    return (data.x_test, data.y_test) if split == "test" else (data.x_train, data.y_train)


def _network_and_cost(args: argparse.Namespace) -> tuple[TrainRun, np.ndarray]:
    """The checkpoint's run and its cost history, or a run trained now from the flags
    (the image index is checked before any training)."""
    if args.checkpoint is not None:
        run, state = restore_run(args.checkpoint, args, to_train=False)
        _check_image(args, run)
        return run, state.cost_history()
    run = prepare_run(args)
    _check_image(args, run)
    return run, train_run(run, progress_mode(args), engine=args.engine).cost


def _check_image(args: argparse.Namespace, run: TrainRun) -> None:
    x, _ = _images(run, args.split)
    if not 0 <= args.image < len(x):
        raise ConfigError(f"--image {args.image} is out of range: the {args.split} set has "
                          f"{len(x)} images (0..{len(x) - 1})")


def _draw(args: argparse.Namespace, run: TrainRun, cost: np.ndarray, x: np.ndarray,
          y: np.ndarray) -> list[Path]:
    """The asked-for pictures; the paths written."""
    from ..pictures import show

    wanted = set(SHOW_WHAT[:-1]) if "all" in args.what else set(args.what)
    written = []
    if "kernels" in wanted:
        written.append(show.kernels(run.net, args.out / "kernels.png"))
    if "maps" in wanted:
        written.append(show.feature_maps(run.net, x[args.image],
                                         args.out / f"maps-{args.split}-{args.image}.png",
                                         label=int(y[args.image]),
                                         classes=run.data.classes))
    if "misclassified" in wanted:
        written.append(show.misclassified(run.net, x, y, run.data.classes,
                                          args.out / f"misclassified-{args.split}.png",
                                          limit=args.limit))
    if "cost" in wanted:
        written.append(show.cost_curve(cost, args.out / "cost.png"))
    return written


@command("show", "pictures: learned kernels, feature maps, misclassified digits, cost",
         _setup_show, order=80)
def cmd_show(args: argparse.Namespace) -> int:
    run, cost = _network_and_cost(args)
    x, y = _images(run, args.split)
    for path in _draw(args, run, cost, x, y):
        print(f"wrote {path}")
    return 0
