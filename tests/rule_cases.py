"""Where each registered learning rule is tested against an independent computation.

``RULE_CASES[name]`` names the tests (``file::function``) that check what rule ``name``
computes against a reference that does not use the rule's own code (loop-by-loop
reference nets, explicit matrix products, PyTorch autograd, finite differences), and
the test networks the rule applies to. ``test_rule_registry.py`` fails for a rule in
:data:`handprop.rules.RULES` without an entry, for a named test that does not exist or
is parametrized without the rule, and runs every rule on every network listed here.
"""

from __future__ import annotations

from dataclasses import dataclass

ALL_NETS = ("seed", "small", "bn")


@dataclass(frozen=True)
class RuleCase:
    """tests : ``file::function`` of the reference tests; nets : networks of
    ``test_rule_registry.NETS`` the rule applies to (on the others it must refuse with a
    ConfigError)."""

    tests: tuple[str, ...]
    nets: tuple[str, ...] = ALL_NETS


SEED = "test_rules_seed.py"
FEEDBACK = "test_rules_feedback.py"
KP = "test_rules_kolen_pollack.py"
ARTICLE_TESTS = (f"{SEED}::test_rule_matches_loop_reference",
                 f"{SEED}::test_replicas_equal_separate_nets")
SIGN_TESTS = (f"{FEEDBACK}::test_feedback_rule_sends_through_b",
              f"{FEEDBACK}::test_replicas_equal_separate_nets",
              f"{FEEDBACK}::test_rule_reduces_training_loss")

RULE_CASES: dict[str, RuleCase] = {
    "exact": RuleCase((f"{SEED}::test_exact_matches_finite_differences", *ARTICLE_TESTS)),
    "seed-original": RuleCase((*ARTICLE_TESTS, f"{SEED}::test_seed_original_is_exact_except_conv1",
                               f"{SEED}::test_seed_original_routes_to_every_tied_maximum")),
    "seed-broken": RuleCase(ARTICLE_TESTS),
    "broken-upstream": RuleCase((*ARTICLE_TESTS, f"{SEED}::test_per_channel_broken_upstream")),
    "broken-mask": RuleCase(ARTICLE_TESTS),
    "broken-upstream-t": RuleCase((*ARTICLE_TESTS,
                                   f"{SEED}::test_transpose_on_non_square_maps_raises")),
    "broken-mask-t": RuleCase((*ARTICLE_TESTS,
                               f"{SEED}::test_transpose_on_non_square_maps_raises")),
    "broken-text": RuleCase((*ARTICLE_TESTS,
                             f"{SEED}::test_broken_text_mixes_lines_inside_one_layer")),
    "fa": RuleCase((*SIGN_TESTS, f"{FEEDBACK}::test_fa_sent_signal_uses_b_not_w",
                    f"{FEEDBACK}::test_fa_b_is_fixed_and_depends_only_on_the_seed")),
    "fa-glorot": RuleCase((*SIGN_TESTS,
                           f"{FEEDBACK}::test_fa_draws_b_with_the_scheme_actually_used_or_glorot")),
    "usf": RuleCase((*SIGN_TESTS, f"{FEEDBACK}::test_usf_b_follows_current_w")),
    "frsf": RuleCase((*SIGN_TESTS, f"{FEEDBACK}::test_frsf_magnitude_fixed_sign_follows_w")),
    "brsf": RuleCase((*SIGN_TESTS, f"{FEEDBACK}::test_brsf_redraws_magnitude_every_step")),
    "sign": RuleCase((*SIGN_TESTS, f"{FEEDBACK}::test_sign_b_is_the_sign_of_current_w")),
    "kp": RuleCase((f"{KP}::test_one_step_sends_through_b_then_b_learns_the_local_gradient",
                    f"{KP}::test_w_minus_b_decays_geometrically_under_sgd",
                    f"{KP}::test_b_changes_only_in_training_steps",
                    f"{KP}::test_replicas_equal_separate_runs")),
    "dfa": RuleCase((f"{FEEDBACK}::test_dfa_dense_net", f"{FEEDBACK}::test_dfa_seed_net",
                     f"{FEEDBACK}::test_replicas_equal_separate_nets",
                     f"{FEEDBACK}::test_rule_reduces_training_loss")),
    "dfa-biotorch": RuleCase((f"{FEEDBACK}::test_dfa_biotorch_matches_biotorchs_hooks",
                              f"{FEEDBACK}::test_replicas_equal_separate_nets",
                              f"{FEEDBACK}::test_rule_reduces_training_loss")),
}
