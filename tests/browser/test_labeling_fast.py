"""Headless Chromium on the labeling page of an annotator who labels fast (7 labels a second by key)
while each label takes the server a while to store: the page always shows an item while the project
has pending ones, although the labels just typed are still leased to them until their submits land
(the lease does not count those against the page's prefetch or the fair-share cap)."""
from __future__ import annotations

import pytest

from tests.browser.labeling_support import PASSWORD, add_project, chromium_or_skip, labeling_page, wait_for_item
from tests.support import LoupeServer

pytestmark = [pytest.mark.browser, pytest.mark.slow]

CLASSES = ["cat", "dog", "bird"]
BATCH = 40          # one round's entries: far more than the labels typed, so items stay pending throughout
LABELS = 24         # typed at RATE; pending never falls below BATCH - LABELS - (what the page holds)
RATE = 7.0          # labels per second (QA saw empty pages from ~7/s; 2.6/s was fine)
SUBMIT_DELAY_MS = 200  # each label's request waits this long before it leaves (a busier server's latency)

# Every time the page shows no item (the image hidden, the "nothing to label" panel shown), from the
# first item on, with the time and how many labels had been typed.
WATCH_EMPTY = """() => {
  window.emptyAt = [];
  const img = document.getElementById('current-image');
  const seen = () => { if (img.hidden) window.emptyAt.push({t: performance.now(), typed: window.typed || 0}); };
  new MutationObserver(seen).observe(img, {attributes: true, attributeFilter: ['hidden']});
}"""

# Labels (not leases) reach the server SUBMIT_DELAY_MS later than sent: the submits in flight pile up
# as they would against a server that takes that long per label.
SLOW_SUBMITS = f"""() => {{
  const fetch0 = window.fetch.bind(window);
  window.fetch = async (url, init) => {{
    if (String(url).match(/\\/(label|skip)$/)) await new Promise((r) => setTimeout(r, {SUBMIT_DELAY_MS}));
    return fetch0(url, init);
  }};
}}"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    chromium_or_skip()
    srv = LoupeServer(tmp_path_factory.mktemp("fast"), {})
    try:
        srv.manage("migrate", "-v0")
        srv.manage("loupe_admin", "--username", "admin", "--password", PASSWORD)
        srv.pid = add_project(srv, "fast", CLASSES, per_class=20, batch=BATCH, size=32)
        # A teammate: the lease is capped to a fair share (never below the page's prefetch of 6).
        srv.manage("shell", "--no-imports", "-c", (
            "from django.contrib.auth.models import User; from annotate.models import Membership; "
            "u = User.objects.create_user('teammate', password='x-teammate-pw'); "
            f"Membership.objects.create(project_id={srv.pid}, user=u, role='annotator')"))
        srv.start()
        yield srv
    finally:
        srv.stop()


def test_labeling_at_seven_a_second_never_shows_an_empty_page_while_items_are_pending(server, pw):
    with labeling_page(pw, server, server.pid) as page:
        wait_for_item(page)
        page.evaluate(SLOW_SUBMITS)
        page.evaluate(WATCH_EMPTY)
        key = page.get_attribute('.class-btn[data-label="cat"]', "data-hotkey")
        shown = []
        for typed in range(LABELS):
            shown.append(page.get_attribute("#labeler", "data-item-id"))
            page.evaluate(f"window.typed = {typed + 1}")
            page.keyboard.press(key)
            page.wait_for_timeout(1000 / RATE)
        empty = page.evaluate("window.emptyAt")
        assert empty == [], f"the page was empty {len(empty)} time(s) while items were pending: {empty}"
        # every key press labeled a different item: none was typed onto an empty page
        assert "" not in shown and len(set(shown)) == LABELS, shown
        pending = int(page.text_content("#queue-info").split()[0])
        assert pending > 0  # the premise: the queue never ran dry
        assert page.errors == []
