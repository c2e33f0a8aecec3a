"""Rules from the literature that replace the forward weights in the backward pass.

For a weight layer with forward weights W, exact back-propagation sends down
``dL/dx = delta @ W`` (dense) or the full convolution of delta with W (conv). These
rules keep the exact *local* weight gradient (delta against the layer's true input)
and send the gradient down through another matrix B of W's shape:

* ``fa`` -- feedback alignment (Lillicrap et al. 2016): B is random and fixed, drawn
  once from the run's seed with the same distribution as the layer's initial weights.
* ``usf`` -- uniform sign-concordant feedback (Liao et al. 2016): B = s * sign(W),
  recomputed from the current W at every step, with the scale of Xiao et al. 2018 /
  BioTorch: ``s = sqrt(2 / (fan_in + fan_out))``.
* ``frsf`` -- fixed random-magnitude sign-concordant feedback: B = |M| * sign(W), M drawn
  once (Glorot-uniform) and fixed.
* ``brsf`` -- batchwise random-magnitude sign-concordant feedback: as frsf, but M is
  redrawn before every batch.
* ``fa-glorot`` -- feedback alignment with B drawn Glorot-uniform whatever the forward
  initialisation (BioTorch's default).
* ``dfa`` -- direct feedback alignment (Nokland 2016): the output error e (the gradient
  at the last weight layer's output) is sent straight to every hidden layer through a
  fixed random matrix B_l (K x D_l, Glorot-uniform): the gradient at the output of hidden
  layer l's activation is ``e @ B_l`` (for a conv layer, one value per channel and
  position, injected *before* pooling), then multiplied by the activation's derivative.
  The output layer learns with its exact gradient.
* ``dfa-biotorch`` -- direct feedback alignment as BioTorch implements it: every weight
  layer's *input* gradient is replaced by the projected error, ``e @ B_l`` for a dense
  layer (B_l: K x in) and, for a conv layer, the input gradient of a convolution with a
  conv-shaped B_l (K, C_in, kh, kw) of e spread over every output position. The error
  therefore enters each block *after* its pooling and passes back through the pool and
  the activation exactly; the output layer's input gradient is projected too.

Random matrices are drawn per replica from the rule's own stream of the run's seed
(:mod:`handprop.core.streams`, sub-stream: the layer), so a run's feedback depends only
on its own seed.
"""

from __future__ import annotations

from collections.abc import Mapping
from math import prod, sqrt
from typing import Any

import numpy as np

from ..core.errors import ConfigError
from ..core.layers import ActivationLayer
from ..core.ops.conv import Conv2d
from ..core.ops.dense import Dense
from ..core.streams import Stream, generator
from .backward import BackwardDescription, Feedback, WeightGrads
from .base import LearningRule, block_names, replica_seeds, weight_layer_indices
from .registry import register_rule


def _stack(draws: list[np.ndarray], rep_shape: tuple[int, ...], dtype) -> np.ndarray:
    array = np.stack(draws) if rep_shape else draws[0]
    return array.astype(dtype)


def _glorot_uniform(layer, rng: np.random.Generator) -> np.ndarray:
    bound = sqrt(6 / (layer.fan_in() + layer.fan_out()))
    return rng.uniform(-bound, bound, size=layer.param_shapes()["weight"])


class KeptMatrices:
    """For a rule that keeps one matrix per layer in a dict (``matrices_attribute``): its
    :meth:`feedback_array`, and a state of those matrices (``"B3"``: layer 3's, with
    ``state_prefix`` "B"), loaded back in the network's dtype."""

    matrices_attribute, state_prefix = "matrices", "B"

    def feedback_array(self, index: int) -> np.ndarray | None:
        return getattr(self, self.matrices_attribute).get(index)

    def state(self) -> dict[str, Any]:
        kept = getattr(self, self.matrices_attribute)
        return {f"{self.state_prefix}{i}": m for i, m in kept.items()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        kept = getattr(self, self.matrices_attribute)
        for i in kept:
            kept[i] = np.asarray(state[f"{self.state_prefix}{i}"], dtype=self.net.dtype)


class FeedbackRule(LearningRule):
    """A rule that sends each of its weight layers' input gradient down through a matrix
    B instead of W, and keeps the layers' exact local weight (and bias) gradients.

    A subclass says what B is, in one of two ways:

    * :meth:`feedback_for` returns a :class:`~handprop.rules.backward.Feedback`: B composed
      of W, sign(W), a constant and a matrix the rule keeps (:meth:`feedback_array`). Both
      engines run such a rule: the compiled engine forms B in its kernels from the same
      description. ``B = sign(W)`` is ``Feedback(base="sign")``.
    * or it overrides :meth:`feedback_matrix`: any NumPy function of the current W. Then
      only the NumPy engine runs it (the compiled engine cannot call Python per step, and
      says so).

    ``setup()`` draws whatever the rule keeps (called from ``bind``, with ``self.owned``,
    the indices of its weight layers, and ``self.seeds``, one seed per replica, set).
    A feedback matrix that learns (``Feedback(learning=...)``) is updated by
    :meth:`learn` once per training step, after it has sent the gradient down.
    """

    def bind(self, net, seed=None, blocks=None) -> None:
        super().bind(net, seed, blocks)
        self.seeds = replica_seeds(net, seed)
        self.owned = {i for i in weight_layer_indices(net) if net.layers[i].name in self.blocks}
        self._learners: frozenset[int] = frozenset()  # layers whose B learns
        self._learning: set[int] = set()  # ... and still does in this training step
        self._active: np.ndarray | None = None
        self.setup()
        self._learners = frozenset(i for i in self.owned
                                   if self.feedback_for(i).learning is not None)

    def setup(self) -> None:
        """Draw whatever the rule keeps (called from bind)."""

    def feedback_for(self, index: int) -> Feedback:
        """B of weight layer ``index`` as a :class:`~.backward.Feedback`; the default,
        ``base="custom"``, means :meth:`feedback_matrix` computes it."""
        return Feedback(base="custom")

    def feedback_matrix(self, index: int, weight: np.ndarray) -> np.ndarray:
        """B for the layer's current ``weight`` (NumPy): what :meth:`feedback_for` says.
        Override it for any other function of W (the NumPy engine then runs the rule)."""
        return super().feedback_matrix(index, weight)

    def backward_description(self) -> BackwardDescription:
        return BackwardDescription(weights={i: WeightGrads(self.feedback_for(i))
                                            for i in sorted(self.owned)})

    def _draw(self, index: int, stream: Stream, draw) -> np.ndarray:
        layer = self.net.layers[index]
        draws = [draw(layer, generator(seed, stream, index)) for seed in self.seeds]
        return _stack(draws, self.net.rep_shape, self.net.dtype)

    def begin_step(self, active: np.ndarray | None = None) -> None:
        self._learning, self._active = set(self._learners), active

    def learn(self, index: int, weight_grad: np.ndarray) -> None:
        """One SGD step of a learning B with W's local gradient, once per training step
        and only for the replicas taking it (a probe's backward pass leaves B alone)."""
        if index not in self._learning:
            return
        self._learning.discard(index)
        learning = self.description().weights[index].feedback.learning
        feedback = self.feedback_array(index)
        change = learning.lr * (weight_grad + learning.weight_decay * feedback)
        if self._active is None or not self.net.rep_shape:
            feedback -= change
        else:
            feedback[self._active] -= change[self._active]

    def feedback(self) -> dict[str, np.ndarray]:
        return {f"{self.net.layers[i].name}.weight":
                self.feedback_matrix(i, self.net.params[f"{self.net.layers[i].name}.weight"])
                for i in sorted(self.owned)}


@register_rule("fa", "feedback alignment: fixed random B instead of W (Lillicrap et al. 2016)",
               family="random-feedback")
class FeedbackAlignment(KeptMatrices, FeedbackRule):
    """B random and fixed, distributed like the layer's initial weights (drawn with the
    scheme the network was initialised with), or Glorot-uniform (``b_init="glorot"``)."""

    name = "fa"

    def __init__(self, b_init: str = "forward") -> None:
        super().__init__()
        if b_init not in ("forward", "glorot"):
            raise ConfigError(f"rule fa: b_init must be 'forward' or 'glorot', got {b_init!r}")
        self.b_init = b_init

    def setup(self) -> None:
        scheme = self.net.init_used or self.net.init_scheme

        def draw(layer, rng):
            if self.b_init == "glorot":
                return _glorot_uniform(layer, rng)
            return layer.init_param("weight", rng, scheme)

        self.matrices = {i: self._draw(i, Stream.FEEDBACK_FA, draw) for i in self.owned}

    def describe(self) -> str:
        return "fa-glorot" if self.b_init == "glorot" else self.name

    def feedback_for(self, index: int) -> Feedback:
        return Feedback(base="none", array=True)


register_rule("fa-glorot", "feedback alignment with Glorot-uniform B (BioTorch's default)",
              family="random-feedback", factory=lambda: FeedbackAlignment("glorot"))


@register_rule("usf", "uniform sign symmetry: B = s * sign(W) (Liao et al. 2016, Xiao et al. "
               "2018)", family="sign-symmetry")
class UniformSignSymmetry(FeedbackRule):
    """B = sqrt(2 / (fan_in + fan_out)) * sign(W), from the current W."""

    name = "usf"

    def setup(self) -> None:
        self.scales = {i: sqrt(2 / (self.net.layers[i].fan_in() + self.net.layers[i].fan_out()))
                       for i in self.owned}

    def feedback_for(self, index: int) -> Feedback:
        return Feedback(base="sign", scale=self.scales[index])


@register_rule("frsf", "fixed random-magnitude sign symmetry: B = |M| * sign(W), M fixed",
               family="sign-symmetry")
class FixedRandomSignSymmetry(KeptMatrices, FeedbackRule):
    """B = |M| * sign(W), M drawn once."""

    name = "frsf"
    matrices_attribute, state_prefix = "magnitudes", "M"

    def setup(self) -> None:
        self.magnitudes = {i: np.abs(self._draw(i, Stream.FEEDBACK_FRSF, _glorot_uniform))
                           for i in self.owned}

    def feedback_for(self, index: int) -> Feedback:
        return Feedback(base="sign", array=True)


@register_rule("brsf", "batchwise random-magnitude sign symmetry: M redrawn every batch",
               family="sign-symmetry")
class BatchRandomSignSymmetry(FixedRandomSignSymmetry):
    """B = |M| * sign(W), M redrawn before every batch."""

    name = "brsf"

    def setup(self) -> None:
        self.rngs = [generator(seed, Stream.FEEDBACK_BRSF) for seed in self.seeds]
        self.magnitudes = {}
        self.begin_step()

    def feedback_for(self, index: int) -> Feedback:
        return Feedback(base="sign", array=True, redrawn=True)

    def begin_step(self, active: np.ndarray | None = None) -> None:
        super().begin_step(active)
        # Replicas that sit a step out keep their magnitudes and do not advance their
        # generator, so each replica draws exactly what it would alone.
        for i in sorted(self.owned):
            layer = self.net.layers[i]
            current = self.magnitudes.get(i)
            rows = [np.abs(_glorot_uniform(layer, rng))
                    if current is None or active is None or active[r]
                    else (current[r] if self.net.rep_shape else current)
                    for r, rng in enumerate(self.rngs)]
            self.magnitudes[i] = _stack(rows, self.net.rep_shape, self.net.dtype)

    def state(self) -> dict[str, Any]:
        return {**super().state(),
                "rng": [rng.bit_generator.state for rng in self.rngs]}

    def load_state(self, state: Mapping[str, Any]) -> None:
        super().load_state(state)
        for rng, saved in zip(self.rngs, state["rng"], strict=True):
            rng.bit_generator.state = saved


@register_rule("dfa", "direct feedback alignment: output error to every hidden layer "
               "(Nokland 2016)", family="random-feedback")
class DirectFeedbackAlignment(KeptMatrices, LearningRule):
    """The output error sent to every hidden layer through a fixed random matrix,
    injected at the output of the layer's activation (the first activation in its
    block; a block without one is refused)."""

    name = "dfa"

    def bind(self, net, seed=None, blocks=None) -> None:
        super().bind(net, seed, blocks)
        seeds = replica_seeds(net, seed)
        weights = weight_layer_indices(net)
        self.output_size = prod(net.shapes[weights[-1] + 1])
        hidden = [i for i in weights[:-1] if net.layers[i].name in self.blocks]
        self.matrices: dict[int, np.ndarray] = {}  # injection layer index -> B (*rep, K, D)
        self.hidden = set(hidden)
        for i in hidden:
            inject = _activation_of(net, i)
            size = prod(net.shapes[inject + 1])
            bound = sqrt(6 / (self.output_size + size))  # Glorot-uniform on (K, D)
            draws = [generator(s, Stream.FEEDBACK_DFA, i).uniform(
                -bound, bound, size=(self.output_size, size)) for s in seeds]
            self.matrices[inject] = _stack(draws, net.rep_shape, net.dtype)
        # A hidden layer whose layer below is also fed directly needs no input gradient.
        below = {i: max((j for j in weights if j < i), default=None) for i in hidden}
        self.no_input_grad = {i for i, j in below.items() if j in self.hidden}

    def backward_description(self) -> BackwardDescription:
        return BackwardDescription(inject=frozenset(self.matrices),
                                   no_input_grad=frozenset(self.no_input_grad))

    def feedback(self) -> dict[str, np.ndarray]:
        return {}

    def direct_matrices(self) -> dict[str, np.ndarray]:
        """B_l by the name of the layer whose output receives the error."""
        return {self.net.layers[i].name: m for i, m in self.matrices.items()}



def _activation_of(net, index: int) -> int:
    """The first activation layer in weight layer ``index``'s block (where DFA injects)."""
    owners = block_names(net)
    for j in range(index + 1, len(net.layers)):
        if owners[j] != net.layers[index].name:
            break
        if isinstance(net.layers[j], ActivationLayer):
            return j
    raise ConfigError(f"rule dfa: layer {net.layers[index].name} has no activation in its block "
                      "(DFA injects the error at a hidden layer's activation output)")


@register_rule("dfa-biotorch", "direct feedback alignment as BioTorch does it: the projected "
               "error replaces each weight layer's input gradient", family="random-feedback")
class DirectFeedbackAlignmentInput(KeptMatrices, LearningRule):
    """DFA with the error injected at each weight layer's input (see the module notes)."""

    name = "dfa-biotorch"

    def bind(self, net, seed=None, blocks=None) -> None:
        super().bind(net, seed, blocks)
        seeds = replica_seeds(net, seed)
        weights = weight_layer_indices(net)
        self.output_size = prod(net.shapes[weights[-1] + 1])
        self.matrices: dict[int, np.ndarray] = {}  # weight layer index -> B
        for i in weights:
            layer = net.layers[i]
            if layer.name not in self.blocks:
                continue
            if isinstance(layer, Conv2d):
                shape = (self.output_size, layer.in_shape[0], *layer.kernel_size)
                receptive = prod(layer.kernel_size)
                fans = (shape[1] * receptive, shape[0] * receptive)  # torch's xavier fans
            elif isinstance(layer, Dense):
                shape, fans = (self.output_size, layer.in_shape[0]), (layer.in_shape[0],
                                                                      self.output_size)
            else:
                raise ConfigError(f"rule dfa-biotorch: no projection for layer {layer.name}")
            bound = sqrt(6 / sum(fans))
            draws = [generator(s, Stream.FEEDBACK_DFA, i).uniform(-bound, bound, size=shape)
                     for s in seeds]
            self.matrices[i] = _stack(draws, net.rep_shape, net.dtype)

    def backward_description(self) -> BackwardDescription:
        return BackwardDescription(weights={i: WeightGrads(projected=True)
                                            for i in sorted(self.matrices)})

