"""Annotator faults in the browser (issue 6, item 3): the labeling page's WebSocket drops, reconnects
with growing back-off, and resynchronises (progress and queue) once it is back.

Headless Chromium against the embedded server; Playwright's WebSocket routing stands between the
page and the server, so the test can cut the connection and refuse the first reconnects as a
flaky network would, and time every attempt.
"""
from __future__ import annotations

import re
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.support import CHROMIUM, LoupeServer, launch_chromium, log_in, need

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = LoupeServer(tmp_path_factory.mktemp("reconnect"), {})
    try:
        srv.setup_demo(limit=80, batch_size=20, refill_threshold=5)
        srv.start()
        yield srv
    finally:
        srv.stop()


class _Gate:
    """Stands between the page and the server's WebSocket: times every connection attempt, refuses the next
    ``refuse`` ones (a network still down) and lets the others through."""

    def __init__(self) -> None:
        self.attempts: list[float] = []  # monotonic time of every connection attempt
        self.routes: list = []
        self.refuse = 0

    def __call__(self, route) -> None:
        self.attempts.append(time.monotonic())
        if self.refuse > 0:
            self.refuse -= 1
            route.close(code=1011, reason="test: network down")
            return
        route.connect_to_server()
        self.routes.append(route)


@contextmanager
def _page_behind(gate: _Gate):
    """A headless page whose project WebSockets go through ``gate``."""
    need(Path(CHROMIUM).exists(), f"Chromium is not installed at {CHROMIUM} (LOUPE_CHROMIUM)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p, CHROMIUM)
        page = browser.new_page()
        page.route_web_socket(re.compile(r"/ws/projects/\d+/"), gate)
        try:
            yield page
        finally:
            browser.close()


def test_websocket_reconnects_with_backoff_and_resyncs(server):
    gate = _Gate()
    attempts, routes = gate.attempts, gate.routes
    with _page_behind(gate) as page:
        api_calls: list[tuple[float, str]] = []
        page.on("request", lambda req: api_calls.append((time.monotonic(), req.url))
                if "/api/projects/" in req.url else None)
        log_in(page, server.url, "/projects/1/label/")
        page.wait_for_selector("#current-image:not([hidden])", timeout=15000)
        page.wait_for_function("document.getElementById('conn').dataset.state === 'open'", timeout=10000)
        assert len(attempts) == 1

        # The connection drops, and the network stays down for the next three attempts.
        gate.refuse = 3
        dropped_at = time.monotonic()
        routes[-1].close(code=1001, reason="test: dropped")
        page.wait_for_function("document.getElementById('conn').dataset.state === 'closed'", timeout=5000)
        page.wait_for_function("document.getElementById('conn').dataset.state === 'open'", timeout=20000)
        reopened_at = time.monotonic()
        page.wait_for_timeout(1500)
        resync = [u for t, u in api_calls if t >= reopened_at - 0.05]

    assert len(attempts) == 5, attempts  # the first connection, 3 refused, 1 that got through
    gaps = [attempts[1] - dropped_at] + [b - a for a, b in zip(attempts[1:], attempts[2:])]
    # ws.js: delay = base/2 + U(0, base/2) with base = 500 ms * 2^attempt: 250-500, 500-1000,
    # 1000-2000, 2000-4000 ms.  The ranges do not overlap, so each wait is longer than the last.
    print("reconnect gaps (s):", [round(g, 3) for g in gaps], "resync:", resync)
    assert all(b > a for a, b in zip(gaps, gaps[1:])), gaps
    assert 0.2 <= gaps[0] <= 0.8 and 1.8 <= gaps[3] <= 4.6, gaps
    # Back: the page asks for what it may have missed (progress and its leases).
    assert any(u.endswith("/status") for u in resync), resync
    assert any(u.endswith("/lease") for u in resync), resync


def test_websocket_gives_up_when_the_server_says_not_logged_in(server):
    """Close code 4401 (the session ended) stops the retries instead of hammering the server."""
    gate = _Gate()
    attempts, routes = gate.attempts, gate.routes
    with _page_behind(gate) as page:
        log_in(page, server.url, "/projects/1/label/")
        page.wait_for_function("document.getElementById('conn').dataset.state === 'open'", timeout=15000)
        routes[-1].close(code=4401, reason="not authenticated")
        page.wait_for_function("document.getElementById('conn').dataset.state === 'closed'", timeout=5000)
        page.wait_for_timeout(2500)  # longer than the first two back-off delays
    assert len(attempts) == 1, attempts
