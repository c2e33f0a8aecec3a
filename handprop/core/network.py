"""A network: a named chain of layers, its parameters, and its hand-written backward pass.

    net = Network([Conv2d(2, 3, padding=1, name="conv1"), ...], input_shape=(1, 8, 8))
    net.init(seed=0)
    out, tape = net.forward(x)               # x: (N, 1, 8, 8)
    grads = net.backward(tape, out_grad)     # {"conv1.weight": ..., ...}

``backward`` walks the layers from last to first, handing each the gradient of its
output and collecting the gradient of its parameters: the chain rule, written out.
A learning rule (``rule=``) may replace what any layer computes on the way.

All parameters live in one flat buffer (``net.flat``); ``net.params`` holds named views
into it, so an optimizer updates every array with a few whole-buffer operations.
With ``replicas`` the buffer gets a leading axis: R independent networks (different
seeds) computed in lockstep by the same NumPy calls.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from math import prod
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError, ShapeError
from .layers import INIT_SCHEMES, Layer

if TYPE_CHECKING:
    from ..rules.base import LearningRule

Tape = list


class Gradients(dict):
    """Parameter gradients by name; ``flat`` is the same numbers as one buffer
    laid out like ``Network.flat``."""

    flat: np.ndarray


class Network:
    """A sequential network with named layers and named parameters.

    Parameters
    ----------
    layers : sequence of Layer
        Each with a unique ``name``; parameters are called ``"<layer>.<param>"``.
    input_shape : tuple of int
        Shape of one sample, e.g. ``(1, 8, 8)``.
    loss : str
        The loss training uses by default (``l2``, ``bce``, ``softmax_ce``).
    init : str
        Default initialisation scheme (see ``handprop.core.layers.INIT_SCHEMES``).
    name : str
    """

    def __init__(
        self,
        layers: Sequence[Layer],
        input_shape: Sequence[int],
        loss: str = "l2",
        init: str = "he",
        name: str = "net",
    ) -> None:
        if not layers:
            raise ConfigError("a network needs at least one layer")
        if init not in INIT_SCHEMES:
            raise ConfigError(
                f"unknown init scheme {init!r}; choose from {', '.join(INIT_SCHEMES)}"
            )
        from .ops.losses import LOSSES

        if loss not in LOSSES:
            raise ConfigError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
        names = [layer.name for layer in layers]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ConfigError(f"layer names must be unique; repeated: {', '.join(duplicates)}")
        try:
            shape = tuple(int(s) for s in input_shape)
        except (TypeError, ValueError):
            raise ShapeError(
                f"input_shape must be a list of integers, got {input_shape!r}"
            ) from None
        if not shape or min(shape) < 1:
            raise ShapeError(f"input_shape must be positive integers, got {input_shape!r}")
        self.name = name
        self.loss = loss
        self.init_scheme = init
        self.layers: list[Layer] = list(layers)
        self.input_shape = shape
        self.shapes: list[tuple[int, ...]] = [shape]
        for layer in self.layers:
            shape = layer.build(shape)
            self.shapes.append(shape)
        self.output_shape = shape
        # Parameter layout in the flat buffer: name -> (start, stop, shape).
        self.param_shapes: dict[str, tuple[int, ...]] = {}
        self._layout: list[dict[str, tuple[int, int, tuple[int, ...]]]] = []
        offset = 0
        for layer in self.layers:
            local_layout = {}
            for local, pshape in layer.param_shapes().items():
                size = prod(pshape)
                local_layout[local] = (offset, offset + size, pshape)
                self.param_shapes[f"{layer.name}.{local}"] = pshape
                offset += size
            self._layout.append(local_layout)
        self.num_params = offset
        self._slot: list[dict[str, int]] = []
        self._slot_sizes: list[int] = []
        for local_layout in self._layout:
            slots = {}
            for local, (start, stop, _) in local_layout.items():
                slots[local] = len(self._slot_sizes)
                self._slot_sizes.append(stop - start)
            self._slot.append(slots)
        kinds = [layer.kind for layer in self.layers]
        weight_layers = [i for i, k in enumerate(kinds) if k in ("conv2d", "dense")]
        self._last_weight = weight_layers[-1] if weight_layers else -1
        # Only layers with parameters below them need to compute an input gradient.
        has_params_below = False
        self._need_input_grad = []
        for local_layout in self._layout:
            self._need_input_grad.append(has_params_below)
            has_params_below = has_params_below or bool(local_layout)
        # Backward visits layers from the last down to the lowest one with parameters.
        lowest = min((i for i, lay in enumerate(self._layout) if lay), default=0)
        self._backward_order = list(range(len(self.layers) - 1, lowest - 1, -1))
        self.flat: np.ndarray | None = None
        self.replica_seeds: tuple[int, ...] | None = None
        self.rep_shape: tuple[int, ...] = ()
        self.dtype = np.dtype(np.float64)

    # -- parameters ------------------------------------------------------------------
    def init(
        self,
        seed: int = 0,
        *,
        scheme: str | None = None,
        dtype: str | np.dtype = "float64",
        replicas: Sequence[int] | None = None,
    ) -> Network:
        """Draw fresh parameters.

        Parameters
        ----------
        seed : int
            Seed of ``numpy.random.default_rng``; parameters are drawn layer by layer.
        scheme : str, optional
            Overrides the network's default initialisation scheme.
        dtype : "float64" or "float32"
        replicas : sequence of int, optional
            One seed per replica: parameters get a leading axis, and replica r holds
            exactly what ``init(seed=replicas[r])`` would draw.
        """
        scheme = scheme or self.init_scheme
        if scheme not in INIT_SCHEMES:
            raise ConfigError(
                f"unknown init scheme {scheme!r}; choose from {', '.join(INIT_SCHEMES)}"
            )
        dtype = np.dtype(dtype)
        if dtype not in (np.float32, np.float64):
            raise ConfigError(f"dtype must be float32 or float64, got {dtype}")
        seeds = [seed] if replicas is None else [int(s) for s in replicas]
        if not seeds:
            raise ConfigError("replicas must list at least one seed")
        rows = [self._draw(np.random.default_rng(s), scheme) for s in seeds]
        flat = np.stack(rows).astype(dtype) if replicas is not None else rows[0].astype(dtype)
        self.replica_seeds = tuple(seeds) if replicas is not None else None
        self._set_flat(flat)
        return self

    def _draw(self, rng: np.random.Generator, scheme: str) -> np.ndarray:
        flat = np.empty(self.num_params)
        for layer, local_layout in zip(self.layers, self._layout, strict=True):
            for local, (start, stop, _) in local_layout.items():
                flat[start:stop] = layer.init_param(local, rng, scheme).ravel()
        return flat

    def _set_flat(self, flat: np.ndarray) -> None:
        self.flat = flat
        self.dtype = flat.dtype
        self.rep_shape = flat.shape[:-1]
        self.params: dict[str, np.ndarray] = {}
        self._layer_params: list[dict[str, np.ndarray]] = []
        for layer, local_layout in zip(self.layers, self._layout, strict=True):
            local_views = {}
            for local, (start, stop, pshape) in local_layout.items():
                view = flat[..., start:stop].reshape(*self.rep_shape, *pshape)
                assert np.shares_memory(view, flat)
                local_views[local] = view
                self.params[f"{layer.name}.{local}"] = view
            self._layer_params.append(local_views)

    def _require_params(self) -> np.ndarray:
        if self.flat is None:
            raise ConfigError(f"network {self.name!r} has no parameters yet: call init() first")
        return self.flat

    def get_params(self) -> dict[str, np.ndarray]:
        """A copy of every parameter array, by name."""
        self._require_params()
        return {name: value.copy() for name, value in self.params.items()}

    def set_params(self, values: Mapping[str, np.ndarray], strict: bool = True) -> None:
        """Copy arrays into the parameters (shapes must match; all names if ``strict``)."""
        self._require_params()
        unknown = sorted(set(values) - set(self.params))
        if unknown:
            raise ShapeError(f"unknown parameter(s) {', '.join(unknown)} for network {self.name!r}")
        missing = sorted(set(self.params) - set(values))
        if strict and missing:
            raise ShapeError(f"missing parameter(s) {', '.join(missing)}")
        checked = {}
        for name, value in values.items():  # check everything before writing anything
            value = np.asarray(value)
            target = self.params[name]
            if value.shape != target.shape:
                raise ShapeError(f"parameter {name} has shape {target.shape}, got {value.shape}")
            if not np.issubdtype(value.dtype, np.number) or not np.all(np.isfinite(value)):
                raise ShapeError(f"parameter {name} must be finite numbers")
            checked[name] = value
        for name, value in checked.items():
            self.params[name][...] = value

    def with_replicas(self, count: int) -> None:
        """Repeat the current parameters into ``count`` replicas (all identical)."""
        flat = self._require_params()
        if self.rep_shape:
            raise ConfigError("network already has replicas")
        self.replica_seeds = None
        self._set_flat(np.repeat(flat[None], count, axis=0))

    # -- computation -----------------------------------------------------------------
    def _check_input(self, x: np.ndarray) -> np.ndarray:
        expected = len(self.rep_shape) + 1 + len(self.input_shape)
        if (
            not isinstance(x, np.ndarray)
            or x.ndim != expected
            or x.shape[len(self.rep_shape) + 1 :] != self.input_shape
            or x.shape[: len(self.rep_shape)] != self.rep_shape
        ):
            shape = getattr(x, "shape", type(x).__name__)
            want = (*self.rep_shape, "N", *self.input_shape)
            raise ShapeError(f"network {self.name!r} expects input of shape {want}, got {shape}")
        if x.dtype != self.dtype:
            if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
                raise ShapeError(f"input must be real numbers, got dtype {x.dtype}")
            x = x.astype(self.dtype)
        return x

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, Tape]:
        """Run every layer; return the output and the tape (one cache per layer).

        x : (*rep, N, *input_shape) -> out : (*rep, N, *output_shape)
        """
        self._require_params()
        return self._forward(self._check_input(x))

    def _forward(self, x: np.ndarray) -> tuple[np.ndarray, Tape]:
        """:meth:`forward` without the input checks (for loops that checked once)."""
        tape: Tape = []
        for layer, params in zip(self.layers, self._layer_params):  # noqa: B905
            x, cache = layer.forward(params, x)
            tape.append(cache)
        return x, tape

    def predict(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Forward pass in chunks of ``batch_size`` samples (no tape kept)."""
        self._require_params()
        x = self._check_input(x)
        batch_axis = len(self.rep_shape)
        count = x.shape[batch_axis]
        if count <= batch_size:
            return self.forward(x)[0]
        chunks = [
            self.forward(np.take(x, np.arange(i, min(i + batch_size, count)), axis=batch_axis))[0]
            for i in range(0, count, batch_size)
        ]
        return np.concatenate(chunks, axis=batch_axis)

    def backward(
        self, tape: Tape, out_grad: np.ndarray, rule: LearningRule | None = None
    ) -> Gradients:
        """The gradient of every parameter, given the gradient of the output.

        Parameters
        ----------
        tape : from :meth:`forward`
        out_grad : ndarray, shape of the output
        rule : LearningRule, optional
            Replaces what some layers' backward passes compute (default: exact).

        Returns
        -------
        Gradients
            ``{"<layer>.<param>": array}`` with the parameters' shapes, and ``.flat``.
        """
        grads_flat = self.backward_flat(tape, out_grad, rule)
        grads = Gradients(self.unflatten(grads_flat))
        grads.flat = grads_flat
        return grads

    def backward_flat(
        self, tape: Tape, out_grad: np.ndarray, rule: LearningRule | None = None
    ) -> np.ndarray:
        """:meth:`backward`, returning only the flat buffer (the training loop's form)."""
        self._require_params()
        if len(tape) != len(self.layers):
            raise ShapeError("tape does not come from this network's forward pass")
        rep = self.rep_shape
        shape = out_grad.shape if isinstance(out_grad, np.ndarray) else None
        if shape is None or shape[: len(rep)] != rep or shape[len(rep) + 1 :] != self.output_shape:
            want = (*rep, "N", *self.output_shape)
            raise ShapeError(f"output gradient must have shape {want}, got {shape}")
        return self._backward_flat(tape, out_grad, rule)

    def _backward_flat(
        self, tape: Tape, out_grad: np.ndarray, rule: LearningRule | None = None
    ) -> np.ndarray:
        """:meth:`backward_flat` without the checks (for loops that checked once)."""
        flat = self.flat
        # One slot per parameter array, in buffer order; filled from the last layer down
        # and joined at the end (cheaper than writing each into a buffer).
        parts: list[np.ndarray | None] = [None] * len(self._slot_sizes)
        per_replica = (*self.rep_shape, -1)
        layers, layer_params, slots = self.layers, self._layer_params, self._slot
        need_input_grad = self._need_input_grad
        grad = out_grad if out_grad.dtype == flat.dtype else out_grad.astype(flat.dtype)
        if rule is None:  # exact: each layer's own backward, nothing else to track
            for i in self._backward_order:
                grad, param_grads = layers[i].backward(
                    layer_params[i], tape[i], grad, need_input_grad[i]
                )
                if param_grads:
                    for local, value in param_grads.items():
                        parts[slots[i][local]] = value.reshape(per_replica)
        else:
            context: dict[str, Any] = {}
            for i in self._backward_order:
                if i == self._last_weight:
                    # The output error (at the last weight layer's output): what direct
                    # feedback alignment sends to every hidden layer.
                    context["output_error"] = grad
                grad, param_grads = rule.layer_backward(
                    i, layers[i], layer_params[i], tape[i], grad, need_input_grad[i], context
                )
                for local, value in param_grads.items():
                    parts[slots[i][local]] = value.reshape(per_replica)
        if not parts:
            return np.zeros_like(flat)
        for slot, part in enumerate(parts):
            if part is None:  # a rule left this parameter alone: no update
                parts[slot] = np.zeros((*self.rep_shape, self._slot_sizes[slot]), flat.dtype)
        return np.concatenate(parts, axis=-1) if len(parts) > 1 else parts[0].copy()

    def __call__(self, x: np.ndarray) -> tuple[np.ndarray, Callable[..., Gradients]]:
        """``out, backprop = net(x)``; ``backprop(out_grad, rule=None)`` gives the gradients."""
        out, tape = self.forward(x)

        def backprop(out_grad: np.ndarray, rule: LearningRule | None = None) -> Gradients:
            return self.backward(tape, out_grad, rule)

        return out, backprop

    def __getstate__(self) -> dict[str, Any]:
        # The named views are rebuilt on unpickling, so they point into the new buffer.
        state = self.__dict__.copy()
        state.pop("params", None)
        state.pop("_layer_params", None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.flat is not None:
            self._set_flat(self.flat)

    # -- helpers ---------------------------------------------------------------------
    def unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Views of a buffer laid out like ``self.flat``, by parameter name."""
        rep = flat.shape[:-1]
        out = {}
        for layer, local_layout in zip(self.layers, self._layout, strict=True):
            for local, (start, stop, pshape) in local_layout.items():
                out[f"{layer.name}.{local}"] = flat[..., start:stop].reshape(*rep, *pshape)
        return out

    def layer(self, name: str) -> Layer:
        """The layer called ``name``."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ConfigError(f"network {self.name!r} has no layer {name!r}")

    def layer_index(self, name: str) -> int:
        return self.layers.index(self.layer(name))

    def spec(self) -> dict[str, Any]:
        """A plain dict (TOML/JSON-able) that :func:`~handprop.core.spec.network_from_spec`
        rebuilds."""
        return {
            "name": self.name,
            "input_shape": list(self.input_shape),
            "loss": self.loss,
            "init": self.init_scheme,
            "layers": [layer.spec() for layer in self.layers],
        }

    def summary(self) -> str:
        """One line per layer: name, type, output shape, parameter count."""
        lines = [f"{'layer':<10} {'type':<24} {'output shape':<16} params"]
        lines.append(f"{'input':<10} {'':<24} {str(self.input_shape):<16}")
        for layer, shape, local_layout in zip(
            self.layers, self.shapes[1:], self._layout, strict=True
        ):
            count = sum(stop - start for start, stop, _ in local_layout.values())
            lines.append(f"{layer.name:<10} {layer.kind:<24} {str(shape):<16} {count}")
        lines.append(f"total parameters: {self.num_params}")
        return "\n".join(lines)
