"""The explorer's JSON API: every request checked against limits, one lock around the state.

==========================  ===============================================================
``GET  /api/meta``          rules, datasets, images, limits, defaults (what the page offers)
``GET  /api/state``         everything the page shows (settings, runs, curves, views)
``POST /api/step``          ``{"steps": n}``: n online-SGD steps of every run, then the state
``POST /api/reset``         ``{"seed": s}`` (optional): back to the seed's initial weights
``POST /api/settings``      any of ``dataset, seed, as_run, rule, lines, transform, compare,
                            lr, momentum, image``; a change of what a run is restarts
                            every run from the seed's initial weights
==========================  ===============================================================

Every POST may carry ``"since": [{"id": ..., "count": n}, ...]`` (one per run: the curve
the page holds), and then gets only the curve points it lacks; and ``"view": false`` when
the page shows no map (its training and compare views): the answer then has no ``view``.

A request that breaks a rule (unknown field, wrong type, a value outside its limit, an
unknown rule, layer, channel or colour) gets 400 and ``{"error": "one line"}``, and
changes nothing. Requests are served one at a time against the state (a lock), so
concurrent steps and resets each see and leave a consistent session.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from ..core.errors import HandpropError
from ..core.limits import MAX_SEED
from ..rules import FAMILIES, RULES
from ..rules.backward import TRANSFORMS
from .session import (
    COLORS,
    DATASETS,
    MAX_POINTS,
    Catalogue,
    Session,
    Settings,
    conv_channels,
)
from .views import snapshot

# The article's rules and the literature's, in the order; then any other rule.
FEATURED = ("exact", "seed-original", "seed-broken", "broken-upstream", "broken-text", "fa",
            "usf", "frsf", "brsf", "dfa", "kp")
LIMITS = {
    "steps": (1, 1000),  # per request
    "lr": (1e-6, 10.0),
    "momentum": (0.0, 0.99),  # the article's alpha is 0.0009; at 1 the velocity never decays
    "seed": (0, MAX_SEED),
    "body_bytes": 16_384,
}
FIELDS = ("dataset", "seed", "as_run", "rule", "lines", "transform", "compare", "lr",
          "momentum", "image")


class ApiError(Exception):
    """A request the API refuses: HTTP ``status`` and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _bad(message: str) -> ApiError:
    return ApiError(400, message)


# -- checking values ------------------------------------------------------------------

def _int(value: Any, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"{name} must be an integer, got {json.dumps(value)[:40]}")
    if not low <= value <= high:
        raise _bad(f"{name} must be in {low}..{high}, got {value}")
    return value


def _number(value: Any, name: str, low: float, high: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _bad(f"{name} must be a number, got {json.dumps(value)[:40]}")
    if not math.isfinite(value) or not low <= value <= high:
        raise _bad(f"{name} must be a number in [{low:g}, {high:g}], got {value}")
    return float(value)


def _choice(value: Any, name: str, choices: tuple[str, ...] | list[str],
            allow_none: bool = False) -> str | None:
    if value is None and allow_none:
        return None
    if not isinstance(value, str) or value not in choices:
        shown = json.dumps(value)[:40]
        raise _bad(f"{name} must be one of {', '.join(choices)}"
                   f"{' or null' if allow_none else ''}; got {shown}")
    return value


def _lines(value: Any) -> dict[str, dict[str, str]]:
    """{conv layer: {channel letter: colour}} -- names checked by the session."""
    if not isinstance(value, dict) or not value or len(value) > 8:
        raise _bad("lines must be an object {layer: {channel: colour}} with 1 to 8 layers")
    out = {}
    for layer, colors in value.items():
        if not isinstance(colors, dict) or not colors or len(colors) > 16:
            raise _bad(f"lines.{layer[:20]} must be an object {{channel: colour}} "
                       "with 1 to 16 channels")
        for channel, color in colors.items():
            _choice(color, f"lines.{layer[:20]}.{channel[:4]}", list(COLORS.values()))
        out[layer] = dict(colors)
    return out


def _since(value: Any) -> list[dict[str, Any]]:
    if not isinstance(value, list) or len(value) > 2:
        raise _bad("since must be a list of at most 2 objects {id, count}")
    checked = []
    for item in value:
        if not isinstance(item, dict) or set(item) != {"id", "count"}:
            raise _bad("since: each entry must be an object with exactly id and count")
        if not isinstance(item["id"], str) or len(item["id"]) > 40:
            raise _bad("since: id must be a string of at most 40 characters")
        checked.append({"id": item["id"],
                        "count": _int(item["count"], "since.count", 0, MAX_POINTS)})
    return checked


def parse_body(raw: bytes | None, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The request's JSON object, with only ``allowed`` fields (and ``since``)."""
    if raw is not None and len(raw) > LIMITS["body_bytes"]:
        raise ApiError(413, f"request body over {LIMITS['body_bytes']} bytes")
    if raw is None or not raw.strip():
        return {}
    try:
        body = json.loads(raw, parse_constant=_no_constant)
    except (ValueError, RecursionError):
        raise _bad("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _bad("request body must be a JSON object")
    unknown = sorted(set(body) - set(allowed) - {"since", "view"})
    if unknown:
        raise _bad(f"unknown field {unknown[0][:40]!r}; expected "
                   f"{', '.join(allowed) or 'no fields'} (and since, view)")
    return body


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not allowed")


# -- the API ---------------------------------------------------------------------------

class ExploreApi:
    """Routes requests to one :class:`Session`, one at a time."""

    def __init__(self, session: Session | None = None) -> None:
        self.session = session or Session()
        self.lock = threading.Lock()
        self.routes: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any]]] = {
            ("GET", "/api/meta"): lambda body: self._meta,
            ("GET", "/api/state"): self._state,
            ("POST", "/api/state"): self._state,
            ("POST", "/api/step"): self._step,
            ("POST", "/api/reset"): self._reset,
            ("POST", "/api/settings"): self._settings,
        }
        self.fields = {"/api/state": (), "/api/step": ("steps",), "/api/reset": ("seed",),
                       "/api/settings": FIELDS}
        self._meta = self.meta()

    def handle(self, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
        """One request -> (HTTP status, JSON bytes). Never raises for a bad request."""
        start = time.perf_counter()
        try:
            route = self.routes.get((method, path))
            if route is None:
                if any(p == path for _, p in self.routes):
                    raise ApiError(405, f"{method} is not allowed on {path}")
                raise ApiError(404, "no such API endpoint")
            fields = parse_body(body, self.fields.get(path, ())) if method == "POST" else {}
            with self.lock:
                payload = {**route(fields), "server_ms": (time.perf_counter() - start) * 1e3}
                return 200, _dump(payload)
        except ApiError as exc:
            return exc.status, _dump({"error": str(exc)})
        except HandpropError as exc:
            return 400, _dump({"error": str(exc)})

    def meta(self) -> dict[str, Any]:
        """What the page can offer (the same for the whole session)."""
        images = self.session.images
        order = [n for n in FEATURED if n in RULES] + [n for n in RULES if n not in FEATURED]
        return {
            "mode": "live",
            "rules": [{"name": n, "summary": RULES[n].summary, "family": RULES[n].family,
                       "featured": n in FEATURED} for n in order],
            "families": list(FAMILIES), "datasets": list(DATASETS),
            "transforms": list(TRANSFORMS), "colors": list(COLORS.values()),
            "line_layers": {layer: count for layer, count in
                            conv_channels(self.session.runs[0].net).items()},
            "images": image_items(images, range(len(images.pixels))),
            "limits": {k: list(v) for k, v in LIMITS.items() if isinstance(v, tuple)}
            | {"image": [0, len(images.pixels) - 1]},
            "defaults": Settings().to_json(),
        }

    def _answer(self, body: dict[str, Any]) -> Callable[[], dict[str, Any]]:
        """The state to send back once the request is done (``since`` and ``view``
        checked now, before anything changes)."""
        since = _since(body["since"]) if "since" in body else None
        with_view = _bool(body.get("view", True), "view")
        return lambda: snapshot(self.session, since, with_view)

    def _state(self, body: dict[str, Any]) -> dict[str, Any]:
        return self._answer(body)()

    def _step(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = self._answer(body)
        steps = _int(body.get("steps", 1), "steps", *LIMITS["steps"])
        self.session.step(steps)
        return answer()

    def _reset(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = self._answer(body)
        seed = _int(body["seed"], "seed", *LIMITS["seed"]) if "seed" in body else None
        self.session.reset(seed)
        return answer()

    def _settings(self, body: dict[str, Any]) -> dict[str, Any]:
        answer = self._answer(body)
        changes = check_settings({k: v for k, v in body.items() if k not in ("since", "view")},
                                 len(self.session.images.pixels))
        self.session.update(**changes)
        return answer()


def image_items(images: Catalogue, indices: Iterable[int]) -> dict[str, Any]:
    """{"items": {index: {name, label, pixels}}, "selectable": [index, ...]}."""
    chosen = sorted(set(indices))
    return {"items": {str(i): {"name": images.names[i], "label": int(images.labels[i]),
                               "pixels": images.pixels[i].astype(int).ravel().tolist()}
                      for i in chosen},
            "selectable": chosen}


def check_settings(body: dict[str, Any], images: int) -> dict[str, Any]:
    """Each given setting checked for its type and limit (names of layers, channels and
    rules are checked against the network and the registry by the session)."""
    checks: dict[str, Callable[[Any], Any]] = {
        "dataset": lambda v: _choice(v, "dataset", DATASETS),
        "seed": lambda v: _int(v, "seed", *LIMITS["seed"]),
        "as_run": lambda v: _bool(v, "as_run"),
        "rule": lambda v: _choice(v, "rule", list(RULES)),
        "lines": _lines,
        "transform": lambda v: _choice(v, "transform", TRANSFORMS, allow_none=True),
        "compare": lambda v: _choice(v, "compare", list(RULES), allow_none=True),
        "lr": lambda v: _number(v, "lr", *LIMITS["lr"]),
        "momentum": lambda v: _number(v, "momentum", *LIMITS["momentum"]),
        "image": lambda v: _int(v, "image", 0, images - 1),
    }
    return {name: checks[name](value) for name, value in body.items()}


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise _bad(f"{name} must be true or false, got {json.dumps(value)[:40]}")
    return value


def _dump(payload: dict[str, Any]) -> bytes:
    return json.dumps(payload, allow_nan=False, separators=(",", ":")).encode()
