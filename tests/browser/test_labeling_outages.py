"""Headless Chromium on the labeling page when things go wrong around it: the server answers 503 for a while
(a restart behind a proxy) and the label is kept and sent when it is back; two tabs of one annotator, which
hold the same leased items, do not offer an item the other tab has labeled."""
from __future__ import annotations

import pytest

from tests.browser.labeling_support import (
    PASSWORD,
    add_project,
    chromium_or_skip,
    open_page,
    stored_labels,
    truth,
    wait_for_item,
)
from tests.support import CHROMIUM, LoupeServer, launch_chromium, log_in, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]

ANIMALS = ["cat", "dog", "bird"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    chromium_or_skip()
    srv = LoupeServer(tmp_path_factory.mktemp("outages"), {})
    try:
        srv.manage("migrate", "-v0")
        srv.manage("loupe_admin", "--username", "admin", "--password", PASSWORD)
        srv.pid = add_project(srv, "animals", ANIMALS, per_class=8, size=32)
        srv.start()
        yield srv
    finally:
        srv.stop()


def key_of(page, label: str) -> str:
    return page.get_attribute(f'.class-btn[data-label="{label}"]', "data-hotkey")


def test_a_label_sent_while_the_server_answers_503_is_kept_and_stored_when_it_is_back(server, pw):
    browser, page = open_page(pw, server, f"/projects/{server.pid}/label/")
    try:
        answer = truth(server, server.pid)
        item = wait_for_item(page)
        refused = []

        def restarting(route):
            if len(refused) < 3:  # the first three sends meet a server that is restarting
                refused.append(route.request.post_data)
                route.fulfill(status=503, content_type="application/json", body='{"error": "restarting"}')
            else:
                route.continue_()

        page.route("**/api/projects/*/label", restarting)
        page.keyboard.press(key_of(page, answer[item]))
        page.wait_for_function("document.getElementById('toast').textContent.includes('kept here')", timeout=5000)
        page.wait_for_function("document.getElementById('toast').textContent.includes('every label is saved')",
                               timeout=20000)
        assert len(refused) == 3 and len(set(refused)) == 1  # the same body (same client_id) each time
        assert stored_labels(server, server.pid)[item] == (answer[item], "manual")
        assert page.errors == []
    finally:
        browser.close()


def test_two_tabs_of_one_annotator_never_offer_an_item_the_other_labeled(server, pw):
    browser = launch_chromium(pw, CHROMIUM)
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 800})  # one session, two tabs
        tab_a, tab_b = context.new_page(), context.new_page()
        log_in(tab_a, server.url, f"/projects/{server.pid}/label/", password=PASSWORD)
        tab_b.goto(f"{server.url}/projects/{server.pid}/label/")
        answer = truth(server, server.pid)
        wait_for_item(tab_a), wait_for_item(tab_b)
        refused = []
        for tab in (tab_a, tab_b):
            tab.on("response", lambda r: refused.append(r.url) if r.status == 409 else None)
        labeled = []
        for tab in (tab_a, tab_b, tab_a, tab_b, tab_a, tab_b):
            wait_for_item(tab)
            # The other tab's label reaches this one at once; without that, this tab still shows its item.
            tab.wait_for_function("(done) => !done.includes(+document.getElementById('labeler').dataset.itemId)",
                                  arg=labeled, timeout=3000)
            item = int(tab.get_attribute("#labeler", "data-item-id"))
            labeled.append(item)
            tab.keyboard.press(key_of(tab, answer[item]))
            tab.wait_for_function(f"document.getElementById('labeler').dataset.itemId !== '{item}'", timeout=5000)
        wait_for(lambda: set(labeled) <= set(stored_labels(server, server.pid)), 60, "six labels stored", interval=2)
        assert refused == []
    finally:
        browser.close()


def test_an_ended_session_leads_to_the_login_page_saying_so_and_back_to_the_same_item(server, pw):
    browser = launch_chromium(pw, CHROMIUM)
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 800})
        page = context.new_page()
        log_in(page, server.url, f"/projects/{server.pid}/label/", password=PASSWORD)
        item = wait_for_item(page)
        kept = [c for c in context.cookies() if c["name"] != "sessionid"]  # the session ends (expiry, logout)
        context.clear_cookies()
        context.add_cookies(kept)
        page.keyboard.press("1")
        page.wait_for_selector("#session-ended", timeout=10000)
        assert "session has ended" in page.inner_text("#session-ended")
        page.fill("#id_username", "admin")
        page.fill("#id_password", PASSWORD)
        page.click("button[type=submit]")
        assert wait_for_item(page) == item  # the label that met the ended session was not stored: asked again
    finally:
        browser.close()


def test_a_few_classes_share_the_whole_row_and_every_button_names_its_class(server, pw):
    """Three classes got 7-rem buttons at the left of an empty row, so long names were cut to 'Pseu…'."""
    browser, page = open_page(pw, server, f"/projects/{server.pid}/label/")
    try:
        wait_for_item(page)
        row = page.locator("#classes").bounding_box()["width"]
        buttons = page.locator(".class-btn")
        widths = [buttons.nth(i).bounding_box()["width"] for i in range(buttons.count())]
        assert len(widths) == 3 and min(widths) > row / 3 - 20, (row, widths)
        assert [buttons.nth(i).get_attribute("title") for i in range(3)] == ANIMALS  # the full name on hover
    finally:
        browser.close()


def test_a_double_click_on_export_starts_one_export(server, pw):
    browser, page = open_page(pw, server, f"/projects/{server.pid}/")
    try:
        token = server.token("admin")

        def exports() -> int:
            code, body = server.api(token, f"/api/projects/{server.pid}/stats")
            assert code == 200
            return sum(j["kind"] == "export" for j in body["jobs"])

        before = exports()
        page.select_option("form[data-export] select", "csv")
        page.dblclick("form[data-export] [type=submit]")
        wait_for(lambda: exports() > before, 20, "the export job")
        page.wait_for_timeout(1500)  # a second request, if any, would have been answered by now
        assert exports() == before + 1
    finally:
        browser.close()

