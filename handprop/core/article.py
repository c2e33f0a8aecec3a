"""The article's protocol, in one place: what presets, the CLI, the benchmark and the
studies use when they say "the article's" (seed-spec sections 1, 2 and 7).

Momentum is the article's form ``v <- alpha * v + lr * g; w <- w - v``.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ArticleProtocol:
    """lr, alpha (momentum), epochs and batch size (online SGD) of the article's runs;
    the widths of the seed net's two hidden dense layers; the digits it separates and
    how many shuffled images it holds out."""

    lr: float = 0.09
    momentum: float = 0.0009
    epochs: int = 500
    batch_size: int = 1
    fc: tuple[int, int] = (28, 36)
    classes: tuple[int, int] = (0, 1)
    test_images: int = 10


ARTICLE = ArticleProtocol()
