"""``handprop demo``: the article's interactive version, on four built-in images."""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np

from ..core.article import ARTICLE
from ..core.limits import MAX_EPOCHS, MAX_SEED
from ..core.presets import seed_net
from .common import command, format_number, int_in


def _setup_demo(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int_in(1, MAX_EPOCHS), default=ARTICLE.epochs)
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=0)


def _ascii(image: np.ndarray) -> list[str]:
    shades = " .:-=+*#%@"
    top = max(float(image.max()), 1e-12)
    return ["".join(shades[int(v / top * (len(shades) - 1))] * 2 for v in row) for row in image]


@command("demo", "the article's interactive version: four built-in images, about a second",
         _setup_demo, order=60)
def cmd_demo(args: argparse.Namespace) -> int:
    from ..training.data import load_tiny
    from ..training.loop import TrainConfig, evaluate, fit, prediction_table

    data = load_tiny()
    net = seed_net().init(args.seed)
    config = TrainConfig(epochs=args.epochs, seed=args.seed)  # the article's protocol
    print("the article's interactive version: the seed net on four built-in images "
          "(0, 1, 1, 0), online SGD")

    def on_epoch(epoch: int, history: Any) -> None:
        if (epoch + 1) % max(args.epochs // 10, 1) == 0 or epoch == 0:
            print(f"  epoch {epoch + 1:>4}  cost {format_number(history.cost[-1])}")

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
