"""``handprop explore`` without a browser: the numbers it serves are handprop's, every
request is checked against its limits, the server answers only its own host, and
concurrent requests leave a consistent state."""

from __future__ import annotations

import http.client
import json
import random
import threading

import numpy as np
import pytest

from handprop import seed_net
from handprop.core.ops.losses import get_loss
from handprop.explore.api import LIMITS, ExploreApi
from handprop.explore.server import start_in_thread
from handprop.explore.session import Session, Settings, catalogue
from handprop.rules import make_rule
from handprop.rules.seed import BrokenText
from handprop.studies.alignment import compare_arrays
from handprop.training.data import load_tiny
from handprop.training.loop import TrainConfig, fit

LOSS = get_loss("l2", "sum")


@pytest.fixture(scope="module")
def images():
    return catalogue()


@pytest.fixture
def api(images):
    return ExploreApi(Session(Settings(), images))


def call(api: ExploreApi, method: str, path: str, body=None) -> tuple[int, dict]:
    raw = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    status, payload = api.handle(method, path, raw)
    return status, json.loads(payload)


def ok(api: ExploreApi, method: str, path: str, body=None) -> dict:
    status, data = call(api, method, path, body)
    assert status == 200, data
    return data


def block(state: dict, name: str) -> dict:
    return next(b for b in state["view"]["backward"]["blocks"] if b["name"] == name)


# -- the numbers are handprop's ------------------------------------------------------------

def test_steps_are_the_articles_online_sgd(api):
    """Eight steps on the four built-in images are two epochs of ``fit`` (the article's
    protocol: online SGD in a fixed order, its momentum): the same weights, bit for bit."""
    state = ok(api, "POST", "/api/step", {"steps": 8})
    data = load_tiny()
    net = seed_net().init(0)
    fit(net, data.x_train, data.y_train, TrainConfig(epochs=2), rule=make_rule("exact", net))
    assert np.array_equal(api.session.runs[0].net.flat, net.flat)
    targets = data.y_train[:, None].astype(float)
    assert state["runs"][0]["cost"] == float(LOSS(net.predict(data.x_train), targets)[0])
    assert state["step"] == 8 and state["epoch"] == 2.0


def test_the_view_is_the_networks_own_forward_and_backward(api):
    ok(api, "POST", "/api/settings", {"rule": "seed-broken", "image": 2})
    state = ok(api, "POST", "/api/step", {"steps": 3})
    net, rule = api.session.runs[0].net, api.session.runs[0].rule
    x = load_tiny().x_train[2:3]
    assert state["view"]["forward"]["output"] == float(net.predict(x)[0, 0])
    out, tape = net.forward(x)
    _, grad = LOSS(out, np.array([[1.0]]))
    exact, broken = net.backward(tape, grad), net.backward(tape, grad, rule)
    for name in ("conv1", "conv2", "fc3"):
        expected = compare_arrays(broken[f"{name}.weight"], exact[f"{name}.weight"])
        assert block(state, name)["angle"] == pytest.approx(float(expected["angle_deg"]), abs=1e-9)
    update = next(q for q in block(state, "conv2")["quantities"] if q["key"] == "update")
    expected = -0.09 * broken["conv2.weight"]  # maps travel at 6 digits of their largest entry
    np.testing.assert_allclose(np.array(update["rule"]["data"]).reshape(update["rule"]["shape"]),
                               expected, rtol=0, atol=1e-5 * np.abs(expected).max())
    assert block(state, "conv2")["angle"] > 1  # the broken rule is not exact here


def test_exact_rule_agrees_with_itself_everywhere(api):
    state = ok(api, "POST", "/api/step", {"steps": 2})
    for b in state["view"]["backward"]["blocks"]:
        assert b["angle"] == pytest.approx(0, abs=1e-5)
        for q in b["quantities"]:
            assert q["rule"] == q["exact"]
    assert all(a == pytest.approx(0, abs=1e-5) for a in state["runs"][0]["angles"].values())


def test_a_red_line_on_channel_d_is_the_texts_rule_with_that_line(api, images):
    before = block(ok(api, "GET", "/api/state"), "conv2")["angle"]
    state = ok(api, "POST", "/api/settings", {"lines": {"conv2": {"d": "red"}}})
    assert state["settings"]["rule"] == "broken-text"
    assert state["runs"][0]["rule"]["lines"] == {"conv1": ["blue", "blue"],
                                                 "conv2": ["blue", "blue", "blue", "red"]}
    after = block(state, "conv2")["angle"]
    assert after != before and after > 1
    # the same as broken-text built by hand with that line
    net = Session(Settings(), images).runs[0].net
    rule = make_rule(BrokenText(lines={"conv1": ("exact", "exact"),
                                       "conv2": ("exact",) * 3 + ("red",)}), net)
    out, tape = net.forward(images.pixels[1][None, None])  # the default image, a 1
    _, grad = LOSS(out, np.array([[1.0]]))
    expected = compare_arrays(net.backward(tape, grad, rule)["conv2.weight"],
                              net.backward(tape, grad)["conv2.weight"])
    assert after == pytest.approx(float(expected["angle_deg"]), abs=1e-9)


def test_line_edits_start_from_the_rules_own_lines(api):
    ok(api, "POST", "/api/settings", {"rule": "seed-broken"})
    state = ok(api, "POST", "/api/settings", {"lines": {"conv1": {"a": "blue"}}})
    assert state["runs"][0]["rule"]["lines"] == {"conv1": ["blue", "green"],
                                                 "conv2": ["green", "green", "green", "red"]}
    assert state["runs"][0]["rule"]["transform"] == "transpose"  # broken-text's own
    state = ok(api, "POST", "/api/settings", {"transform": "rot180"})
    assert state["runs"][0]["rule"]["transform"] == "rot180"
    state = ok(api, "POST", "/api/settings", {"lines": {"conv2": {"a": "blue"}}})
    assert state["runs"][0]["rule"]["transform"] == "rot180"  # kept while editing lines
    state = ok(api, "POST", "/api/settings", {"rule": "fa"})
    assert state["runs"][0]["rule"]["lines"] is None and state["settings"]["transform"] is None


@pytest.mark.parametrize("change", [{"rule": "fa"}, {"as_run": True}, {"compare": "dfa"},
                                    {"lines": {"conv2": {"d": "red"}}}, {"dataset": "digits"}])
def test_a_new_rule_or_network_starts_again_from_the_same_initial_weights(api, change):
    ok(api, "POST", "/api/step", {"steps": 5})
    state = ok(api, "POST", "/api/settings", change)
    assert state["step"] == 0
    initial = seed_net().init(0).flat
    for run in api.session.runs:
        assert np.array_equal(run.net.flat, initial)
        assert run.steps == 0 and run.curve.steps == [0]


def test_the_learning_rate_applies_from_the_next_step_without_a_restart(api):
    ok(api, "POST", "/api/step", {"steps": 3})
    state = ok(api, "POST", "/api/settings", {"lr": 0.01, "momentum": 0.5, "image": 5})
    assert state["step"] == 3 and state["view"]["image"] == 5
    assert api.session.runs[0].optimizer.lr == 0.01
    assert api.session.runs[0].optimizer.momentum == 0.5


def test_reset_to_another_seed(api):
    ok(api, "POST", "/api/step", {"steps": 4})
    state = ok(api, "POST", "/api/reset", {"seed": 7})
    assert state["step"] == 0 and state["settings"]["seed"] == 7
    assert np.array_equal(api.session.runs[0].net.flat, seed_net().init(7).flat)


def test_compare_runs_both_rules_from_the_same_weights_in_lockstep(api):
    ok(api, "POST", "/api/settings", {"rule": "seed-broken", "compare": "exact"})
    state = ok(api, "POST", "/api/step", {"steps": 6})
    a, b = state["runs"]
    assert a["rule"]["name"] == "seed-broken" and b["rule"]["name"] == "exact"
    assert a["curve"]["steps"] == b["curve"]["steps"] == list(range(7))
    assert a["curve"]["cost"][0] == b["curve"]["cost"][0]  # same start
    assert a["cost"] != b["cost"]


def test_since_sends_only_the_points_the_page_lacks(api):
    first = ok(api, "POST", "/api/step", {"steps": 3})["runs"][0]["curve"]
    since = [{"id": first["id"], "count": len(first["steps"])}]
    second = ok(api, "POST", "/api/step", {"steps": 2, "since": since})["runs"][0]["curve"]
    assert second["start"] == 4 and second["steps"] == [4, 5]
    stale = [{"id": "0.0", "count": 4}]
    third = ok(api, "POST", "/api/step", {"steps": 1, "since": stale})["runs"][0]["curve"]
    assert third["start"] == 0 and third["steps"] == list(range(7))


def test_a_page_without_maps_gets_no_view(api):
    state = ok(api, "POST", "/api/step", {"steps": 2, "view": False})
    assert "view" not in state and state["step"] == 2 and state["runs"][0]["cost"] is not None
    assert "view" in ok(api, "POST", "/api/state", {})


def test_long_runs_keep_a_bounded_evenly_spaced_curve(monkeypatch, images):
    from handprop.explore import session as module

    monkeypatch.setattr(module, "MAX_POINTS", 10)
    session = Session(Settings(), images)
    session.step(45)
    curve = session.runs[0].curve
    assert len(curve.steps) <= 10 and curve.thinned >= 1
    assert all(s % curve.every == 0 for s in curve.steps)
    assert np.all(np.diff(curve.steps) == curve.every)


def test_a_diverging_run_stops_and_says_where(api):
    ok(api, "POST", "/api/step", {"steps": 2})
    api.session.runs[0].net.flat[-1] = np.inf  # what a learning rate far too large does
    state = ok(api, "POST", "/api/step", {"steps": 5})
    run = state["runs"][0]
    assert run["diverged_at"] == 3 and run["step"] == 3 and state["step"] == 7
    assert run["curve"]["steps"][-1] == 3
    json.dumps(state, allow_nan=False)  # strict JSON: no NaN anywhere
    state = ok(api, "POST", "/api/reset", {})
    assert state["runs"][0]["diverged_at"] is None and state["runs"][0]["cost"] is not None


def test_every_rule_and_the_as_run_network_serve_a_view(api):
    meta = ok(api, "GET", "/api/meta")
    names = [r["name"] for r in meta["rules"]]
    assert names[:11] == ["exact", "seed-original", "seed-broken", "broken-upstream",
                          "broken-text", "fa", "usf", "frsf", "brsf", "dfa", "kp"]
    for as_run in (False, True):
        for name in names:
            state = ok(api, "POST", "/api/settings", {"rule": name, "as_run": as_run})
            state = ok(api, "POST", "/api/step", {"steps": 2})
            assert state["runs"][0]["rule"]["name"] == name
            json.dumps(state, allow_nan=False)


def test_meta_lists_what_the_page_offers(api):
    meta = ok(api, "GET", "/api/meta")
    assert meta["line_layers"] == {"conv1": 2, "conv2": 4}
    assert len(meta["images"]["selectable"]) == 364
    assert meta["images"]["items"]["0"]["label"] == 0
    assert meta["limits"]["steps"] == list(LIMITS["steps"])


# -- every request checked ------------------------------------------------------------------

BAD = [
    ("/api/step", {"steps": 0}, "steps must be in"),
    ("/api/step", {"steps": LIMITS["steps"][1] + 1}, "steps must be in"),
    ("/api/step", {"steps": 2.5}, "steps must be an integer"),
    ("/api/step", {"steps": True}, "steps must be an integer"),
    ("/api/step", {"steps": "10"}, "steps must be an integer"),
    ("/api/step", {"stepz": 1}, "unknown field"),
    ("/api/step", {"steps": 1, "since": "all"}, "since must be a list"),
    ("/api/step", {"steps": 1, "since": [{"id": 1, "count": 0}]}, "since: id"),
    ("/api/reset", {"seed": -1}, "seed must be in"),
    ("/api/reset", {"seed": 2**32}, "seed must be in"),
    ("/api/settings", {"lr": 0}, "lr must be a number in"),
    ("/api/settings", {"lr": 11}, "lr must be a number in"),
    ("/api/settings", {"lr": "0.1"}, "lr must be a number"),
    ("/api/settings", {"momentum": 1.0}, "momentum must be a number in"),
    ("/api/settings", {"rule": "backprop"}, "rule must be one of"),
    ("/api/settings", {"rule": None}, "rule must be one of"),
    ("/api/settings", {"compare": "nope"}, "compare must be one of"),
    ("/api/settings", {"dataset": "mnist"}, "dataset must be one of"),
    ("/api/settings", {"dataset": "idx:/etc/passwd"}, "dataset must be one of"),
    ("/api/settings", {"as_run": 1}, "as_run must be true or false"),
    ("/api/settings", {"image": 364}, "image must be in"),
    ("/api/settings", {"image": -1}, "image must be in"),
    ("/api/settings", {"transform": "flip"}, "transform must be one of"),
    ("/api/settings", {"rule": "fa", "transform": "rot180"}, "has no map transform"),
    ("/api/settings", {"lines": {"conv2": {"e": "red"}}}, "has no channel 'e'"),
    ("/api/settings", {"lines": {"fc3": {"a": "red"}}}, "not a conv layer with lines"),
    ("/api/settings", {"lines": {"conv2": {"d": "purple"}}}, "must be one of blue, green, red"),
    ("/api/settings", {"lines": {"conv2": ["red"]}}, "must be an object"),
    ("/api/settings", {"lines": {}}, "lines must be an object"),
    ("/api/settings", {"lines": {"conv2": {"d": "red"}}, "rule": "fa"}, "cannot go with rule"),
    ("/api/settings", {"path": "/etc/passwd"}, "unknown field"),
    ("/api/step", {"steps": 1, "view": "no"}, "view must be true or false"),
]


@pytest.mark.parametrize(("path", "body", "message"), BAD)
def test_a_bad_request_is_a_400_with_one_line_and_changes_nothing(api, path, body, message):
    ok(api, "POST", "/api/step", {"steps": 2})
    before = (api.session.generation, api.session.steps, api.session.settings,
              api.session.runs[0].net.flat.copy())
    status, data = call(api, "POST", path, body)
    assert status == 400, data
    error = data["error"]
    assert message in error and "\n" not in error and "Traceback" not in error
    after = (api.session.generation, api.session.steps, api.session.settings)
    assert after == before[:3] and np.array_equal(api.session.runs[0].net.flat, before[3])


@pytest.mark.parametrize("raw", [b"{", b"[1, 2]", b'"steps"', b'{"steps": NaN}',
                                 b'{"lr": Infinity}', b"\xff\xfe"])
def test_a_body_that_is_not_a_json_object_is_refused(api, raw):
    path = "/api/settings" if b"lr" in raw else "/api/step"
    status, data = call(api, "POST", path, raw)
    assert status == 400 and "error" in data


def test_size_and_route_limits(api):
    status, data = call(api, "POST", "/api/step", b" " * (LIMITS["body_bytes"] + 1))
    assert status == 413
    assert call(api, "GET", "/api/nothing")[0] == 404
    assert call(api, "DELETE", "/api/step")[0] == 405
    assert call(api, "GET", "/api/step")[0] == 405


# -- the HTTP server --------------------------------------------------------------------------

@pytest.fixture
def server(api):
    server, thread = start_in_thread(api)
    yield server
    server.shutdown()
    server.server_close()
    thread.join(5)


def request(server, method: str, path: str, body: bytes | None = None, headers=None,
            host: str | None = None) -> tuple[int, dict[str, str], bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", server.server_address[1], timeout=30)
    try:
        conn.putrequest(method, path, skip_host=True, skip_accept_encoding=True)
        if host is not False:
            conn.putheader("Host", f"127.0.0.1:{server.server_address[1]}" if host is None
                           else host)
        for key, value in (headers or {}).items():
            conn.putheader(key, value)
        if body is not None:
            conn.putheader("Content-Length", str(len(body)))
        conn.endheaders(body)
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


def post(server, path: str, body: dict, **kwargs):
    headers = {"Content-Type": "application/json", **kwargs.pop("headers", {})}
    return request(server, "POST", path, json.dumps(body).encode(), headers, **kwargs)


def test_the_server_listens_on_loopback_only(server):
    assert server.server_address[0] == "127.0.0.1" and server.server_address[1] > 0


def test_the_page_and_its_files_come_from_the_package(server):
    status, headers, body = request(server, "GET", "/")
    assert status == 200 and b"handprop explore" in body
    assert "default-src 'none'" in headers["Content-Security-Policy"]
    for path in ("/static/style.css", "/static/js/app.js", "/static/js/util.js"):
        assert request(server, "GET", path)[0] == 200
    assert b"http" not in request(server, "GET", "/static/style.css")[2]  # no remote fonts


@pytest.mark.parametrize("host", ["evil.example:80", "127.0.0.1", "localhost", "127.0.0.1:1",
                                  "attacker.test", ""])
def test_a_foreign_host_header_is_refused(server, host):
    """DNS rebinding: a page on another name that resolves to 127.0.0.1 sends its name."""
    for method, path in (("GET", "/"), ("GET", "/api/state")):
        assert request(server, method, path, host=host)[0] == 403
    assert post(server, "/api/step", {"steps": 1}, host=host)[0] == 403


def test_a_missing_host_header_is_refused(server):
    assert request(server, "GET", "/api/meta", host=False)[0] == 403


def test_localhost_with_the_port_is_accepted(server):
    host = f"localhost:{server.server_address[1]}"
    assert request(server, "GET", "/api/meta", host=host)[0] == 200


def test_another_sites_origin_or_a_form_post_is_refused(server):
    port = server.server_address[1]
    assert post(server, "/api/step", {"steps": 1},
                headers={"Origin": "http://evil.example"})[0] == 403
    assert post(server, "/api/step", {"steps": 1},
                headers={"Origin": f"http://127.0.0.1:{port}"})[0] == 200
    status, _, _ = request(server, "POST", "/api/step", b"steps=1",
                           {"Content-Type": "application/x-www-form-urlencoded"})
    assert status == 415


@pytest.mark.parametrize("path", ["/static/../api.py", "/../../etc/passwd", "/etc/passwd",
                                  "/static/js/../../server.py", "/static/", "/static/js/app.js/",
                                  "/%2e%2e/%2e%2e/etc/passwd", "//etc/passwd"])
def test_no_path_from_the_client_reaches_the_file_system(server, path):
    status, headers, body = request(server, "GET", path)
    assert status == 404 and headers["Content-Type"] == "application/json"


def test_errors_are_json_never_a_traceback(server):
    for method in ("PUT", "DELETE", "PATCH"):
        status, headers, body = request(server, method, "/api/step")
        assert status >= 400 and b"Traceback" not in body and json.loads(body)["error"]
    status, _, body = request(server, "POST", "/api/step", b"{nope",
                              {"Content-Type": "application/json"})
    assert status == 400 and json.loads(body)["error"] == "request body is not valid JSON"
    status, _, body = request(server, "POST", "/api/step", b"x" * 20000,
                              {"Content-Type": "application/json"})
    assert status == 413


def test_concurrent_steps_and_resets_leave_a_consistent_state(server, api, images):
    """Many clients at once: every answer is a state some sequence of whole requests
    produced, and the final weights are exactly those of that many steps from the seed."""
    answers: list[tuple[str, int, dict]] = []
    lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(12):
            kind = rng.choice(["step", "step", "step", "reset", "state"])
            if kind == "step":
                n = rng.randint(1, 4)
                status, _, body = post(server, "/api/step", {"steps": n})
            elif kind == "reset":
                n = 0
                status, _, body = post(server, "/api/reset", {})
            else:
                n = 0
                status, _, body = request(server, "GET", "/api/state")
            assert status == 200
            state = json.loads(body)
            with lock:
                answers.append((kind, n, state))

    threads = [threading.Thread(target=client, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(answers) == 96
    by_generation: dict[int, list[tuple[str, int, int]]] = {}
    for kind, n, state in answers:
        curve = state["runs"][0]["curve"]
        assert curve["steps"][-1] <= state["step"] and curve["steps"] == sorted(set(curve["steps"]))
        assert state["runs"][0]["step"] == state["step"]
        by_generation.setdefault(state["generation"], []).append((kind, n, state["step"]))
    for answers_of in by_generation.values():
        # within a generation the steps add up: each step answer is an earlier total + n
        totals = {0} | {s for _, _, s in answers_of}
        for kind, n, step in answers_of:
            if kind == "step":
                assert step - n in totals
    final = json.loads(request(server, "GET", "/api/state")[2])
    replay = Session(Settings(), images)
    replay.step(final["step"])
    assert np.array_equal(api.session.runs[0].net.flat, replay.runs[0].net.flat)
    assert final["runs"][0]["cost"] == replay.runs[0].cost
