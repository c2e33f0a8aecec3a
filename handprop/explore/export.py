"""``handprop explore --export DIR``: a static copy of the page that opens from ``file://``.

The copy is the same page (the same ``index.html``, scripts and style) plus ``data.js``,
which assigns precomputed traces to ``window.HANDPROP_EXPORT``: for each chosen rule and
seed, the run's curve (every recorded step) and *frames* -- the full state at a few steps
(0, 1, 2, ... then spaced out to the last step): cost, angles, test predictions and the
forward and backward views of a few images. The page finds the global and reads from it
instead of the server (a plain ``<script src>`` works from ``file://``, where Chromium
refuses ``fetch()`` and ES modules). Every number in it was computed by the same
:class:`~handprop.explore.session.Session` code the live server runs.

Writing is safe: everything is computed first; a new or empty ``DIR`` is then written as
a whole (built in a temporary sibling folder and renamed into place), so an interrupted
export leaves nothing. A folder that is not empty is refused unless an earlier export
wrote it (its ``.handprop-export.json`` lists the files it wrote); then those files are
rewritten, each whole, and nothing else in the folder is touched.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import replace
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.interrupts import deferred_interrupts
from ..core.io import OutputError, atomic_write_bytes
from .api import image_items
from .session import Catalogue, Session, Settings, build_network, build_rule, catalogue
from .views import encode, rule_info, view

DEFAULT_RULES = ("exact", "seed-broken", "broken-text", "fa")
DEFAULT_STEPS = 200
DEFAULT_IMAGES = (0, 1, 2, 3)  # the four built-in images
MAX_EXPORT_STEPS = 20_000
MAX_TRACES = 24  # rules x seeds
MAX_FRAMES = 16
MAX_VIEWS = 2_000  # traces x frames x images (about 40 kB each)
MAX_TOTAL_STEPS = 100_000  # traces x steps (a few ms each: minutes of work at most)
DIGITS = 4  # significant digits of the exported maps
MARKER = ".handprop-export.json"
PLACEHOLDER = "<!-- handprop-export-data -->"


def frame_steps(steps: int, count: int = MAX_FRAMES) -> list[int]:
    """The steps whose full state is kept: the first few one by one, then spaced out
    (roughly geometrically) to ``steps``."""
    chosen = set(range(min(steps, 5) + 1))
    ratio = steps ** (1 / max(count - len(chosen), 1))
    value = 5.0
    while len(chosen) < count and value < steps:
        value = max(value * ratio, value + 1)
        chosen.add(min(round(value), steps))
    chosen.add(steps)
    return sorted(chosen)


def check_request(settings: Settings, rules: Sequence[str], seeds: Sequence[int], steps: int,
                  images: Sequence[int], catalogue_size: int) -> None:
    """Refuse, before any work, what the copy cannot hold."""
    if not rules or not seeds:
        raise ConfigError("--export needs at least one rule and one seed")
    if len(set(rules)) * len(set(seeds)) > MAX_TRACES:
        raise ConfigError(f"--export: {len(set(rules))} rules x {len(set(seeds))} seeds is over "
                          f"{MAX_TRACES} traces")
    if not 1 <= steps <= MAX_EXPORT_STEPS:
        raise ConfigError(f"--steps must be in 1..{MAX_EXPORT_STEPS}, got {steps}")
    traces = len(set(rules)) * len(set(seeds))
    if traces * steps > MAX_TOTAL_STEPS:
        raise ConfigError(f"--export: {traces} traces x {steps} steps is over {MAX_TOTAL_STEPS} "
                          "steps in all: choose fewer")
    bad = [i for i in images if not 0 <= i < catalogue_size]
    if bad or not images:
        raise ConfigError(f"--images must be indices in 0..{catalogue_size - 1}, "
                          f"got {bad or 'none'}")
    views = len(set(rules)) * len(set(seeds)) * len(frame_steps(steps)) * len(set(images))
    if views > MAX_VIEWS:
        raise ConfigError(f"--export would store {views} views (rules x seeds x frames x images), "
                          f"over {MAX_VIEWS} (about {MAX_VIEWS * 40 // 1000} MB): choose fewer")
    net = build_network(settings.as_run).init(0)
    for rule in rules:  # an unknown rule or one this network refuses: now, not halfway
        build_rule(net, rule, 0)


def trace(settings: Settings, images: Catalogue, shown: Sequence[int], steps: int
          ) -> dict[str, Any]:
    """One rule and seed: its curve and its frames (see the module notes)."""
    session = Session(replace(settings, compare=None, image=shown[0]), images)
    frames = []
    for target in frame_steps(steps):
        session.step(target - session.steps)
        run = session.runs[0]
        frames.append({"step": session.steps, "run_step": run.steps, "cost": run.cost,
                       "angles": run.angles, "diverged_at": run.diverged_at,
                       "predictions": run.predictions(images),
                       "views": {str(i): _rounded(view(session, i)) for i in shown}})
    run = session.runs[0]
    return {"rule": rule_info(run), "curve": run.curve.since(0), "frames": frames,
            "train_size": len(run.data.x_train)}


def _rounded(value: Any) -> Any:
    """Every array of a view ({"shape", "data"}) at :data:`DIGITS` significant digits."""
    if isinstance(value, dict):
        if set(value) == {"shape", "data"}:
            return encode(np.array([np.nan if v is None else v for v in value["data"]])
                          .reshape(value["shape"]), DIGITS)
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def build_data(settings: Settings, rules: Sequence[str], seeds: Sequence[int], steps: int,
               shown: Sequence[int]) -> dict[str, Any]:
    """Everything the static page reads: its meta (what it offers) and the traces."""
    from .api import FEATURED, LIMITS
    from .session import conv_channels

    images = catalogue()
    check_request(settings, rules, seeds, steps, shown, len(images.pixels))
    rules, seeds, shown = list(dict.fromkeys(rules)), list(dict.fromkeys(seeds)), list(
        dict.fromkeys(shown))
    traces = {f"{rule}|{seed}": trace(replace(settings, rule=rule, seed=seed), images,
                                      shown, steps)
              for seed in seeds for rule in rules}
    first = next(iter(traces.values()))
    predicted = {p["image"] for t in traces.values() for f in t["frames"]
                 for p in f["predictions"]}
    meta = {
        "mode": "static", "rules": [{"name": t["rule"]["name"], "summary": t["rule"]["summary"],
                                     "family": t["rule"]["family"],
                                     "featured": t["rule"]["name"] in FEATURED}
                                    for t in (traces[f"{r}|{seeds[0]}"] for r in rules)],
        "seeds": seeds, "frames": frame_steps(steps), "train_size": first["train_size"],
        "colors": ["blue", "green", "red"], "transforms": [],
        "line_layers": conv_channels(build_network(settings.as_run).init(0)),
        "images": {**image_items(images, list(shown) + sorted(predicted)), "selectable": shown},
        "limits": {"steps": list(LIMITS["steps"])},
        "defaults": {**settings.to_json(), "rule": rules[0], "seed": seeds[0], "compare": None,
                     "image": shown[0]},
    }
    return {"meta": meta, "traces": traces}


def page_files(data: dict[str, Any]) -> dict[str, bytes]:
    """{relative path: bytes} of the copy: the page, its scripts and style, data.js."""
    root = resources.files("handprop.explore") / "static"
    files: dict[str, bytes] = {}

    def walk(folder: Any, prefix: str) -> None:
        for entry in folder.iterdir():
            if entry.is_dir():
                walk(entry, f"{prefix}{entry.name}/")
            elif entry.name.endswith((".js", ".css", ".html")):
                files[f"{prefix}{entry.name}"] = entry.read_bytes()

    walk(root, "static/")
    page = files.pop("static/index.html").decode()
    if PLACEHOLDER not in page:
        raise OutputError("the page has no place for the exported data (a broken install?)")
    files["index.html"] = page.replace(PLACEHOLDER, '<script src="data.js"></script>').encode()
    text = json.dumps(data, allow_nan=False, separators=(",", ":"))
    files["data.js"] = f"window.HANDPROP_EXPORT = {text};\n".encode()
    return files


def export(out_dir: Path, settings: Settings, rules: Sequence[str], seeds: Sequence[int],
           steps: int, shown: Sequence[int] = DEFAULT_IMAGES) -> int:
    """Compute the traces, then write the copy to ``out_dir``; the number of files."""
    out_dir = Path(out_dir)
    previous = _previous_files(out_dir)  # refuse a folder we may not write, before work
    files = page_files(build_data(settings, rules, seeds, steps, shown))
    files[MARKER] = (json.dumps({"written_by": "handprop explore --export",
                                 "files": sorted([*files, MARKER])}, indent=1) + "\n").encode()
    with deferred_interrupts():
        if previous is None:
            _write_new(out_dir, files)
        else:
            _rewrite(out_dir, files, previous)
    return len(files)


def _previous_files(out_dir: Path) -> list[str] | None:
    """None for a new or empty folder; the files an earlier export wrote there; else refuse."""
    if out_dir.is_symlink():
        raise OutputError(f"cannot write to {out_dir}: it is a symbolic link")
    if not out_dir.exists():
        return None
    if not out_dir.is_dir():
        raise OutputError(f"cannot write to {out_dir}: it is not a directory")
    if not any(out_dir.iterdir()):
        return None
    marker = out_dir / MARKER
    try:
        listed = json.loads(marker.read_text()) if marker.is_file() and not marker.is_symlink() \
            else None
    except (OSError, ValueError):
        listed = None
    files = listed.get("files") if isinstance(listed, dict) else None
    if not isinstance(files, list) or not all(isinstance(f, str) and _safe(f) for f in files):
        raise OutputError(f"{out_dir} is not empty and holds no export of handprop explore: "
                          "choose a new or empty folder")
    return files


def _safe(relative: str) -> bool:
    parts = Path(relative).parts
    return bool(parts) and not Path(relative).is_absolute() and ".." not in parts


def _write_new(out_dir: Path, files: dict[str, bytes]) -> None:
    """Build the copy in a temporary sibling folder, then rename it into place."""
    parent = out_dir.absolute().parent
    parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=parent, prefix=f".{out_dir.name}.", suffix=".tmp"))
    try:
        for relative, data in files.items():
            target = staging / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        mask = os.umask(0)
        os.umask(mask)
        staging.chmod(0o777 & ~mask)  # mkdtemp's folder is private
        os.replace(staging, out_dir)  # over an empty folder, or none
    except OSError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise OutputError(f"cannot write {out_dir}: {exc.strerror or exc}") from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _rewrite(out_dir: Path, files: dict[str, bytes], previous: list[str]) -> None:
    """Rewrite an earlier export's files in place, each whole; never follow a link."""
    root = out_dir.resolve()
    for relative, data in files.items():
        target = out_dir / relative
        for folder in [out_dir / p for p in Path(relative).parents if str(p) != "."]:
            if folder.is_symlink() or (folder.exists() and not folder.is_dir()):
                raise OutputError(f"cannot write {target}: {folder} is not a plain folder")
        if target.is_symlink() or not target.resolve().is_relative_to(root):
            raise OutputError(f"cannot write {target}: it is a symbolic link")
        atomic_write_bytes(target, data)
    for relative in set(previous) - set(files):  # what an older export wrote and this one not
        stale = out_dir / relative
        if stale.is_file() and not stale.is_symlink() and stale.resolve().is_relative_to(root):
            stale.unlink()
