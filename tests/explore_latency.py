"""Step latency of ``handprop explore``, server side and end to end in Chromium.

Not a test (speed is measured, never asserted in a unit test): run it on an idle machine
and copy the table into the README.

    PYTHONPATH=. python tests/explore_latency.py [--steps 40]

Server side: the time handprop spends on one ``POST /api/step {"steps": 1}`` as the page
sends it in that view (the step, the curve point, the maps of the shown image where the
view shows them, the JSON), measured in the process.
End to end: from the page's Step button to the redrawn page (after the next paint), as
the page itself records it in ``HP.timings``, for each view and setting.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from handprop.explore.api import ExploreApi
from handprop.explore.server import start_in_thread
from handprop.explore.session import Session, Settings, catalogue

ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
CASES = [  # (label, settings, view)
    ("four images, exact", Settings(), "network"),
    ("four images, exact", Settings(), "backward"),
    ("four images, broken-text vs exact", Settings(rule="broken-text", compare="exact"), "compare"),
    ("digits (350), seed-broken", Settings(dataset="digits", rule="seed-broken"), "training"),
]


def summary(values: list[float]) -> str:
    values = sorted(values)
    p90 = values[int(0.9 * (len(values) - 1))]
    return f"median {statistics.median(values):6.1f}  p90 {p90:6.1f}  max {values[-1]:6.1f}"


def server_side(settings: Settings, view: str, steps: int, images) -> list[float]:
    """What the page asks in that view: the maps only where it shows them."""
    api = ExploreApi(Session(settings, images))
    body = json.dumps({"steps": 1, "view": view in ("network", "backward")}).encode()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        status, _ = api.handle("POST", "/api/step", body)
        times.append((time.perf_counter() - start) * 1e3)
        assert status == 200
    return times


def end_to_end(browser, settings: Settings, view: str, steps: int, images) -> list[dict]:
    server, thread = start_in_thread(ExploreApi(Session(settings, images)))
    page = browser.new_page(viewport={"width": 1500, "height": 1300})
    try:
        page.goto(server.url)
        page.wait_for_selector("body[data-ready=true]")
        page.click(f"#tab-{view}")
        for _ in range(steps):
            count = page.evaluate("HP.timings.length")
            page.click("#step-btn")
            page.wait_for_function("(n) => HP.timings.length > n", arg=count)
        return page.evaluate("HP.timings").__getitem__(slice(-steps, None))
    finally:
        page.close()
        server.shutdown()
        server.server_close()
        thread.join(5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    args = parser.parse_args()
    from playwright.sync_api import sync_playwright

    images = catalogue()
    print(f"{args.steps} single steps each, milliseconds\n")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, args=ARGS, headless=True)
        for label, settings, view in CASES:
            server = server_side(settings, view, args.steps, images)
            timings = end_to_end(browser, settings, view, args.steps, images)
            print(f"{label}, {view} view")
            print(f"  server (handprop + JSON)  {summary(server)}")
            print(f"  end to end (click->paint) {summary([t['total_ms'] for t in timings])}")
            print(f"    of which redraw         {summary([t['render_ms'] for t in timings])}")
        browser.close()


if __name__ == "__main__":
    main()
