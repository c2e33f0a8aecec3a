"""The article's learning rules (seed-spec sections 2-4) against independent computations.

Expected gradients come from a loop-by-loop reference of the seed net written like the
article's code (``helpers.ref_*``: one image, one map at a time, explicit correlation
loops, max-pool masks with ``==``, ``repeat`` upsampling), never from the rules' own
helpers. Float64, fixed seeds, random upstream gradients.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
from helpers import (
    FD_TOL,
    REF_ACT,
    SEED_ACT1,
    SEED_ACT2,
    layer_inputs,
    ref_convolve_valid,
    ref_correlate_valid,
    ref_input_grad,
    ref_mask_first,
    ref_mask_ties,
    ref_rot180,
    ref_seed_forward,
    ref_up,
    spy,
)

from handprop import Activation, ConfigError, Conv2d, Dense, Flatten, MaxPool2d, Network, seed_net
from handprop.core.gradcheck import numerical_grad, rel_error
from handprop.core.presets import seed_as_run
from handprop.rules import RuleSet, make_rule, parse_rule
from handprop.rules.base import Exact
from handprop.rules.seed import BrokenText, BrokenUpstream

TOL = 1e-12
WEIGHTS = ("conv1.weight", "conv2.weight", "fc3.weight", "fc4.weight", "fc5.weight")
DENSE = ("fc3.weight", "fc4.weight", "fc5.weight")
POOL1, CONV2, POOL2 = 2, 3, 5  # layer indices in seed_net()


# -- the reference backward pass ----------------------------------------------------------

@dataclass(frozen=True)
class Block:
    """What a rule does in one conv block of the reference.

    ties: the routing mask marks every tied maximum (else: the first, row-major).
    kinds: per channel "plain" (delta = U * D), "green" (T(U) * D) or "red"
        ((T(mask) * up(G)) * D); None = all plain.
    rot_weight: the weight gradient is that of rot180(delta) (the article's broken code).
    rot_sent: the gradient sent to the conv layer below is rotated 180 degrees per map.
    """

    ties: bool = False
    kinds: tuple[str, ...] | None = None
    transform: str = "rot180"
    rot_weight: bool = False
    rot_sent: bool = False


def _transform(name: str):
    return ref_rot180 if name == "rot180" else (lambda m: m.T)


def ref_delta(a, z, act, g, block: Block, channel: int) -> np.ndarray:
    """delta of one conv map from its activation a, pre-activation z and pooled gradient g."""
    mask = ref_mask_ties(a) if block.ties else ref_mask_first(a)
    up = ref_up(g)
    d = REF_ACT[act][1](z)
    T = _transform(block.transform)
    kind = block.kinds[channel] if block.kinds else "plain"
    if kind == "plain":
        u = mask * up
    elif kind == "green":
        u = T(mask * up)
    else:
        assert kind == "red"
        u = T(mask) * up
    return u * d


def ref_layer1(s: dict, p: dict, g1: np.ndarray, block: Block) -> np.ndarray:
    """conv1's weight gradient for one image, given the gradient g1 (2, 4, 4) at pool1's output."""
    grad = np.zeros((2, 1, 3, 3))
    for c in range(2):
        delta = ref_delta(s["a1"][c], s["z1"][c], SEED_ACT1[c], g1[c], block, c)
        if block.rot_weight:
            delta = ref_rot180(delta)
        grad[c, 0] = ref_correlate_valid(np.pad(s["x"], 1), delta)
    return grad


def ref_backward_one(p: dict, image: np.ndarray, r: np.ndarray, b1: Block, b2: Block,
                     as_run: bool = False) -> dict:
    """Every weight gradient for one image and upstream r (1,), plus ``G1`` (what conv2
    sends to pool1's output) and ``G2`` (the gradient at pool2's output).

    ``as_run``: the forward pass of the author's code, whose layer 2 applies conv1's
    second kernel to all four maps; the backward still uses W2 (as the code did)."""
    forward = p
    if as_run:
        forward = {**p, "conv2.weight": np.repeat(p["conv1.weight"][1:2], 4, axis=0)}
    s = ref_seed_forward(forward, image)
    out: dict = {}
    d5 = r * REF_ACT["sigmoid"][1](s["h5"])
    out["fc5.weight"] = np.outer(d5, s["a4"])
    d4 = (p["fc5.weight"].T @ d5) * (1 - s["a4"] ** 2)
    out["fc4.weight"] = np.outer(d4, s["a3"])
    d3 = (p["fc4.weight"].T @ d4) / (1 + s["h3"] ** 2)
    out["fc3.weight"] = np.outer(d3, s["f"])
    g2 = (p["fc3.weight"].T @ d3).reshape(4, 2, 2)
    out["G2"] = g2
    w2 = p["conv2.weight"]
    grad2 = np.zeros((4, 1, 3, 3))
    g1 = np.zeros((2, 4, 4))
    for o in range(4):
        delta = ref_delta(s["a2"][o], s["z2"][o], SEED_ACT2[o], g2[o], b2, o)
        g1[o // 2] += ref_input_grad(delta, w2[o, 0])
        wdelta = ref_rot180(delta) if b2.rot_weight else delta
        grad2[o, 0] = ref_correlate_valid(np.pad(s["p1"][o // 2], 1), wdelta)
    if b2.rot_sent:
        g1 = np.stack([ref_rot180(m) for m in g1])
    out["conv2.weight"] = grad2
    out["G1"] = g1
    out["conv1.weight"] = ref_layer1(s, p, g1, b1)
    return out


def ref_backward(net: Network, x: np.ndarray, R: np.ndarray, b1: Block, b2: Block,
                 as_run: bool = False) -> dict:
    """ref_backward_one summed over the batch (G1, G2 stacked per image)."""
    p = {name: net.params[name] for name in WEIGHTS}
    per_image = [ref_backward_one(p, x[n, 0], R[n], b1, b2, as_run) for n in range(x.shape[0])]
    out = {name: sum(g[name] for g in per_image) for name in WEIGHTS}
    out["G1"] = np.stack([g["G1"] for g in per_image])
    out["G2"] = np.stack([g["G2"] for g in per_image])
    return out


GREEN2, GREEN4 = ("green",) * 2, ("green",) * 4
RED2, RED4 = ("red",) * 2, ("red",) * 4
REF_RULES: dict[str, tuple[Block, Block]] = {
    "exact": (Block(), Block()),
    "seed-original": (Block(ties=True), Block(ties=True, rot_sent=True)),
    "seed-broken": (
        Block(ties=True, kinds=GREEN2, rot_weight=True),
        Block(ties=True, kinds=("green", "green", "green", "red"), rot_weight=True,
              rot_sent=True),
    ),
    "broken-upstream": (Block(kinds=GREEN2), Block(kinds=GREEN4)),
    "broken-upstream-t": (Block(kinds=GREEN2, transform="transpose"),
                          Block(kinds=GREEN4, transform="transpose")),
    "broken-mask": (Block(kinds=RED2), Block(kinds=RED4)),
    "broken-mask-t": (Block(kinds=RED2, transform="transpose"),
                      Block(kinds=RED4, transform="transpose")),
    "broken-text": (Block(kinds=GREEN2, transform="transpose"),
                    Block(kinds=("green", "green", "green", "red"), transform="transpose")),
    "broken-text:rot180": (Block(kinds=GREEN2),
                           Block(kinds=("green", "green", "green", "red"))),
}


# -- cases --------------------------------------------------------------------------------

def random_case(seed: int, scheme: str) -> tuple[Network, np.ndarray, np.ndarray]:
    """A seed net (float64) with 3 random 8x8 images and a random upstream gradient."""
    net = seed_net()
    net.init(seed=seed, scheme=scheme)
    rng = np.random.default_rng(100 + seed)
    return net, rng.standard_normal((3, 1, 8, 8)), rng.standard_normal((3, 1))


def tie_case() -> tuple[Network, np.ndarray, np.ndarray]:
    """Exact ties by construction. conv1's kernels and conv2's kernel d have only a
    (positive) centre tap, so those maps are exactly w * input. Image 0 has a 3-way tied
    maximum in pool1 window (1, 2), image 1 a 2-way tie in window (2, 0) (both layer-1
    channels); image 2 has the same maximum 2.5 in the four pool1 windows of its top-left
    4x4 block, so layer-2 map d has a 4-way tie in pool2 window (0, 0) (a red channel)."""
    net, x, R = random_case(5, "lecun")
    w1, w2 = net.params["conv1.weight"], net.params["conv2.weight"]
    w1[...] = 0.0
    w1[0, 0, 1, 1], w1[1, 0, 1, 1] = 0.8, 0.6
    w2[3] = 0.0
    w2[3, 0, 1, 1] = 0.9
    x[0, 0, 2:4, 4:6] = [[1.5, 1.5], [0.3, 1.5]]
    x[1, 0, 4:6, 0:2] = [[0.1, 2.0], [2.0, -1.0]]
    x[2, 0, :4, :4] = np.minimum(x[2, 0, :4, :4], 2.0)
    x[2, 0, 0, 0] = x[2, 0, 1, 3] = x[2, 0, 2, 1] = x[2, 0, 3, 3] = 2.5
    return net, x, R


CASES = {
    "normal0": lambda: random_case(0, "normal"),
    "lecun1": lambda: random_case(1, "lecun"),
    "lecun2": lambda: random_case(2, "lecun"),
}
ALL_CASES = {**CASES, "ties": tie_case}


def run(net, x, R, spec):
    """Gradients of ``spec`` (a rule name, spec string or rule object; ``name:transform``
    sets the map transform) and its spy record."""
    transform = None
    if isinstance(spec, str) and ":" in spec:
        spec, transform = spec.split(":")
    rule = make_rule(spec, net, transform=transform)
    record = spy(rule)
    out, tape = net.forward(x)
    return net.backward(tape, R, rule), record


def assert_close(actual, expected, what, tol=TOL):
    assert actual.shape == expected.shape, (what, actual.shape, expected.shape)
    assert np.abs(expected).max() > 0, f"{what}: expected gradient is all zero"
    err = rel_error(actual, expected)
    assert err <= tol, f"{what}: relative error {err:.3g} > {tol:g}"


def assert_differ(a, b, what, margin=1e-3):
    err = rel_error(a, b)
    assert err > margin, f"{what}: expected a difference, relative difference {err:.3g}"


# -- the reference itself ------------------------------------------------------------------

@pytest.mark.parametrize("case", ALL_CASES)
def test_reference_forward_matches_network(case):
    """The loop reference computes the same forward pass as handprop's seed net."""
    net, x, _ = ALL_CASES[case]()
    out, _ = net.forward(x)
    p = {name: net.params[name] for name in WEIGHTS}
    ref = np.stack([ref_seed_forward(p, x[n, 0])["a5"] for n in range(len(x))])
    assert_close(out, ref, "output")


# -- 1. exact -----------------------------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_exact_matches_finite_differences(case):
    """make_rule("exact") gives the finite-difference gradient of sum(R * net(x)) for
    every parameter (and so does the loop reference, which validates it)."""
    net, x, R = CASES[case]()
    grads, _ = run(net, x, R, "exact")
    ref = ref_backward(net, x, R, *REF_RULES["exact"])

    def objective() -> float:
        return float(np.sum(R * net.forward(x)[0]))

    for name, param in net.params.items():
        numeric = numerical_grad(objective, param)
        assert_close(grads[name], numeric, name, FD_TOL)
        assert_close(ref[name], numeric, f"reference {name}", FD_TOL)


# -- 2-5. every article rule against the reference ----------------------------------------

@pytest.mark.parametrize("case", ALL_CASES)
@pytest.mark.parametrize("spec", REF_RULES)
def test_rule_matches_loop_reference(spec, case):
    """Every weight gradient of the rule equals the independent per-channel computation of
    seed-spec sections 3-4 (tied and tie-free inputs), to 1e-12."""
    net, x, R = ALL_CASES[case]()
    grads, record = run(net, x, R, spec)
    ref = ref_backward(net, x, R, *REF_RULES[spec])
    for name in WEIGHTS:
        assert_close(grads[name], ref[name], f"{spec} {name}")
    # What conv2 sends down (the gradient at pool1's output) matches too.
    assert_close(record[CONV2][1], ref["G1"], f"{spec} conv2 sends")


@pytest.mark.parametrize("spec", [s for s in REF_RULES if s != "exact"])
def test_dense_layers_stay_exact(spec):
    """Every article rule leaves the dense layers' gradients exact."""
    net, x, R = CASES["normal0"]()
    grads, _ = run(net, x, R, spec)
    exact, _ = run(net, x, R, "exact")
    for name in DENSE:
        assert_close(grads[name], exact[name], f"{spec} {name}")


@pytest.mark.parametrize("case", CASES)
def test_seed_original_is_exact_except_conv1(case):
    """On tie-free data seed-original equals exact for conv2 and the dense layers, but
    not for conv1 (conv2 sends a rotated gradient)."""
    net, x, R = CASES[case]()
    grads, _ = run(net, x, R, "seed-original")
    exact, _ = run(net, x, R, "exact")
    for name in ("conv2.weight", *DENSE):
        assert_close(grads[name], exact[name], name)
    assert_differ(grads["conv1.weight"], exact["conv1.weight"], "conv1.weight")


def _rest_from_conv2(net, h):
    """The seed net from conv2 upward, applied to a pool1 output ``h``."""
    for layer in net.layers[CONV2:]:
        params = {local: net.params[f"{layer.name}.{local}"] for local in layer.param_shapes()}
        h, _ = layer.forward(params, h)
    return h


@pytest.mark.parametrize("case", CASES)
def test_seed_original_sends_rot180_of_finite_difference_gradient(case):
    """seed-original's conv-to-conv input gradient is rot180 (per 4x4 map) of the
    finite-difference gradient at pool1's output; exact's is that gradient itself; and
    seed-original's conv1 weight gradient is exact backprop from the rotated gradient."""
    net, x, R = CASES[case]()
    pooled = layer_inputs(net, x)[CONV2].copy()
    numeric = numerical_grad(lambda: float(np.sum(R * _rest_from_conv2(net, pooled))), pooled)
    _, exact_record = run(net, x, R, "exact")
    grads, record = run(net, x, R, "seed-original")
    assert_close(exact_record[CONV2][1], numeric, "exact conv2 sends", FD_TOL)
    assert_close(record[CONV2][1], numeric[..., ::-1, ::-1], "seed-original conv2 sends", FD_TOL)
    assert_differ(record[CONV2][1], numeric, "seed-original conv2 sends")
    p = {name: net.params[name] for name in WEIGHTS}
    conv1 = sum(
        ref_layer1(ref_seed_forward(p, x[n, 0]), p, numeric[n, :, ::-1, ::-1], Block(ties=True))
        for n in range(len(x))
    )
    assert_close(grads["conv1.weight"], conv1, "conv1.weight", FD_TOL)


def test_article_formula_is_rot180_of_finite_differences():
    """Seed-spec section 3 literally: with the article's true convolution and its kernel
    w2a (= rot180 of handprop's), grad_1_part_a = convolve2d(pad(w2a, 2), rot180(delta2a),
    'valid') equals rot180 of the finite-difference gradient of the layer's 4x4 input."""
    rng = np.random.default_rng(11)
    for _ in range(3):
        layer1_map = rng.standard_normal((4, 4))
        w2a = rng.standard_normal((3, 3))
        delta2a = rng.standard_normal((4, 4))

        def layer2(m, w2a=w2a):
            return ref_convolve_valid(np.pad(m, 1), w2a)  # the article's forward

        # The article's true convolution is handprop's correlation with the flipped kernel.
        assert_close(layer2(layer1_map),
                     ref_correlate_valid(np.pad(layer1_map, 1), ref_rot180(w2a)), "forward")
        numeric = numerical_grad(lambda w2a=w2a, m=layer1_map, d=delta2a:
                                 float(np.sum(d * layer2(m, w2a))), layer1_map)
        article = ref_convolve_valid(np.pad(w2a, 2), ref_rot180(delta2a))
        assert article.shape == (4, 4)
        assert_close(article, ref_rot180(numeric), "article formula", FD_TOL)
        assert_differ(article, numeric, "article formula vs exact")


# -- 3. ties --------------------------------------------------------------------------------

def test_seed_original_routes_to_every_tied_maximum():
    """With tied maxima in a pool window (pool1 and pool2), seed-original sends the
    window's gradient to every tied position; exact sends it to exactly one (the first)."""
    net, x, R = tie_case()
    ties = [(0, [(2, 4), (2, 5), (3, 5)], (1, 2)), (1, [(4, 1), (5, 0)], (2, 0))]
    for spec in ("seed-original", "exact"):
        grads, record = run(net, x, R, spec)
        arriving, sent, _ = record[POOL1]
        for n, positions, (wy, wx) in ties:
            for c in range(2):
                g = arriving[n, c, wy, wx]
                assert g != 0
                window = sent[n, c, 2 * wy:2 * wy + 2, 2 * wx:2 * wx + 2]
                got = [sent[n, c, y, x_] for y, x_ in positions]
                if spec == "seed-original":
                    assert got == [g] * len(positions), (spec, n, c, got, g)
                    assert np.count_nonzero(window) == len(positions)
                else:
                    assert got == [g] + [0.0] * (len(positions) - 1), (spec, n, c, got, g)
                    assert np.count_nonzero(window) == 1
        # Layer-2 map d of image 2: a 4-way tie in pool2 window (0, 0).
        arriving, sent, _ = record[POOL2]
        window = sent[2, 3, :2, :2]
        g = arriving[2, 3, 0, 0]
        assert g != 0
        if spec == "seed-original":
            assert np.all(window == g), (window, g)
        else:
            assert window.ravel().tolist() == [g, 0.0, 0.0, 0.0], (window, g)
    # The duplicated gradient changes conv1's weight gradient (compared with the same
    # rule routing to one winner).
    grads, _ = run(net, x, R, "seed-original")
    one_winner = ref_backward(net, x, R, Block(), Block(rot_sent=True))
    assert_differ(grads["conv1.weight"], one_winner["conv1.weight"], "conv1 ties vs winner")


# -- 5. transpose variants ----------------------------------------------------------------

@pytest.mark.parametrize("base", ["broken-upstream", "broken-mask"])
def test_transpose_differs_from_rot180(base):
    """On generic inputs T=transpose and T=rot180 give different conv gradients."""
    net, x, R = CASES["lecun1"]()
    rot, _ = run(net, x, R, base)
    tra, _ = run(net, x, R, base + "-t")
    for name in ("conv1.weight", "conv2.weight"):
        assert_differ(rot[name], tra[name], name)


def _non_square_net() -> Network:
    net = Network(
        [Conv2d(2, 3, padding=1, name="conv1"), Activation("relu", name="act1"),
         MaxPool2d(2, name="pool1"), Flatten(name="flat"), Dense(3, name="fc")],
        input_shape=(1, 8, 6), name="nonsquare",
    )
    return net.init(seed=0)


@pytest.mark.parametrize("spec", ["broken-upstream-t", "broken-mask-t"])
def test_transpose_on_non_square_maps_raises(spec):
    """'transpose' on 8x6 maps is a ConfigError at make_rule time; rot180 works there."""
    net = _non_square_net()
    with pytest.raises(ConfigError, match="square"):
        make_rule(spec, net)
    rule = make_rule(spec.removesuffix("-t"), net)
    out, tape = net.forward(np.random.default_rng(0).standard_normal((2, 1, 8, 6)))
    grads = net.backward(tape, np.ones_like(out), rule)
    assert grads["conv1.weight"].shape == (2, 1, 3, 3)


# -- 6. per-layer and per-channel assignment ----------------------------------------------

@pytest.mark.parametrize("case", ALL_CASES)
def test_per_layer_assignment(case):
    """conv2=seed-broken,*=exact: conv2 follows the broken formula (as in full seed-broken),
    dense layers stay exact, conv1 is exact backprop from what broken conv2 sends down."""
    net, x, R = ALL_CASES[case]()
    grads, _ = run(net, x, R, parse_rule("conv2=seed-broken,*=exact"))
    exact, _ = run(net, x, R, "exact")
    broken, _ = run(net, x, R, "seed-broken")
    ref = ref_backward(net, x, R, Block(), REF_RULES["seed-broken"][1])
    for name in DENSE:
        assert_close(grads[name], exact[name], name)
    assert_close(grads["conv2.weight"], broken["conv2.weight"], "conv2 vs seed-broken")
    for name in ("conv1.weight", "conv2.weight"):
        assert_close(grads[name], ref[name], name)
    assert_differ(grads["conv1.weight"], exact["conv1.weight"], "conv1 vs exact")
    assert_differ(grads["conv1.weight"], broken["conv1.weight"], "conv1 vs seed-broken")


@pytest.mark.parametrize("spec", ["act2=seed-broken", "pool1=exact,*=exact", "flatten=fa",
                                  "conv9=seed-original,*=exact", "conv2=no-such-rule"])
def test_bad_assignment_raises(spec):
    """Assigning a rule to a non-weight layer, an unknown layer, or an unknown rule name
    is a ConfigError."""
    net = seed_net().init(seed=0)
    with pytest.raises(ConfigError):
        make_rule(spec, net)


@pytest.mark.parametrize("channels", [{"conv2": [4]}, {"fc3": [0]}, {"conv7": [0]}])
def test_bad_channels_raise(channels):
    """Out-of-range channels or channels for a layer the rule does not cover: ConfigError."""
    with pytest.raises(ConfigError):
        make_rule(BrokenUpstream(channels=channels), seed_net().init(seed=0))


@pytest.mark.parametrize("case", ALL_CASES)
def test_per_channel_broken_upstream(case):
    """BrokenUpstream(channels={"conv2": [0]}) changes only conv2 channel 0's delta: the
    other rows of conv2's weight gradient equal exact. Alone, it changes every channel of
    conv1 (a conv layer it is not given channels for: the documented default, all
    channels); inside RuleSet({"conv2": ...}) conv1 is exact backprop."""
    net, x, R = ALL_CASES[case]()
    exact, _ = run(net, x, R, "exact")
    green_a = Block(kinds=("green", "plain", "plain", "plain"))
    for scoped in (False, True):
        rule = BrokenUpstream(channels={"conv2": [0]})
        if scoped:
            rule = RuleSet({"conv2": rule}, default=Exact())
        grads, _ = run(net, x, R, rule)
        ref = ref_backward(net, x, R, Block() if scoped else Block(kinds=GREEN2), green_a)
        assert_close(grads["conv2.weight"][1:], exact["conv2.weight"][1:], "conv2 rows 1-3")
        assert_differ(grads["conv2.weight"][0], exact["conv2.weight"][0], "conv2 row 0")
        for name in ("conv1.weight", "conv2.weight"):
            assert_close(grads[name], ref[name], f"scoped={scoped} {name}")
        for name in DENSE:
            assert_close(grads[name], exact[name], name)


# -- 7. replicas ---------------------------------------------------------------------------

REPLICA_SPECS = [*REF_RULES, "conv2=seed-broken,*=exact", "conv1=broken-mask-t,*=seed-original"]


@pytest.mark.parametrize("spec", REPLICA_SPECS)
def test_replicas_equal_separate_nets(spec):
    """A rule on a net with replicas=[3, 4] gives, per replica, the gradients of the same
    rule on a separate net initialised with that seed."""
    rng = np.random.default_rng(21)
    x = rng.standard_normal((2, 3, 1, 8, 8))
    R = rng.standard_normal((2, 3, 1))
    net = seed_net().init(replicas=[3, 4])
    grads, _ = run(net, x, R, spec)
    for r, seed in enumerate((3, 4)):
        single = seed_net().init(seed=seed)
        name, _, transform = spec.partition(":")
        rule = make_rule(name, single, seed=seed, transform=transform or None)
        out, tape = single.forward(x[r])
        expected = single.backward(tape, R[r], rule)
        for name in WEIGHTS:
            assert_close(grads[name][r], expected[name], f"replica {r} {name}")


def test_broken_text_mixes_lines_inside_one_layer():
    """broken-text's layout is the article's: layer 1 green, layer 2 green on a, b, c and
    red on d; lines can be set per channel, and transpose needs square maps."""
    net, x, R = CASES["normal0"]()
    rule = make_rule("broken-text", net)
    assert rule.channel_lines() == {"conv1": ["green", "green"],
                                    "conv2": ["green", "green", "green", "red"]}
    assert rule.describe() == "broken-text" and rule.transform_name == "transpose"
    mixed = make_rule(BrokenText(lines={"conv2": ["exact", "red", "green", "exact"]}), net)
    assert mixed.channel_lines()["conv2"] == ["exact", "red", "green", "exact"]
    with pytest.raises(ConfigError, match="one line per channel"):
        make_rule(BrokenText(lines={"conv2": ["green"]}), net)
    with pytest.raises(ConfigError, match="no map transform"):
        make_rule("fa", net, transform="rot180")


@pytest.mark.parametrize("case", ["normal0", "lecun1"])
@pytest.mark.parametrize("spec", ["seed-original", "seed-broken"])
def test_as_run_network_matches_the_authors_code(spec, case):
    """On the as-run network (layer 2 forward with W1b on every map) the article's code
    rules update W2 as if it acted and send the gradient down through it: the loop
    reference of the author's code, to 1e-12."""
    net, x, R = CASES[case]()
    as_run = seed_as_run()
    as_run.init(0)
    as_run.set_params(net.get_params())
    grads, record = run(as_run, x, R, spec)
    ref = ref_backward(as_run, x, R, *REF_RULES[spec], as_run=True)
    for name in WEIGHTS:
        assert_close(grads[name], ref[name], f"as-run {spec} {name}")
    assert_close(record[CONV2][1], ref["G1"], f"as-run {spec} conv2 sends")
    # ... and the forward pass is the code's: conv2 acts with W1b, not W2.
    twin = seed_net().init(0)
    twin.set_params({**net.get_params(),
                     "conv2.weight": np.repeat(net.params["conv1.weight"][1:2], 4, axis=0)})
    assert np.array_equal(twin.forward(x)[0], as_run.forward(x)[0])
