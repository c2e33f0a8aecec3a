"""``sign``: sign symmetry without magnitudes, B = sign(W).

Each weight layer sends its input gradient down through B = sign(W), formed from the
current W at every step, and keeps its exact local weight (and bias) gradient: the
sign-concordant feedback of Liao, Leibo & Poggio (2016), "How important is weight
symmetry in backpropagation?", with the magnitudes dropped. Unlike ``usf`` (B = s *
sign(W), s = sqrt(2 / (fan_in + fan_out))) every entry of B is +1 or -1 (0 where W is),
so what is sent down is not rescaled to the layer's fans.

B is *described* (``Feedback(base="sign")``), not computed in Python, so both training
engines run the rule (see :class:`~handprop.rules.feedback.FeedbackRule`).
"""

from __future__ import annotations

from .backward import Feedback
from .feedback import FeedbackRule
from .registry import register_rule


@register_rule("sign", "sign symmetry without magnitudes: B = sign(W) (Liao et al. 2016)",
               family="sign-symmetry")
class SignSymmetry(FeedbackRule):
    """B = sign(W), from the current W."""

    name = "sign"

    def feedback_for(self, index: int) -> Feedback:
        return Feedback(base="sign")
