"""A network: a named chain of layers, its parameters, and its hand-written backward pass.

    net = Network([Conv2d(2, 3, padding=1, name="conv1"), ...], input_shape=(1, 8, 8))
    net.init(seed=0)
    out, tape = net.forward(x)               # x: (N, 1, 8, 8)
    grads = net.backward(tape, out_grad)     # {"conv1.weight": ..., ...}

``backward`` walks the layers from last to first, handing each the gradient of its
output and collecting the gradient of its parameters: the chain rule, written out.
A learning rule (``rule=``) may replace what any layer computes on the way: it is
handed one :class:`Step` per layer.

All trainable parameters live in one flat buffer (``net.flat``); ``net.params`` holds
named views into it (assigning to one copies into the buffer), so an optimizer updates
every array with a few whole-buffer operations. State that is not trained (batch
norm's running statistics) lives in a second buffer, ``net.buffer_flat``, with views
``net.buffers``. With ``replicas`` both buffers get a leading axis: R independent
networks (different seeds) computed in lockstep by the same NumPy calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, MutableMapping, Sequence
from math import prod
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import ConfigError, ShapeError
from .layers import INIT_SCHEMES, Layer, WeightLayer
from .limits import check_memory, check_seed, estimate_training_bytes
from .streams import init_generator

if TYPE_CHECKING:
    from ..rules.base import LearningRule

Tape = list
Layout = dict[str, tuple[int, int, tuple[int, ...]]]  # local name -> (start, stop, shape)


class Gradients(dict):
    """Parameter gradients by name; ``flat`` is the same numbers as one buffer
    laid out like ``Network.flat``."""

    flat: np.ndarray


class Step:
    """One layer's turn in the backward pass, as a learning rule sees it.

    index : the layer's position; layer : the Layer; params : its arrays by local name
    cache : what its forward pass kept; out_grad : the gradient arriving at its output
    need_input_grad : whether anything below needs the gradient it sends down
    output_error : the gradient at the last weight layer's output (what direct feedback
        alignment sends to hidden layers); None above that layer

    One object is reused for every layer of a backward pass; read it, don't keep it.
    """

    __slots__ = ("cache", "index", "layer", "need_input_grad", "out_grad", "output_error",
                 "params")

    def __init__(self) -> None:
        self.index, self.layer, self.params, self.cache = -1, None, {}, None
        self.out_grad: np.ndarray | None = None
        self.need_input_grad = True
        self.output_error: np.ndarray | None = None

    def exact(self) -> tuple[np.ndarray | None, dict[str, np.ndarray]]:
        """The layer's own (exact) backward pass for this step."""
        return self.layer.backward(self.params, self.cache, self.out_grad, self.need_input_grad)


class NamedViews(MutableMapping):
    """Arrays by name, each a view into a network buffer. Assigning copies into the
    buffer (same shape required), so ``net.params["fc5.weight"] = w`` changes the network."""

    def __init__(self, views: dict[str, np.ndarray], what: str) -> None:
        self._views, self._what = views, what

    def __getitem__(self, name: str) -> np.ndarray:
        return self._views[name]

    def __setitem__(self, name: str, value: Any) -> None:
        view = self._views.get(name)
        if view is None:
            raise ShapeError(f"no {self._what} {name!r} (there are: {', '.join(self._views)})")
        if value is view:  # ``params[name] -= x`` already changed it in place
            return
        value = np.asarray(value)
        if value.shape != view.shape:
            raise ShapeError(f"{self._what} {name} has shape {view.shape}, got {value.shape}")
        view[...] = value

    def __delitem__(self, name: str) -> None:
        raise ShapeError(f"cannot delete {self._what} {name!r}: the network's layers need it")

    def __iter__(self) -> Iterator[str]:
        return iter(self._views)

    def __len__(self) -> int:
        return len(self._views)

    def __repr__(self) -> str:
        return f"NamedViews({', '.join(f'{k}: {v.shape}' for k, v in self._views.items())})"


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

    def __init__(self, layers: Sequence[Layer], input_shape: Sequence[int], loss: str = "l2",
                 init: str = "he", name: str = "net") -> None:
        self.name, self.loss, self.init_scheme = name, loss, init
        self.layers: list[Layer] = list(layers)
        self.input_shape = _check_structure(self.layers, input_shape, loss, init)
        self.shapes = [self.input_shape]
        for layer in self.layers:
            self.shapes.append(layer.build(self.shapes[-1]))
        self.output_shape = self.shapes[-1]
        self._layout, self.num_params = _layout(self.layers, lambda lay: lay.param_shapes())
        self._state_layout, self.num_state = _layout(self.layers, lambda lay: lay.state_shapes())
        self.param_shapes = {f"{layer.name}.{local}": shape
                             for layer, lay in zip(self.layers, self._layout, strict=True)
                             for local, (_, _, shape) in lay.items()}
        self._plan_backward()
        self.flat: np.ndarray | None = None
        self.buffer_flat: np.ndarray | None = None
        self.replica_seeds: tuple[int, ...] | None = None
        self.init_used: str | None = None  # the scheme of the last init()
        self.rep_shape: tuple[int, ...] = ()
        self.dtype = np.dtype(np.float64)

    def _plan_backward(self) -> None:
        """Which layers the backward pass visits, in order, and which of them must send a
        gradient down (only those with parameters somewhere below)."""
        self._slot_sizes = [stop - start for lay in self._layout for start, stop, _ in lay.values()]
        self._slot, count = [], 0
        for lay in self._layout:
            self._slot.append({local: count + k for k, local in enumerate(lay)})
            count += len(lay)
        by_name = {f"{layer.name}.{local}": slots[local]
                   for layer, slots in zip(self.layers, self._slot, strict=True)
                   for local in slots}
        for layer, slots in zip(self.layers, self._slot, strict=True):
            for local, target in layer.borrowed().items():
                if target not in by_name:
                    raise ConfigError(f"layer {layer.name} borrows {target!r}, which is not a "
                                      f"parameter of this network ({', '.join(by_name)})")
                slots[local] = by_name[target]
        weights = [i for i, layer in enumerate(self.layers) if isinstance(layer, WeightLayer)]
        self._last_weight = weights[-1] if weights else -1
        below = np.cumsum([0] + [bool(lay) for lay in self._layout])[:-1]
        self._need_input_grad = [bool(b) for b in below]
        lowest = min((i for i, lay in enumerate(self._layout) if lay), default=0)
        self._backward_order = list(range(len(self.layers) - 1, lowest - 1, -1))

    # -- parameters ------------------------------------------------------------------
    def init(self, seed: int = 0, *, scheme: str | None = None,
             dtype: str | np.dtype = "float64", replicas: Sequence[int] | None = None
             ) -> Network:
        """Draw fresh parameters (and reset any state, e.g. running statistics).

        Parameters
        ----------
        seed : int
            Seed of the initial-weights stream (:mod:`handprop.core.streams`);
            parameters are drawn layer by layer.
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
        seeds = [seed] if replicas is None else list(replicas)
        if not seeds:
            raise ConfigError("replicas must list at least one seed")
        seeds = [check_seed(s) for s in seeds]
        check_memory(estimate_training_bytes(self, len(seeds), itemsize=dtype.itemsize),
                     f"network {self.name!r} ({self.num_params} parameters"
                     f"{f' x {len(seeds)} replicas' if replicas is not None else ''})")
        rows = np.stack([self._draw(init_generator(s), scheme) for s in seeds]).astype(dtype)
        states = np.stack([self._initial_state()] * len(seeds)).astype(dtype)
        self.replica_seeds = tuple(seeds) if replicas is not None else None
        self.init_used = scheme
        if replicas is None:
            rows, states = rows[0], states[0]
        self._set_buffers(rows, states)
        return self

    def _draw(self, rng: np.random.Generator, scheme: str) -> np.ndarray:
        flat = np.empty(self.num_params)
        for layer, lay in zip(self.layers, self._layout, strict=True):
            for local, (start, stop, _) in lay.items():
                flat[start:stop] = layer.init_param(local, rng, scheme).ravel()
        return flat

    def _initial_state(self) -> np.ndarray:
        flat = np.empty(self.num_state)
        for layer, lay in zip(self.layers, self._state_layout, strict=True):
            for local, (start, stop, _) in lay.items():
                flat[start:stop] = np.asarray(layer.init_state(local)).ravel()
        return flat

    def _set_buffers(self, flat: np.ndarray, buffer_flat: np.ndarray | None = None) -> None:
        """Point every named view at ``flat`` (parameters) and ``buffer_flat`` (state)."""
        if buffer_flat is None:
            buffer_flat = np.zeros((*flat.shape[:-1], self.num_state), flat.dtype)
        self.flat, self.buffer_flat = flat, buffer_flat
        self.dtype, self.rep_shape = flat.dtype, flat.shape[:-1]
        params = _views(self.layers, self._layout, flat)
        buffers = _views(self.layers, self._state_layout, buffer_flat)
        self.params = NamedViews(params, "parameter")
        self.buffers = NamedViews(buffers, "buffer")
        self._layer_params = [
            {**{local: params[f"{layer.name}.{local}"] for local in lay},
             **{local: buffers[f"{layer.name}.{local}"] for local in state},
             **{local: params[target] for local, target in layer.borrowed().items()}}
            for layer, lay, state in zip(self.layers, self._layout, self._state_layout,
                                         strict=True)]

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
            self.params[name] = value

    def with_replicas(self, count: int) -> None:
        """Repeat the current parameters and state into ``count`` replicas (all identical)."""
        flat = self._require_params()
        if self.rep_shape:
            raise ConfigError("network already has replicas")
        self.replica_seeds = None
        self._set_buffers(np.repeat(flat[None], count, axis=0),
                          np.repeat(self.buffer_flat[None], count, axis=0))

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
            hint = ""
            if shape == (*self.rep_shape, *self.input_shape):  # one image, no batch axis
                hint = (" (one image? give it a batch axis: x[None])" if not self.rep_shape
                        else " (one image per replica? add the batch axis: x[:, None])")
            raise ShapeError(f"network {self.name!r} expects input of shape {want}, got "
                             f"{shape}{hint}")
        if x.shape[len(self.rep_shape)] == 0:
            raise ShapeError(f"network {self.name!r} got an empty batch (N = 0) of shape "
                             f"{x.shape}")
        if x.dtype != self.dtype:
            if not np.issubdtype(x.dtype, np.number) or np.iscomplexobj(x):
                raise ShapeError(f"input must be real numbers, got dtype {x.dtype}")
            x = x.astype(self.dtype)
        return x

    def forward(self, x: np.ndarray, train: bool = True) -> tuple[np.ndarray, Tape]:
        """Run every layer; return the output and the tape (one cache per layer).

        x : (*rep, N, *input_shape) -> out : (*rep, N, *output_shape)
        ``train=False`` is evaluation mode (batch norm uses and keeps its running
        statistics); training mode updates them.
        """
        self._require_params()
        return self._forward(self._check_input(x), train)

    def _forward(self, x: np.ndarray, train: bool = True) -> tuple[np.ndarray, Tape]:
        """:meth:`forward` without the input checks (for loops that checked once)."""
        tape: Tape = []
        for layer, params in zip(self.layers, self._layer_params):  # noqa: B905
            x, cache = layer.forward(params, x, train)
            tape.append(cache)
        return x, tape

    def trace(self, x: np.ndarray) -> list[tuple[str, np.ndarray]]:
        """Every layer's output in evaluation mode, by layer name, in order (for pictures
        and inspection): x (*rep, N, *input_shape) -> [(name, (*rep, N, *shape)), ...]."""
        self._require_params()
        x, outputs = self._check_input(x), []
        for layer, params in zip(self.layers, self._layer_params, strict=True):
            x, _ = layer.forward(params, x, train=False)
            outputs.append((layer.name, x))
        return outputs

    def predict(self, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
        """Evaluation-mode forward pass in chunks of ``batch_size`` samples (no tape)."""
        self._require_params()
        x = self._check_input(x)
        batch_axis = len(self.rep_shape)
        count = x.shape[batch_axis]
        if count <= batch_size:
            return self._forward(x, train=False)[0]
        chunks = [
            self._forward(np.take(x, np.arange(i, min(i + batch_size, count)), axis=batch_axis),
                          train=False)[0]
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
        step = None if rule is None else Step()
        for i in self._backward_order:
            if step is None:  # exact: each layer's own backward, nothing else to track
                grad, param_grads = layers[i].backward(layer_params[i], tape[i], grad,
                                                       need_input_grad[i])
            else:
                if i == self._last_weight:
                    step.output_error = grad
                step.index, step.layer, step.params = i, layers[i], layer_params[i]
                step.cache, step.out_grad, step.need_input_grad = tape[i], grad, need_input_grad[i]
                grad, param_grads = rule.layer_backward(step)
            for local, value in param_grads.items():
                slot = slots[i][local]
                # A slot may already hold what a layer above that borrows this
                # parameter (see Layer.borrowed) sent it: add, don't overwrite.
                earlier = parts[slot]
                value = value.reshape(per_replica)
                parts[slot] = value if earlier is None else earlier + value
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
        # The named views are rebuilt on unpickling, so they point into the new buffers.
        state = self.__dict__.copy()
        for views in ("params", "buffers", "_layer_params"):
            state.pop(views, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if self.flat is not None:
            self._set_buffers(self.flat, self.buffer_flat)

    # -- helpers ---------------------------------------------------------------------
    def unflatten(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Views of a buffer laid out like ``self.flat``, by parameter name."""
        return _views(self.layers, self._layout, flat)

    def layer(self, name: str) -> Layer:
        """The layer called ``name``."""
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ConfigError(f"network {self.name!r} has no layer {name!r}")

    def layer_index(self, name: str) -> int:
        return self.layers.index(self.layer(name))

    def param_layout(self, index: int) -> Layout:
        """Where layer ``index``'s parameters sit in ``flat``: {local: (start, stop, shape)}
        (a layer's parameters are contiguous, in ``param_shapes`` order)."""
        return dict(self._layout[index])

    def state_layout(self, index: int) -> Layout:
        """Where layer ``index``'s state sits in ``buffer_flat``: {local: (start, stop, shape)}."""
        return dict(self._state_layout[index])

    def sends_grad(self, index: int) -> bool:
        """Whether layer ``index`` must send a gradient down in the backward pass (some
        layer below it has parameters)."""
        return self._need_input_grad[index]

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


def _check_structure(layers: list[Layer], input_shape: Sequence[int], loss: str,
                     init: str) -> tuple[int, ...]:
    """Refuse what cannot make a network; return the input shape as a tuple of ints."""
    from .ops.losses import LOSSES

    if not layers:
        raise ConfigError("a network needs at least one layer")
    if init not in INIT_SCHEMES:
        raise ConfigError(f"unknown init scheme {init!r}; choose from {', '.join(INIT_SCHEMES)}")
    if loss not in LOSSES:
        raise ConfigError(f"unknown loss {loss!r}; choose from {', '.join(LOSSES)}")
    names = [layer.name for layer in layers]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ConfigError(f"layer names must be unique; repeated: {', '.join(duplicates)}")
    whole = all(isinstance(s, int | np.integer) and not isinstance(s, bool) for s in
                (input_shape if isinstance(input_shape, Sequence) else [None]))
    if not whole or not input_shape or min(input_shape) < 1:
        raise ShapeError(f"input_shape must be a list of positive integers, got {input_shape!r}")
    return tuple(int(s) for s in input_shape)


def _layout(layers: list[Layer], shapes_of: Callable[[Layer], dict]) -> tuple[list[Layout], int]:
    """Where each layer's arrays sit in one flat buffer, and the buffer's size."""
    layout, offset = [], 0
    for layer in layers:
        local = {}
        for name, shape in shapes_of(layer).items():
            local[name] = (offset, offset + prod(shape), tuple(shape))
            offset += prod(shape)
        layout.append(local)
    return layout, offset


def _views(layers: list[Layer], layout: list[Layout], flat: np.ndarray) -> dict[str, np.ndarray]:
    """``{"<layer>.<local>": view into flat}`` (views keep any leading replica axes)."""
    rep = flat.shape[:-1]
    return {f"{layer.name}.{local}": flat[..., start:stop].reshape(*rep, *shape)
            for layer, lay in zip(layers, layout, strict=True)
            for local, (start, stop, shape) in lay.items()}
