"""Networks described as data: a Python dict or a TOML file.

    input_shape = [1, 8, 8]
    loss = "softmax_ce"          # l2 | bce | softmax_ce
    init = "he"                  # normal | he | lecun | glorot | torch

    [[layers]]
    type = "conv2d"              # any registered kind (handprop.core.layers.LAYERS):
    name = "conv1"               # conv2d | max_pool2d | avg_pool2d | batch_norm2d |
    out_channels = 8             # dense | flatten | activation | per_channel_activation
    kernel_size = 3
    padding = 1

    [[layers]]
    type = "activation"
    activation = "relu"
    ...

A layer table's keys are its class's constructor arguments (``name`` defaults to the
kind and the layer's position); ``docs/examples/bn_cnn.toml`` is a complete example.
A preset can be named instead: ``preset = "seed"`` (with ``fc = [28, 36]``),
``preset = "lenet"`` or ``preset = "small"`` (with ``input_shape``/``classes``).
Every key is checked: an unknown or ill-typed one is an error naming the layer.
"""

from __future__ import annotations

import inspect
import json
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .errors import ConfigError, HandpropError
from .layers import Layer
from .limits import MAX_NESTING, MAX_TOML_BYTES
from .network import Network
from .ops import layer_types
from .presets import PRESETS
from .schema import check_type, hints_of

_TOP_KEYS = {"name", "input_shape", "loss", "init", "layers"}


def _preset_options(name: str) -> set[str]:
    """The keyword arguments preset ``name`` takes."""
    return set(inspect.signature(PRESETS[name].build).parameters)


def _preset(spec: Mapping[str, Any]) -> Network:
    name = spec["preset"]
    options = {k: v for k, v in spec.items() if k != "preset"}
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose from {', '.join(PRESETS)}")
    unknown = sorted(set(options) - _preset_options(name))
    if unknown:
        raise ConfigError(f"preset {name}: unknown key(s) {', '.join(unknown)}")
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in options.items()}
    _check_arguments(PRESETS[name].build, kwargs, f"preset {name}")
    try:
        return PRESETS[name](**kwargs)
    except HandpropError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"preset {name}: {exc}") from None


def _check_arguments(function: Any, kwargs: Mapping[str, Any], where: str) -> None:
    """Each keyword argument against the type hint of ``function``'s parameter."""
    hints = hints_of(function)
    for key, value in kwargs.items():
        if key in hints:
            check_type(value, hints[key], f"{where}: {key}")


def network_from_spec(spec: Mapping[str, Any]) -> Network:
    """Build a :class:`Network` from a spec dict (see the module docstring)."""
    if not isinstance(spec, Mapping):
        raise ConfigError(f"a network spec must be a table/dict, got {type(spec).__name__}")
    if "preset" in spec:
        return _preset(spec)
    unknown = sorted(set(spec) - _TOP_KEYS)
    if unknown:
        raise ConfigError(
            f"network spec: unknown key(s) {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(_TOP_KEYS))})"
        )
    for key in ("input_shape", "layers"):
        if key not in spec:
            raise ConfigError(f"network spec: missing {key!r}")
    hints = {"input_shape": list[int], "loss": str, "init": str, "name": str}
    for key, hint in hints.items():
        if key in spec:
            check_type(spec[key], hint, f"network spec: {key}")
    layers_spec = spec["layers"]
    if not isinstance(layers_spec, list) or not layers_spec:
        raise ConfigError("network spec: 'layers' must be a non-empty list of tables")
    layers = [layer_from_spec(item, position)
              for position, item in enumerate(layers_spec, start=1)]
    return Network(layers, input_shape=spec["input_shape"], loss=spec.get("loss", "softmax_ce"),
                   init=spec.get("init", "he"), name=spec.get("name", "net"))


def layer_from_spec(item: Any, position: int = 1) -> Layer:
    """One layer from its table: ``{"type": kind, "name": ..., <constructor arguments>}``
    (``position`` names the layer in errors and gives the default name)."""
    if not isinstance(item, Mapping) or "type" not in item:
        raise ConfigError(f"network spec: layer {position} needs a 'type'")
    kind, known = item["type"], layer_types()
    if kind not in known:
        raise ConfigError(f"network spec: layer {position} has unknown type {kind!r}; choose "
                          f"from {', '.join(known)}")
    cls = known[kind]
    kwargs = {k: v for k, v in item.items() if k != "type"}
    kwargs.setdefault("name", f"{kind}{position}")
    check_type(kwargs["name"], str, f"network spec: layer {position}: name")
    accepted = set(inspect.signature(cls.__init__).parameters) - {"self"}
    extra = sorted(set(kwargs) - accepted)
    if extra:
        raise ConfigError(f"network spec: layer {kwargs['name']} ({kind}) does not take "
                          f"{', '.join(extra)} (it takes {', '.join(sorted(accepted))})")
    _check_arguments(cls.__init__, kwargs, f"network spec: layer {kwargs['name']} ({kind})")
    try:
        return cls(**kwargs)
    except HandpropError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"network spec: layer {kwargs['name']} ({kind}): {exc}") from None


def load_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML file; a missing, malformed, oversized (over ``MAX_TOML_BYTES``) or too
    deeply nested (over ``MAX_NESTING``) file is a ConfigError naming it."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_TOML_BYTES + 1)
        if len(raw) > MAX_TOML_BYTES:
            raise ConfigError(f"{path} is larger than the {MAX_TOML_BYTES:,} bytes a TOML "
                              "file may have")
        data = tomllib.loads(raw.decode("utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except IsADirectoryError:
        raise ConfigError(f"config path is a directory: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path} is not valid TOML: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path} is not a text (UTF-8) TOML file") from None
    except RecursionError:
        data = None
    if data is None or nesting(data) > MAX_NESTING:
        raise ConfigError(f"{path} nests tables or lists more than {MAX_NESTING} deep")
    return data


def nesting(value: Any, depth: int = 0) -> int:
    """How deeply ``value`` nests dicts and lists (0 for a scalar)."""
    if depth > MAX_NESTING:
        return depth
    children = value.values() if isinstance(value, dict) else \
        value if isinstance(value, list) else ()
    return max((nesting(child, depth + 1) for child in children), default=depth)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # A JSON string is a TOML basic string, given no surrogate escapes (ensure_ascii
        # off) and DEL escaped (TOML forbids it raw).
        return json.dumps(value, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise ConfigError(f"cannot write {type(value).__name__} to TOML")


def dump_toml(table: str, data: Mapping[str, Any]) -> str:
    """Write ``{table: data}`` as TOML: scalars and lists, and lists of tables (enough for
    handprop's study configs, so a saved config can be passed back with --config)."""
    lines = [f"[{table}]"]
    nested = []
    for key, value in data.items():
        if value is None:
            continue
        if isinstance(value, list) and value and all(isinstance(v, Mapping) for v in value):
            nested.append((key, value))
        else:
            lines.append(f"{key} = {_toml_value(value)}")
    for key, items in nested:
        for item in items:
            lines += ["", f"[[{table}.{key}]]"]
            lines += [f"{k} = {_toml_value(v)}" for k, v in item.items() if v is not None]
    return "\n".join(lines) + "\n"


def load_network_spec(path: str | Path) -> Network:
    """Build a network from a TOML file (the whole file, or its ``[network]`` table)."""
    data = load_toml(path)
    spec = data.get("network", data)
    try:
        return network_from_spec(spec)
    except HandpropError as exc:
        raise type(exc)(f"{path}: {exc}") from None


def build_net(name: str, fc: Sequence[int] | None, input_shape: tuple[int, ...] | None = None,
              classes: int | None = None) -> Network:
    """A preset by name (given the data's input shape and classes where it takes them),
    or a network TOML file."""
    if name.endswith(".toml"):
        if fc is not None:
            raise ConfigError("fc (hidden dense widths) only applies to the seed network, "
                              f"not to {name}")
        return load_network_spec(name)
    if name not in PRESETS:
        raise ConfigError(f"unknown network {name!r}; choose {', '.join(PRESETS)} or a .toml file")
    takes = _preset_options(name)
    if fc is not None and "fc" not in takes:
        raise ConfigError(f"fc (hidden dense widths) only applies to the seed network, "
                          f"not to {name!r}")
    given = {"fc": None if fc is None else tuple(fc), "input_shape": input_shape,
             "classes": classes}
    return PRESETS[name](**{k: v for k, v in given.items() if v is not None and k in takes})
