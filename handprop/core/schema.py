"""Checking values read from a file (a TOML config, a network spec, a checkpoint) before
they are used.

Two checks, both raising :class:`~handprop.core.errors.ConfigError` with the value's
place (``where``) and what it must be:

* :func:`check_type` -- a value against a type hint (``int``, ``float``, ``str``,
  ``list[str]``, ``int | tuple[int, int]``, ...): the hints of a dataclass's fields or a
  layer's constructor are then the schema, written once;
* :func:`check_like` -- a value against a template of the same kind (what this run
  would save itself): dicts with the same keys, lists of the same length, arrays of the
  same shape, numbers where numbers are. Used for saved optimizer and rule state.
"""

from __future__ import annotations

import collections.abc as abc
import math
import types
import typing
from typing import Any

import numpy as np

from .errors import ConfigError

_NoneType = type(None)


def _is_int(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool | np.bool_)


def _is_number(value: Any) -> bool:
    return (isinstance(value, int | float | np.integer | np.floating)
            and not isinstance(value, bool | np.bool_))


def _sequence(value: Any) -> bool:
    return isinstance(value, list | tuple)


def matches(value: Any, hint: Any) -> bool:
    """Whether ``value`` is of type ``hint`` (unknown hints accept anything)."""
    if hint is Any or hint is typing.Any:
        return True
    if hint is None or hint is _NoneType:
        return value is None
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        return any(matches(value, arg) for arg in args)
    if origin is typing.Literal:
        return value in args
    if hint is bool:
        return isinstance(value, bool | np.bool_)
    if hint is int:
        return _is_int(value)
    if hint is float:
        return _is_number(value)
    if hint is str:
        return isinstance(value, str)
    if origin is tuple:
        if not _sequence(value):
            return False
        if len(args) == 2 and args[1] is Ellipsis:
            return all(matches(v, args[0]) for v in value)
        return len(value) == len(args) and all(matches(v, a) for v, a in zip(value, args,
                                                                              strict=True))
    if origin in (list, abc.Sequence, abc.MutableSequence):
        return _sequence(value) and all(matches(v, args[0]) for v in value) if args else \
            _sequence(value)
    if origin in (dict, abc.Mapping, abc.MutableMapping):
        return isinstance(value, dict) and (not args or all(matches(v, args[1])
                                                            for v in value.values()))
    if hint in (list, tuple):
        return _sequence(value)
    if hint is dict:
        return isinstance(value, dict)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def describe(hint: Any) -> str:
    """``hint`` in words: "an integer", "a list of strings", ..."""
    if hint is None or hint is _NoneType:
        return "nothing"
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is typing.Union or origin is types.UnionType:
        words = [describe(a) for a in args if a is not _NoneType]
        return " or ".join(words) + (" (or left out)" if _NoneType in args else "")
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    simple = {bool: "true or false", int: "an integer", float: "a number", str: "a string",
              dict: "a table"}
    if hint in simple:
        return simple[hint]
    if origin is tuple:
        if len(args) == 2 and args[1] is Ellipsis:
            return f"a list of {_plural(args[0])}"
        return f"a list of {len(args)} {_plural(args[0])}" if len(set(args)) == 1 else \
            "a list of " + ", ".join(describe(a) for a in args)
    if origin in (list, abc.Sequence, abc.MutableSequence):
        return f"a list of {_plural(args[0])}" if args else "a list"
    if origin in (dict, abc.Mapping, abc.MutableMapping):
        return "a table"
    return f"a {getattr(hint, '__name__', str(hint))}"


def _plural(hint: Any) -> str:
    return {int: "integers", float: "numbers", str: "strings", bool: "booleans"}.get(
        hint, describe(hint))


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def check_type(value: Any, hint: Any, where: str) -> Any:
    """Return ``value`` if it is of type ``hint``; else a ConfigError naming ``where``."""
    if not matches(value, hint):
        raise ConfigError(f"{where} must be {describe(hint)}, got {_shown(value)}")
    return value


def hints_of(function: Any) -> dict[str, Any]:
    """The evaluated type hints of a function or class (empty when they cannot be
    evaluated)."""
    try:
        return typing.get_type_hints(function)
    except Exception:  # a hint naming something not importable: no schema
        return {}


def check_like(value: Any, template: Any, where: str) -> None:
    """``value`` must have the structure of ``template``: a dict with the same keys, a
    list of the same length, an array of the same shape (finite floating-point numbers),
    an integer where an integer is, a number where a number is, a string where a string
    is. ConfigError naming the first place that differs."""
    if isinstance(template, dict) and "bit_generator" in template:
        check_generator_state(value, template, where)
    elif isinstance(template, dict):
        if not isinstance(value, dict):
            raise ConfigError(f"{where} must be a table, got {_shown(value)}")
        missing = [k for k in template if k not in value]
        if missing:
            raise ConfigError(f"{where}: missing {', '.join(map(str, missing))}")
        extra = [k for k in value if k not in template]
        if extra:
            raise ConfigError(f"{where}: unexpected {', '.join(map(str, extra))}")
        for key, item in template.items():
            check_like(value[key], item, f"{where}.{key}")
    elif isinstance(template, list | tuple):
        if not _sequence(value) or len(value) != len(template):
            raise ConfigError(f"{where} must be a list of {len(template)} entries, got "
                              f"{_shown(value)}")
        for i, (item, expected) in enumerate(zip(value, template, strict=True)):
            check_like(item, expected, f"{where}[{i}]")
    elif isinstance(template, np.ndarray):
        if not isinstance(value, np.ndarray):
            raise ConfigError(f"{where} must be an array of shape {template.shape}, "
                              f"got {_shown(value)}")
        if value.shape != template.shape:
            raise ConfigError(f"{where} has shape {value.shape}, this run needs "
                              f"{template.shape}")
        if value.dtype != template.dtype or value.dtype.hasobject:
            raise ConfigError(f"{where} has dtype {value.dtype}, this run needs "
                              f"{template.dtype}")
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise ConfigError(f"{where} holds NaN or inf")
    elif isinstance(template, bool | np.bool_):
        check_type(value, bool, where)
    elif _is_int(template):
        check_type(value, int, where)
    elif _is_number(template):
        check_type(value, float, where)
        if not math.isfinite(value):
            raise ConfigError(f"{where} must be a finite number, got {value!r}")
    elif isinstance(template, str):
        check_type(value, str, where)
    elif template is None and value is not None:
        raise ConfigError(f"{where} must be empty (null), got {_shown(value)}")


# The state of NumPy's PCG64 generator (numpy.random.default_rng): a 128-bit LCG state and
# an odd 128-bit increment, and the spare 32 bits of the last draw.
_PCG64_FIELDS = {"state": 2**128, "inc": 2**128}


def check_generator_state(value: Any, template: dict[str, Any], where: str) -> None:
    """``value`` must be a state of ``template``'s bit generator that the generator itself
    could have reached: for PCG64 (NumPy's default) a state and an odd increment below
    2**128, ``has_uint32`` 0 or 1, ``uinteger`` below 2**32. Any other kind is tried on a
    fresh generator of that kind. ConfigError naming the first problem."""
    name = template["bit_generator"]
    if not isinstance(value, dict) or value.get("bit_generator") != name:
        raise ConfigError(f"{where} must be the state of a {name} generator, got "
                          f"{_shown(value)}")
    if name not in ("PCG64", "PCG64DXSM"):
        _try_generator_state(value, name, where)
        return
    check_like({k: v for k, v in value.items() if k != "bit_generator"},
               {k: v for k, v in template.items() if k != "bit_generator"}, where)
    for key, bound in _PCG64_FIELDS.items():
        number = value["state"][key]
        if not 0 <= number < bound:
            raise ConfigError(f"{where}.state.{key} must be in 0..2**128-1, got {_shown(number)}")
    if value["state"]["inc"] % 2 == 0:
        raise ConfigError(f"{where}.state.inc must be odd (a PCG64 increment), got "
                          f"{_shown(value['state']['inc'])}")
    if value["has_uint32"] not in (0, 1) or not 0 <= value["uinteger"] < 2**32:
        raise ConfigError(f"{where}: has_uint32 must be 0 or 1 and uinteger in 0..2**32-1")


def _try_generator_state(value: dict[str, Any], name: str, where: str) -> None:
    kind = getattr(np.random, str(name), None)
    if not (isinstance(kind, type) and issubclass(kind, np.random.BitGenerator)):
        raise ConfigError(f"{where}: unknown bit generator {name!r}")
    try:
        kind().state = value
    except (ValueError, TypeError, KeyError, OverflowError) as exc:
        raise ConfigError(f"{where} is not a valid {name} state ({exc})"[:300]) from None
