"""Which line each conv channel takes under the article's rules: a picture.

The article's figure marks three kinds of line per conv channel: blue (exact: the routed
gradient U times D), green (T(U) times D) and red (T(mask) * up(G) times D). Every rule
in :mod:`handprop.rules.seed` is a table of those lines; :func:`line_diagram` draws the
tables of several rules side by side, one row per rule, one box per channel, with what
else the rule changes written beside it.

    from handprop.pictures.lines import line_diagram
    line_diagram(seed_net(), ["seed-broken", "broken-text"], "lines.png")
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ..core.errors import ConfigError
from ..core.io import save_figure
from ..core.network import Network
from ..rules import make_rule

COLORS = {"exact": "#4477aa", "green": "#228833", "red": "#cc3311"}


def rule_notes(rule) -> str:
    """One line on what the rule changes besides the lines (routing, transform, conv step)."""
    notes = ["ties: every tied maximum" if rule.ties else "routing: the first maximum",
             f"T = {rule.transform_name}"]
    if rule.name == "seed-broken":
        notes.append("weight gradient of rot180(delta); rot180 of it sent to the conv below")
    else:
        notes.append("exact weight and input gradients of the changed delta")
    return "; ".join(notes)


def line_diagram(net: Network, rules: Sequence[str], path: str | Path) -> Path:
    """Draw each rule's line per conv channel of ``net`` (rules with lines only)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Rectangle

    bound = [make_rule(name, net) for name in rules]
    missing = [r.describe() for r in bound if not hasattr(r, "channel_lines")]
    if missing:
        raise ConfigError(f"line_diagram: {', '.join(missing)} has no per-channel lines")
    tables = [rule.channel_lines() for rule in bound]
    width = max(sum(len(v) for v in t.values()) + len(t) for t in tables)
    step = 1.5  # rows: boxes, then the rule's notes under them
    fig = Figure(figsize=(2.0 + 0.5 * max(width, 14), 0.8 + 0.75 * step * len(bound)))
    ax = fig.add_axes((0.01, 0.02, 0.98, 0.9))
    for row, (rule, table) in enumerate(zip(bound, tables, strict=True)):
        y = (len(bound) - 1 - row) * step
        ax.text(-0.3, y + 0.4, rule.describe(), ha="right", va="center", fontsize=9)
        ax.text(0.0, y - 0.15, rule_notes(rule), va="top", fontsize=7, color="0.3")
        x = 0.0
        for layer, lines in table.items():
            if row == 0:
                ax.text(x, y + 0.9, layer, fontsize=8, va="bottom")
            for channel, line in enumerate(lines):
                ax.add_patch(Rectangle((x, y), 0.9, 0.8, color=COLORS[line]))
                ax.text(x + 0.45, y + 0.4, "abcdefghij"[channel] if channel < 10 else channel,
                        ha="center", va="center", color="white", fontsize=8)
                x += 1.0
            x += 1.0
    ax.set_xlim(-4.0, max(width, 14) + 0.5)
    ax.set_ylim(-0.8, (len(bound) - 1) * step + 1.3)
    ax.axis("off")
    fig.suptitle("lines per conv channel: blue = exact (U * D), green = T(U) * D, "
                 "red = (T(mask) * up(G)) * D", fontsize=8)
    return save_figure(fig, path, dpi=110)
