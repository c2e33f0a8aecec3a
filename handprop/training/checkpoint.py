"""Checkpoints: a network with its optimizer, rule and RNG state, resumable bit for bit.

A checkpoint is one ``.npz`` file holding only numeric arrays (loaded with
``allow_pickle=False``, so opening an untrusted file cannot run code):

* ``params`` -- the network's flat parameter buffer;
* ``buffers`` -- the network's state buffer (``net.buffer_flat``: batch norm's running
  statistics), only for networks that have state (older checkpoints have none, and
  need none for networks without state);
* ``optimizer.<name>`` -- the optimizer's arrays (velocity, Adam moments);
* ``rule.<name>`` -- the learning rule's arrays (random feedback matrices);
* ``meta.json`` -- UTF-8 JSON as a uint8 array: format version, the network spec, the
  training config, the epoch, the cost history, the optimizer's scalars, and every RNG
  state (data shuffles, redrawn feedback) as plain numbers.

* ``buffers`` (optional) -- the network's state that is not trained (e.g. batch norm's
  running statistics, ``net.buffer_flat``); a network without such state needs none.

Loading refuses, with a one-line reason, a file that is not a checkpoint, is truncated,
holds objects, comes from a newer format, or describes another architecture (including
state buffers that are missing or do not fit). Every value is checked before it is used
(:func:`training_settings`, :func:`restore_training_state`): a missing or ill-typed
entry, a cost history or an optimizer array of the wrong length (a file edited by hand)
is refused, never guessed.
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ConfigError, HandpropError
from ..core.io import atomic_write_bytes
from ..core.limits import check_int
from ..core.schema import check_like, check_type

FORMAT = "handprop-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(HandpropError, ValueError):
    """A checkpoint cannot be read or does not fit."""


@dataclass
class Checkpoint:
    """What :func:`load_checkpoint` returns."""

    meta: dict[str, Any]
    params: np.ndarray
    optimizer: dict[str, np.ndarray]
    rule: dict[str, np.ndarray]
    buffers: np.ndarray | None = None  # the network's state; None when it had none


def _split(state: dict[str, Any]) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Arrays go into the npz, everything else into the JSON."""
    arrays, plain = {}, {}
    for key, value in state.items():
        if isinstance(value, np.ndarray):
            arrays[key] = value
        else:
            plain[key] = value
    return arrays, plain


def save_checkpoint(path: str | Path, net: Any, meta: dict[str, Any],
                    optimizer_state: dict[str, Any] | None = None,
                    rule_state: dict[str, Any] | None = None) -> Path:
    """Write a checkpoint atomically. ``meta`` must be JSON-able."""
    from .. import __version__
    from ..core.io import to_jsonable

    opt_arrays, opt_plain = _split(optimizer_state or {})
    rule_arrays, rule_plain = _split(rule_state or {})
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "handprop_version": __version__,
        "network": net.spec(),
        "dtype": str(net.dtype),
        "replica_seeds": list(net.replica_seeds) if net.replica_seeds is not None else None,
        "optimizer_state": opt_plain,
        "rule_state": rule_plain,
        **meta,
    }
    text = json.dumps(to_jsonable(header), allow_nan=False)
    arrays = {"params": np.asarray(net.flat),
              "meta.json": np.frombuffer(text.encode("utf-8"), dtype=np.uint8)}
    if net.num_state:  # stateless networks keep the files older handprop wrote
        arrays["buffers"] = np.asarray(net.buffer_flat)
    arrays.update({f"optimizer.{k}": np.asarray(v) for k, v in opt_arrays.items()})
    arrays.update({f"rule.{k}": np.asarray(v) for k, v in rule_arrays.items()})
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path) -> Checkpoint:
    """Read and validate a checkpoint (never unpickles anything)."""
    path = Path(path)
    entries = _read_entries(path)
    try:
        meta = json.loads(entries.pop("meta.json").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt metadata ({exc})") from None
    except RecursionError:
        raise CheckpointError(f"{path}: corrupt metadata (nested too deeply)") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a handprop checkpoint")
    version = meta.get("format_version")
    if isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version!r}, newer than this handprop reads "
            f"({FORMAT_VERSION}); upgrade handprop"
        )
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise CheckpointError(f"{path} has checkpoint format version {str(version)[:20]!r}; "
                              f"expected a version from 1 to {FORMAT_VERSION}")
    params = entries.pop("params")
    if not np.issubdtype(params.dtype, np.floating) or not np.all(np.isfinite(params)):
        raise CheckpointError(f"{path}: parameters are not finite floating-point numbers")
    buffers = entries.pop("buffers", None)
    if buffers is not None and not (np.issubdtype(buffers.dtype, np.floating)
                                    and np.all(np.isfinite(buffers))):
        raise CheckpointError(f"{path}: buffers are not finite floating-point numbers")
    optimizer = {k.removeprefix("optimizer."): v for k, v in entries.items()
                 if k.startswith("optimizer.")}
    rule = {k.removeprefix("rule."): v for k, v in entries.items() if k.startswith("rule.")}
    return Checkpoint(meta, params, optimizer, rule, buffers)


def _read_entries(path: Path) -> dict[str, np.ndarray]:
    """Every array of the ``.npz`` at ``path`` (object arrays refused: no pickle)."""
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint not found: {path}") from None
    except IsADirectoryError:
        raise CheckpointError(f"checkpoint path is a directory: {path}") from None
    except OSError as exc:
        raise CheckpointError(f"cannot read checkpoint {path}: {exc.strerror}") from None
    if magic != b"PK\x03\x04":  # every .npz is a zip archive
        raise CheckpointError(f"{path} is not a readable checkpoint (not an .npz archive)")
    try:
        _check_sizes(path)
        with np.load(path, allow_pickle=False) as archive:
            if "meta.json" not in archive.files or "params" not in archive.files:
                raise CheckpointError(f"{path} is not a readable checkpoint (no meta.json or "
                                      "params entry)")
            return {name: archive[name] for name in archive.files}
    except HandpropError:
        raise
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt: "
                              f"{exc})") from None
    except ValueError as exc:
        if "pickle" in str(exc):  # an object array: loading it would run pickle
            raise CheckpointError(f"{path} holds objects that would need pickle to load; "
                                  "refused") from None
        raise CheckpointError(f"{path} has a corrupt entry ({exc})") from None


MAX_META_BYTES = 64 * 10**6
"""The largest metadata read (a million epochs of cost history is about 20 MB)."""


def _check_sizes(path: Path) -> None:
    """Before anything is inflated: every entry's size as its zip header declares it (the
    reader never returns more), the metadata within :data:`MAX_META_BYTES`, the arrays
    together within the memory budget, and each array's own header (read from its first
    bytes) consistent with its entry's size, so that no header can ask for more memory
    than the file's declared contents."""
    from ..core.limits import check_memory, format_bytes

    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        names = {info.filename for info in infos}
        if "meta.json.npy" not in names or "params.npy" not in names:
            raise CheckpointError(f"{path} is not a readable checkpoint (no meta.json or "
                                  "params entry)")
        for info in infos:
            if info.filename == "meta.json.npy" and info.file_size > MAX_META_BYTES:
                size = format_bytes(info.file_size)
                raise CheckpointError(f"{path}: its metadata declares {size}, more than the "
                                      f"{format_bytes(MAX_META_BYTES)} a checkpoint's metadata "
                                      "may hold; refused")
        check_memory(sum(info.file_size for info in infos), f"checkpoint {path}")
        for info in infos:
            with archive.open(info) as member:
                _check_header(member, info, path)


def _check_header(member: Any, info: zipfile.ZipInfo, path: Path) -> None:
    fmt = np.lib.format
    try:
        version = fmt.read_magic(member)
        reader = {(1, 0): fmt.read_array_header_1_0,
                  (2, 0): fmt.read_array_header_2_0}.get(version)
        if reader is None:
            raise ValueError(f"array format {version}")
        shape, _, dtype = reader(member, max_header_size=10_000)
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint (corrupt entry "
                              f"{info.filename!r}: {type(exc).__name__})") from None
    if dtype.hasobject:
        raise CheckpointError(f"{path} holds objects that would need pickle to load; refused")
    nbytes = int(np.prod(shape, dtype=object)) * dtype.itemsize
    if nbytes + member.tell() != info.file_size:
        raise CheckpointError(f"{path} is not a readable checkpoint (entry "
                              f"{info.filename!r} declares {nbytes} bytes of data and holds "
                              f"{info.file_size - member.tell()})")


def check_architecture(checkpoint: Checkpoint, net: Any, source: str) -> None:
    """Refuse a checkpoint made for another network (names the first difference)."""
    saved, current = checkpoint.meta.get("network"), net.spec()
    if saved != current:
        detail = _first_difference(saved, current)
        raise CheckpointError(f"{source} was saved for another architecture ({detail})")
    expected = (*net.rep_shape, net.num_params)
    if checkpoint.params.shape != expected:
        raise CheckpointError(
            f"{source}: parameters have shape {checkpoint.params.shape}, the network needs "
            f"{expected}"
        )
    state = (*net.rep_shape, net.num_state)
    if checkpoint.buffers is None and net.num_state:
        raise CheckpointError(f"{source} holds no buffers (layer state such as running "
                              f"statistics); the network needs {state}")
    if checkpoint.buffers is not None and checkpoint.buffers.shape != state:
        raise CheckpointError(f"{source}: buffers have shape {checkpoint.buffers.shape}, "
                              f"the network needs {state}")


def restore_network(checkpoint: Checkpoint, net: Any) -> None:
    """Copy the checkpoint's parameters and state buffers into ``net`` (initialised, and
    checked with :func:`check_architecture`)."""
    net.set_params(net.unflatten(checkpoint.params))
    if checkpoint.buffers is not None:
        net.buffer_flat[...] = checkpoint.buffers


def _first_difference(saved: Any, current: Any, where: str = "network") -> str:
    if isinstance(saved, dict) and isinstance(current, dict):
        for key in sorted(set(saved) | set(current), key=str):
            if saved.get(key) != current.get(key):
                return _first_difference(saved.get(key), current.get(key), f"{where}.{key}")
    if isinstance(saved, list) and isinstance(current, list) and len(saved) == len(current):
        for i, (a, b) in enumerate(zip(saved, current, strict=True)):
            if a != b:
                return _first_difference(a, b, f"{where}[{i}]")
    return f"{where}: checkpoint has {saved!r}, this network has {current!r}"


# -- validating a training checkpoint before it is used --------------------------------

RECIPE = {"net": str, "fc": list[int] | None, "data": str, "scale": bool, "rule": str}
"""What ``handprop train`` saves to rebuild its network, data and rule."""


def _table(value: Any, where: str, keys: dict[str, Any] | None = None) -> dict[str, Any]:
    """A JSON object; with ``keys``, exactly those keys (each of its type)."""
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a table, got {value!r}"[:200])
    if keys is not None:
        missing = [k for k in keys if k not in value]
        extra = [k for k in value if k not in keys]
        if missing or extra:
            detail = (f"missing {', '.join(missing)}" if missing
                      else f"unexpected {', '.join(map(str, extra))}")
            raise ConfigError(f"{where}: {detail}")
        for key, hint in keys.items():
            if hint is not Any:
                check_type(value[key], hint, f"{where}.{key}")
    return value


def _in_source(source: str, check: Any, *args: Any) -> Any:
    """Run a check; its ConfigError becomes a CheckpointError naming the file."""
    try:
        return check(*args)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def training_settings(checkpoint: Checkpoint, source: str) -> tuple[dict[str, Any], Any]:
    """The recipe (how to rebuild network, data and rule) and the validated
    :class:`~handprop.training.loop.TrainConfig` of a ``handprop train`` checkpoint."""
    from dataclasses import fields

    from .loop import TrainConfig

    meta = checkpoint.meta
    for key in ("recipe", "config", "state"):
        if key not in meta:
            raise CheckpointError(f"{source} is not a training checkpoint: its metadata has "
                                  f"no {key!r}")
    recipe = _in_source(source, _table, meta["recipe"], "recipe", RECIPE)
    names = {f.name: Any for f in fields(TrainConfig)}
    saved = _in_source(source, _table, meta["config"], "config", names)
    config = _in_source(source, lambda: TrainConfig(**saved).validate())
    _in_source(source, _table, meta["state"], "state")
    return dict(recipe), config


def _recipe_files(recipe: dict[str, Any]) -> dict[str, list[str]]:
    """The files a recipe names: a network TOML (``net``), IDX data (``data``)."""
    files = {}
    if recipe["net"].endswith(".toml"):
        files["net"] = [recipe["net"]]
    if recipe["data"].startswith("idx:"):
        files["data"] = recipe["data"][4:].split(",")
    return files


def files_outside(recipe: dict[str, Any], source: Path,
                  given: dict[str, str | None]) -> list[tuple[str, str]]:
    """A checkpoint is untrusted: a file its recipe names (a network TOML, IDX data) may
    be read only if it lies in the checkpoint's own folder, or if the user names it again
    (``given``: ``net`` and ``data`` as the user gave them, or None). The (key, value)
    pairs of the recipe that may not be read."""
    folder = Path(source).resolve().parent
    outside = []
    for key, paths in _recipe_files(recipe).items():
        if given.get(key) != recipe[key] and not all(
                Path(p).resolve().is_relative_to(folder) for p in paths):
            outside.append((key, recipe[key]))
    return outside


def _check_state(saved: dict[str, Any], config: Any, replicas: int, template: Any) -> None:
    """The training state's schema: epoch, steps, time, cost history, divergence, the
    schedule's and the shufflers' state."""
    keys = {"epoch": int, "steps": int, "seconds": float, "cost": list, "diverged": list,
            "alive": list[bool], "schedule": dict, "shufflers": list}
    _table(saved, "state", keys)
    epoch = check_int(saved["epoch"], "state.epoch", 0, config.epochs)
    check_int(saved["steps"], "state.steps", 0, 2**62)
    if not 0 <= saved["seconds"] < float("inf"):
        raise ConfigError(f"state.seconds must be a finite number >= 0, got "
                              f"{saved['seconds']!r}")
    for key in ("cost", "diverged", "alive", "shufflers"):
        if len(saved[key]) != replicas:
            raise ConfigError(f"state.{key} must have one entry per run ({replicas}), "
                                  f"got {len(saved[key])}")
    for r, row in enumerate(saved["cost"]):
        check_type(row, list[float | None], f"state.cost[{r}]")
        if len(row) != epoch:
            raise ConfigError(f"state.cost[{r}] must have one entry per epoch done "
                                  f"({epoch}), got {len(row)}")
    for r, (stop, alive) in enumerate(zip(saved["diverged"], saved["alive"], strict=True)):
        if stop is not None:
            _table(stop, f"state.diverged[{r}]", {"epoch": int, "step": int})
            check_int(stop["epoch"], f"state.diverged[{r}].epoch", 1, epoch + 1)
            check_int(stop["step"], f"state.diverged[{r}].step", 1, 2**62)
        if alive != (stop is None):
            raise ConfigError(f"state.alive[{r}] contradicts state.diverged[{r}]")
    schedule = template.schedule.state()
    _table(saved["schedule"], "state.schedule", {k: float | None for k in schedule})
    check_like(saved["shufflers"], [g.bit_generator.state for g in template.shufflers],
               "state.shufflers")


def restore_training_state(checkpoint: Checkpoint, net: Any, config: Any, rule: Any,
                           source: str) -> Any:
    """Check the checkpoint's training, optimizer and rule state against what this run
    (``net`` with its parameters, ``config``, a freshly bound ``rule``) would save, load
    the rule's state into ``rule`` and return the
    :class:`~handprop.training.loop.TrainState` to continue from."""
    from .loop import TrainState
    from .optim import make_optimizer

    meta = checkpoint.meta
    if checkpoint.params.dtype != np.dtype(config.dtype):
        raise CheckpointError(f"{source}: parameters are {checkpoint.params.dtype}, its "
                              f"config says {config.dtype}")
    replicas = net.rep_shape[0] if net.rep_shape else 1
    fresh = TrainState.fresh(config, list(range(replicas)))
    saved = meta["state"]
    _in_source(source, _check_state, saved, config, replicas, fresh)

    optimizer = make_optimizer(config.optimizer, config.lr, config.momentum,
                               config.weight_decay)
    optimizer.init_state(net.flat)
    template = optimizer.state()
    saved_optimizer = {**_in_source(source, _table, meta.get("optimizer_state", {}),
                                    "optimizer_state"), **checkpoint.optimizer}
    if saved["steps"] == 0:  # nothing stepped yet: the arrays may not exist
        template = {k: None if saved_optimizer.get(k) is None and isinstance(v, np.ndarray)
                    else v for k, v in template.items()}
    _in_source(source, check_like, saved_optimizer, template, "optimizer")

    saved_rule = {**_in_source(source, _table, meta.get("rule_state", {}), "rule_state"),
                  **checkpoint.rule}
    _in_source(source, check_like, saved_rule, rule.state(), "rule")
    try:
        rule.load_state(saved_rule)
        return TrainState.restore(saved, saved_optimizer, config)
    except (ValueError, TypeError, KeyError) as exc:  # e.g. a generator state numpy refuses
        raise CheckpointError(f"{source}: cannot restore the training state ({exc})") from None
