"""Kolen-Pollack learning: feedback weights that learn their way to the forward weights.

Kolen & Pollack (1994), "Backpropagation without weight transport", Proc. IEEE ICNN;
revived by Akrout, Wilson, Humphreys, Lillicrap & Tweed (2019), "Deep learning without
weight transport", NeurIPS (their section 3, "Kolen-Pollack algorithm").

Like feedback alignment, a weight layer with forward weights W sends the gradient down
through a separate matrix B of W's shape, and keeps its exact local weight gradient
``g = delta x^T`` (dense; for conv, the input windows correlated with delta). Unlike FA,
B is not fixed: after each training step's backward pass, B receives the same gradient
as W, with its own weight decay::

    B <- B - lr * (g + weight_decay * B)

Nothing is transported: ``g`` is built from delta and x, which both ends of a synapse
see. If W is trained by plain SGD with the same learning rate and weight decay
(``W <- W - lr * (g + weight_decay * W)``), both get identical increments and their
difference only decays::

    W_t - B_t = (1 - lr * weight_decay)**t * (W_0 - B_0)

so B converges to W and the rule to back-propagation. Under other optimizers B still
learns from the same local gradients, without that guarantee.

B starts as feedback alignment's B (the same draw, from the same stream of the run's
seed), so the first step of ``kp`` is exactly the first step of ``fa``. B changes only
in training steps (after :meth:`begin_step`): a probe's backward pass (alignment
measurements) leaves it alone, and so does a replica that sits a step out. B is part of
the rule's state, saved in checkpoints.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from .backward import Feedback, Learning
from .feedback import FeedbackAlignment
from .registry import register_rule

DEFAULTS = (0.01, 0.01)  # lr, weight_decay


@register_rule("kp", "Kolen-Pollack: B gets W's own gradient and decays, so B -> W (Kolen & "
               "Pollack 1994, Akrout et al. 2019)", family="random-feedback")
class KolenPollack(FeedbackAlignment):
    """B starts as FA's and learns: ``B <- B - lr * (g + weight_decay * B)`` after each
    training step (``g`` the layer's local weight gradient; see
    :meth:`~handprop.rules.feedback.FeedbackRule.learn`)."""

    name = "kp"

    def __init__(self, lr: float = DEFAULTS[0], weight_decay: float = DEFAULTS[1]) -> None:
        super().__init__()
        self.lr, self.weight_decay = float(lr), float(weight_decay)

    def feedback_for(self, index: int) -> Feedback:
        return Feedback(base="none", array=True,
                        learning=Learning(self.lr, self.weight_decay))

    def state(self) -> dict[str, Any]:
        return {key: value.copy() for key, value in super().state().items()}  # B moves on

    def load_state(self, state: Mapping[str, Any]) -> None:
        for i in self.matrices:  # copies: B is updated in place
            self.matrices[i] = np.array(state[f"B{i}"], dtype=self.net.dtype)

    def describe(self) -> str:
        if (self.lr, self.weight_decay) == DEFAULTS:
            return self.name
        return f"{self.name}[lr={self.lr:g},weight_decay={self.weight_decay:g}]"
