"""``handprop explore`` in a real browser: Playwright for Python driving Debian's Chromium
(``/usr/bin/chromium``, headless; Playwright's own browser download is never used).

Without Playwright or Chromium these tests skip and say why; CI installs both and sets
``HANDPROP_REQUIRE_BROWSER=1``, which turns a skip into a failure. A screenshot of every
view is saved under ``test-artifacts/explore/`` (``HANDPROP_TEST_ARTIFACTS`` moves it).
"""

from __future__ import annotations

import json
import os
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from handprop import seed_net
from handprop.explore.api import ExploreApi
from handprop.explore.export import export
from handprop.explore.server import start_in_thread
from handprop.explore.session import Session, Settings, catalogue

CHROMIUM = os.environ.get("HANDPROP_CHROMIUM", "/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
ARTIFACTS = Path(os.environ.get("HANDPROP_TEST_ARTIFACTS",
                                Path(__file__).resolve().parents[1] / "test-artifacts")) / "explore"


def _missing() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -e '.[test]')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"Chromium not found at {CHROMIUM} (apt-get install chromium)"
    return None


MISSING = _missing()
if MISSING and os.environ.get("HANDPROP_REQUIRE_BROWSER") == "1":
    raise RuntimeError(f"the browser tests must run here, but: {MISSING}")
pytestmark = pytest.mark.skipif(MISSING is not None, reason=f"browser tests skipped: {MISSING}")


@pytest.fixture(scope="module")
def images():
    return catalogue()


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def live(images):
    api = ExploreApi(Session(Settings(), images))
    server, thread = start_in_thread(api)
    yield server, api
    server.shutdown()
    server.server_close()
    thread.join(5)


class Watched:
    """A page whose console errors, page errors and requests are recorded; any request
    that leaves ``allowed`` (the server, or file://) is blocked and recorded."""

    def __init__(self, browser, allowed: str) -> None:
        self.context = browser.new_context(viewport={"width": 1500, "height": 1300})
        self.page = self.context.new_page()
        self.errors: list[str] = []
        self.outside: list[str] = []
        self.requests: list[str] = []
        self.page.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        self.page.on("pageerror", lambda e: self.errors.append(str(e)))
        self.page.route("**/*", self._route)
        self.allowed = allowed

    def _route(self, route) -> None:
        url = route.request.url
        self.requests.append(url)
        if url.startswith(self.allowed) or url.startswith("data:"):
            route.continue_()
        else:
            self.outside.append(url)
            route.abort()

    def open(self, url: str) -> None:
        self.page.goto(url)
        self.page.wait_for_selector("body[data-ready=true]", timeout=30_000)

    def value(self, selector: str) -> float | None:
        text = self.page.get_attribute(selector, "data-value")
        return None if text == "null" else float(text)

    def wait_text(self, selector: str, prefix: str) -> None:
        self.page.wait_for_function(
            "([s, p]) => { const e = document.querySelector(s);"
            " return e && e.textContent.startsWith(p); }",
            arg=[selector, prefix], timeout=30_000)

    def wait_value_change(self, selector: str, old: str) -> None:
        self.page.wait_for_function(
            "([s, v]) => { const e = document.querySelector(s);"
            " return e && e.dataset.value !== v; }",
            arg=[selector, old], timeout=30_000)

    def shot(self, name: str) -> Path:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        path = ARTIFACTS / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def assert_clean(self) -> None:
        assert not self.errors, self.errors
        assert not self.outside, f"requests left the page's origin: {self.outside}"

    def close(self) -> None:
        self.context.close()


@pytest.fixture
def watched(browser, live):
    server, _ = live
    page = Watched(browser, server.url)
    yield page
    page.close()


def api_state(server) -> dict:
    with urllib.request.urlopen(server.url + "api/state", timeout=30) as response:
        return json.loads(response.read())


def conv2(state: dict) -> dict:
    return next(b for b in state["view"]["backward"]["blocks"] if b["name"] == "conv2")


VIEWS = ("network", "backward", "training", "compare")


def test_the_page_loads_with_no_console_errors_and_nothing_from_the_network(watched, live):
    server, _ = live
    watched.open(server.url)
    page = watched.page
    assert page.locator("svg.network rect").count() > 300  # the diagram with its maps
    page.fill("#steps-n", "6")
    page.click("#nsteps-btn")
    watched.wait_text("#status-step", "6 ")
    page.select_option("#compare", "seed-broken")
    watched.wait_text("#status-step", "0 ")
    page.click("#nsteps-btn")
    watched.wait_text("#status-step", "6 ")
    for view in VIEWS:
        page.click(f"#tab-{view}")
        assert page.is_visible(f"#view-{view}")
        watched.shot(f"live-{view}")
    assert page.locator("#bw-conv2 svg.heatmap").count() == 32  # 4 quantities x 4 channels x 2
    assert page.locator("#view-compare ul.preds li").count() == 8
    watched.assert_clean()
    assert all(url.startswith(server.url) or url.startswith("data:") for url in watched.requests)


def test_stepping_changes_the_cost_shown_and_it_is_the_apis_value(watched, live):
    server, _ = live
    watched.open(server.url)
    before = watched.value("#status-cost-a")
    assert before == api_state(server)["runs"][0]["cost"]
    watched.page.click("#step-btn")
    watched.wait_text("#status-step", "1 ")
    after = watched.value("#status-cost-a")
    state = api_state(server)
    assert state["step"] == 1 and after != before
    assert after == state["runs"][0]["cost"]  # the same double, as the API sent it
    shown = watched.page.text_content("#status-cost-a")
    assert shown == watched.page.evaluate("(v) => HP.fmtCost(v)", state["runs"][0]["cost"])
    assert float(shown) == pytest.approx(state["runs"][0]["cost"], rel=1e-5)
    watched.page.click("#tab-training")
    assert watched.value("#train-cost") == state["runs"][0]["cost"]
    watched.assert_clean()


def test_a_red_line_on_channel_d_changes_the_conv2_angle_to_the_apis_value(watched, live):
    server, _ = live
    watched.open(server.url)
    watched.page.click("#tab-backward")
    before = watched.page.get_attribute("#bw-angle-conv2", "data-value")
    assert float(before) == pytest.approx(0, abs=1e-6)  # exact against exact
    watched.page.click("label[for=line-conv2-d-red]")
    watched.wait_value_change("#bw-angle-conv2", before)
    state = api_state(server)
    assert state["runs"][0]["rule"]["lines"]["conv2"] == ["blue", "blue", "blue", "red"]
    shown = watched.value("#bw-angle-conv2")
    assert shown == conv2(state)["angle"] and shown > 1
    assert watched.page.text_content("#bw-angle-conv2") == f"{shown:.1f}\u00b0"
    assert watched.value("#status-angle-conv2") == state["runs"][0]["angles"]["conv2"]
    assert watched.page.is_checked("#line-conv2-d-red")
    watched.shot("live-backward-red-d")
    watched.assert_clean()


def test_switching_rules_resets_to_the_same_initial_weights(watched, live):
    server, api = live
    watched.open(server.url)
    initial = watched.value("#status-cost-a")
    kernels = api_state(server)["view"]["forward"]["blocks"][0]["kernels"]
    watched.page.click("#nsteps-btn")
    watched.wait_text("#status-step", "10 ")
    assert watched.value("#status-cost-a") != initial
    for rule in ("fa", "seed-broken", "dfa"):
        watched.page.select_option("#rule", rule)
        watched.wait_text("#status-step", "0 ")
        state = api_state(server)
        assert state["runs"][0]["rule"]["name"] == rule
        assert watched.value("#status-cost-a") == initial
        assert state["view"]["forward"]["blocks"][0]["kernels"] == kernels
        assert np.array_equal(api.session.runs[0].net.flat, seed_net().init(0).flat)
        watched.page.click("#step-btn")
        watched.wait_text("#status-step", "1 ")
    watched.assert_clean()


def test_the_page_is_usable_from_the_keyboard(watched, live):
    server, _ = live
    watched.open(server.url)
    page = watched.page
    page.focus("#tab-network")
    page.keyboard.press("ArrowRight")
    assert page.get_attribute("#tab-backward", "aria-selected") == "true"
    assert page.evaluate("document.activeElement.id") == "tab-backward"
    page.keyboard.press("3")
    assert page.is_visible("#view-training") and not page.is_visible("#view-backward")
    page.keyboard.press(".")
    watched.wait_text("#status-step", "1 ")
    page.keyboard.press("n")
    watched.wait_text("#status-step", "11 ")
    page.keyboard.press("r")
    watched.wait_text("#status-step", "0 ")
    # a line toggle by keyboard: focus a radio of the group and move with the arrows
    page.focus("#line-conv2-d-blue")
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => document.getElementById('line-conv2-d-green').checked")
    watched.wait_text("#status-step", "0 ")
    page.wait_for_function("() => document.getElementById('rule').value === 'broken-text'")
    names = page.evaluate("""[...document.querySelectorAll('button, select, input')]
        .filter(e => !(e.labels && e.labels.length) && !e.getAttribute('aria-label')
                     && !e.textContent.trim()).map(e => e.id)""")
    assert names == [], f"controls without a label: {names}"
    watched.assert_clean()


def test_an_error_from_the_server_is_shown_in_one_line(watched, live):
    server, _ = live
    watched.open(server.url)
    watched.page.fill("#lr", "50")
    watched.page.dispatch_event("#lr", "change")
    watched.page.wait_for_selector("#error:not([hidden])")
    assert "lr must be a number in" in watched.page.text_content("#error")
    watched.errors.clear()  # Chromium logs the 400 response itself
    assert watched.page.input_value("#lr") == "0.09"  # the control shows the state again


@pytest.fixture(scope="module")
def exported(tmp_path_factory, images):
    folder = tmp_path_factory.mktemp("export") / "copy"
    export(folder, Settings(), ["exact", "broken-text", "seed-broken"], [0, 3], 12, [1, 2])
    return folder


def test_the_exported_copy_opens_from_file_and_shows_the_same_numbers(browser, exported, images):
    page = Watched(browser, "file://")
    try:
        page.open((exported / "index.html").as_uri())
        assert "Static copy" in page.page.text_content("#mode")
        live = Session(Settings(), images)
        assert page.value("#status-cost-a") == live.runs[0].cost
        page.page.fill("#steps-n", "5")
        page.page.click("#nsteps-btn")
        page.wait_text("#status-step", "5 ")
        live.step(5)
        assert page.value("#status-cost-a") == live.runs[0].cost
        page.page.select_option("#rule", "broken-text")
        page.wait_text("#status-step", "0 ")
        page.page.click("#nsteps-btn")
        page.wait_text("#status-step", "5 ")
        page.page.click("#tab-backward")
        text_rule = Session(Settings(rule="broken-text"), images)
        text_rule.step(5)
        from handprop.explore.views import snapshot

        expected = snapshot(text_rule)
        assert page.value("#bw-angle-conv2") == conv2(expected)["angle"]
        assert page.value("#status-angle-conv2") == expected["runs"][0]["angles"]["conv2"]
        page.page.select_option("#compare", "seed-broken")
        page.wait_text("#status-step", "0 ")
        page.page.fill("#steps-n", "100")
        page.page.click("#nsteps-btn")
        page.wait_text("#status-step", "12 ")  # the last frame
        both = Session(Settings(rule="broken-text", compare="seed-broken"), images)
        both.step(12)
        assert page.value("#status-cost-b") == both.runs[1].cost
        for view in VIEWS:
            page.page.click(f"#tab-{view}")
            page.shot(f"static-{view}")
        assert all(url.startswith("file://") or url.startswith("data:") for url in page.requests)
        page.assert_clean()
    finally:
        page.close()
