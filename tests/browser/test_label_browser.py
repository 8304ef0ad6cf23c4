"""Headless Chromium against the EMBEDDED default (`manage.py loupe_serve`: Daphne + Celery worker
thread + memory broker + in-memory channel layer): log in, label by keyboard, watch the progress,
and see the queue refresh after a round without reloading.  Also measures how fast the round's push
reaches the page (DESIGN.md "Pitfall (measured)": a send from the worker thread that is not handed to
the server's loop arrives late or not at all)."""
import os
import shutil
import statistics
from pathlib import Path

import pytest

from tests.support import ROOT, launch_chromium, log_in

pytestmark = [pytest.mark.browser, pytest.mark.slow]

BATCH, THRESHOLD = 20, 10


def _need_browser():
    from tests.support import CHROMIUM, need

    need(Path(CHROMIUM).exists(), f"Chromium is not installed at {CHROMIUM} (LOUPE_CHROMIUM)")
    return pytest.importorskip("playwright.sync_api")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    from tests.support import LoupeServer

    _need_browser()  # before the (slow) server start
    srv = LoupeServer(tmp_path_factory.mktemp("embedded"), {})
    try:
        srv.setup_demo(limit=None, batch_size=BATCH, refill_threshold=THRESHOLD)  # the whole demo, as README shows
        srv.start()
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    from tests.support import CHROMIUM

    sync_api = _need_browser()
    with sync_api.sync_playwright() as p:
        browser = launch_chromium(p, CHROMIUM)
        pg = browser.new_page(viewport={"width": 1100, "height": 860})
        errors = []
        pg.on("pageerror", lambda exc: errors.append(str(exc)))
        log_in(pg, server.url, "/projects/1/label/")
        pg.wait_for_selector("#current-image:not([hidden])", timeout=15000)
        pg.wait_for_function("document.getElementById('conn').dataset.state === 'open'", timeout=10000)
        # Marks that vanish on a reload, and a log of every push the page gets.
        pg.evaluate("""() => {
            window.__noReload = true;
            window.__pushes = [];
            document.addEventListener('loupe:message', (e) =>
                window.__pushes.push({...e.detail.message, receivedAt: e.detail.receivedAt}));
        }""")
        pg.errors = errors
        # The round the page opened on: a round may start (or even finish) while the first test labels,
        # since the page's leases take items out of the pending count that the refill policy watches.
        pg.round_at_load = int(pg.get_attribute("#round-indicator", "data-round") or 1)
        yield pg
        browser.close()


def current_item(page) -> str:
    return page.get_attribute("#labeler", "data-item-id")


def press_and_advance(page, key: str) -> str:
    before = current_item(page)
    page.keyboard.press(key)
    page.wait_for_function(f"document.getElementById('labeler').dataset.itemId !== '{before}'", timeout=5000)
    return before


def test_label_five_items_by_keyboard_and_see_the_progress(page, server):
    mine = int(page.inner_text("#mine-count"))
    labeled = int(page.inner_text("#labeled-count"))
    shown = [press_and_advance(page, key) for key in "12345"]
    assert len(set(shown)) == 5
    page.wait_for_function(f"document.getElementById('mine-count').textContent === '{mine + 5}'", timeout=10000)
    assert int(page.inner_text("#labeled-count")) == labeled + 5
    # The server agrees: five labels by this user, with the keys' classes.
    token = server.token("admin")
    code, body = server.api(token, "/api/projects/1/status")
    assert code == 200 and body["progress"]["mine"] == mine + 5
    assert page.errors == []


def test_the_queue_refreshes_after_a_round_without_a_reload(page, server):
    start_round = page.round_at_load
    presses = 0
    # Label until the refill policy starts a round and its queue.updated reaches the page.
    while not page.evaluate("window.__pushes.some((m) => m.type === 'queue.updated')"):
        assert presses < BATCH + 5, "no round was pushed to the page"
        if page.get_attribute("#round-indicator", "data-state") == "running":
            page.wait_for_function("window.__pushes.some((m) => m.type === 'queue.updated')", timeout=30000)
            break
        press_and_advance(page, "7")
        presses += 1
    pushes = page.evaluate("window.__pushes")
    update = next(m for m in pushes if m["type"] == "queue.updated")
    # Up to BATCH: an item of the superseded queue that this page leased and labeled while the round
    # trained is left out of the new batch (it is decided), so one or two fewer may be written.
    assert update["round"] == start_round + 1 and 0 < update["added"] <= BATCH
    assert page.evaluate("window.__noReload") is True
    page.wait_for_function(f"document.getElementById('round-indicator').dataset.round === '{update['round']}'")
    # Items of the new round come up once the ones already held are done, all without a reload.
    for _ in range(8):
        if f"from round {update['round']}" in page.inner_text("#item-caption"):
            break
        press_and_advance(page, "3")
    assert f"from round {update['round']}" in page.inner_text("#item-caption")
    assert page.evaluate("window.__noReload") is True

    latencies = [m["receivedAt"] - m["sent_at"] for m in pushes if "sent_at" in m]
    median = statistics.median(latencies)
    print(f"embedded push latency worker thread -> browser: median {median:.1f} ms, max {max(latencies):.1f} ms "
          f"over {len(latencies)} messages")
    assert median < 250, latencies  # measured: ~10 ms handed to the server loop, ~700 ms when not

    shot = server.var_dir / "labeling.png"
    page.screenshot(path=str(shot))
    if os.environ.get("LOUPE_UPDATE_SCREENSHOT") == "1":
        dest = ROOT / "docs" / "img" / "labeling-demo.png"
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, dest)
    assert page.errors == []


def test_undo_and_help_by_keyboard(page):
    before = press_and_advance(page, "2")
    page.keyboard.press("Backspace")
    page.wait_for_function(f"document.getElementById('labeler').dataset.itemId === '{before}'", timeout=5000)
    page.keyboard.press("?")
    assert page.is_visible("#help")
    page.keyboard.press("Escape")
    assert not page.is_visible("#help")
    assert page.evaluate("window.__noReload") is True


def test_leaving_the_page_hands_its_leases_back(page, server):
    import time

    token = server.token("admin")

    def leased() -> int:
        code, body = server.api(token, "/api/projects/1/status")
        assert code == 200
        return body["progress"]["leased"]

    assert leased() > 0
    page.goto(f"{server.url}/")  # pagehide on the labeling page
    deadline = time.time() + 10
    while leased() and time.time() < deadline:
        time.sleep(0.2)
    assert leased() == 0
