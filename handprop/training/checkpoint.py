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

Loading refuses, with a one-line reason, a file that is not a checkpoint, is truncated,
holds objects, comes from a newer format, or describes another architecture (including
state buffers that are missing or do not fit).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import HandpropError
from ..core.io import atomic_write_bytes

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
        with np.load(path, allow_pickle=False) as archive:
            if "meta.json" not in archive.files or "params" not in archive.files:
                raise CheckpointError(f"{path} is not a readable checkpoint (no meta.json or "
                                      "params entry)")
            entries = {name: archive[name] for name in archive.files}
    except (zipfile.BadZipFile, EOFError, OSError) as exc:
        raise CheckpointError(f"{path} is not a readable checkpoint (truncated or corrupt: "
                              f"{exc})") from None
    except ValueError as exc:
        if "pickle" in str(exc):  # an object array: loading it would run pickle
            raise CheckpointError(f"{path} holds objects that would need pickle to load; "
                                  "refused") from None
        raise CheckpointError(f"{path} has a corrupt entry ({exc})") from None
    try:
        meta = json.loads(entries.pop("meta.json").tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: corrupt metadata ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a handprop checkpoint")
    version = meta.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format {version!r}, newer than this handprop reads "
            f"({FORMAT_VERSION}); upgrade handprop"
        )
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
