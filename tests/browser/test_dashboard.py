"""Browser: the dashboard updates live (no reload) when rounds finish, including one started from admin.

A real Loupe (``loupe_serve``: Daphne + embedded worker, its own SQLite and MEDIA_ROOT) serves the
digits demo.  Headless Chromium keeps the dashboard open while labels are posted over the JSON API
(a token, as another annotator would) and while an admin clicks "Start a round now" in a second tab.

How many rounds a burst of labels starts is the refill policy's business, not fixed: it adapts to
the measured pace (``services/refill.py``), and labels posted at API speed while a round takes
longer (a loaded machine) make it start another round within the same burst.  So the test waits
until no round is active and then checks that the page shows exactly the newest round, done.
"""
from __future__ import annotations

import json

import pytest

from tests.support import CHROMIUM, launch_chromium, need, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def _chromium_ok() -> tuple[bool, str]:
    import os

    try:
        import playwright  # noqa: F401
    except ImportError:
        return False, "playwright is not installed"
    if not os.path.exists(CHROMIUM):
        return False, f"Chromium is not at {CHROMIUM} (LOUPE_CHROMIUM)"
    return True, ""


def test_dashboard_updates_live_when_rounds_finish(start_server, tmp_path):
    ok, why = _chromium_ok()
    need(ok, why)
    from playwright.sync_api import sync_playwright

    srv = start_server(demo=dict(limit=150, batch_size=10, refill_threshold=3))
    srv.manage("shell", "-c", "from annotate.models import Project; Project.objects.update(audit_rate=1.0)")
    truth = json.loads(srv.manage("shell", "--no-imports", "-c", "import json; from annotate.models import Item; "
                                  "print(json.dumps({i: g for i, g in "
                                  "Item.objects.values_list('id', 'ground_truth')}))"))
    token = srv.token("admin")

    def label_round(n: int) -> int:
        status, data = srv.api(token, "/api/projects/1/lease", {"n": n})
        assert status == 200, data
        for it in data["items"]:
            status, res = srv.api(token, "/api/projects/1/label",
                                  {"item_id": it["item_id"], "label": truth[str(it["item_id"])]})
            assert status == 201, res
        return len(data["items"])

    def newest_round() -> dict:
        _, data = srv.api(token, "/api/projects/1/stats")
        return max(data["rounds"], key=lambda r: r["number"])

    def settled() -> int:
        """Wait until the newest round is done (the rounds the labels started have all finished;
        nothing starts one without a label or an admin) and the page shows it; its number."""
        wait_for(lambda: newest_round()["status"] == "done", 60, "the newest round done")
        number = newest_round()["number"]
        page.wait_for_function("n => document.querySelector('#training-state').textContent === `Round ${n}: done`",
                               arg=number, timeout=15000)
        return number

    with sync_playwright() as p:
        browser = launch_chromium(p, CHROMIUM)
        context = browser.new_context(viewport={"width": 1280, "height": 1000})
        page = context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(srv.url + "/accounts/login/")
        page.fill("input[name=username]", "admin")
        page.fill("input[name=password]", "admin-pw-123")
        page.click("button[type=submit]")
        page.goto(srv.url + "/projects/1/")
        page.wait_for_selector("#live[data-state=open]", timeout=15000)
        page.evaluate("window.__noReload = 'still here'")
        assert page.get_attribute("#chart-curve", "data-points") == "0"
        assert page.text_content("[data-stat=labeled]").strip() == "0"

        # Round 1 (cold start) is in the queue; labeling it makes the worker run round 2 (and maybe
        # more), whose audit items carry the predictions of a trained model; labeling those runs more.
        assert label_round(10) == 10
        first = settled()
        assert first >= 2
        # Label the newest batch until a label starts the next round: the adaptive refill point decides
        # which label does (items labeled meanwhile are left out of a batch, so a lease may hold few).
        labeled = 0
        for _ in range(8):
            labeled += label_round(10)
            if newest_round()["number"] > first and labeled >= 10:
                break
        assert newest_round()["number"] > first, "labeling the newest batches started no round"
        newest = settled()
        assert newest > first
        print(f"the refill policy ran rounds 2..{first} for the first 10 labels, ..{newest} for the next")
        # The learning curve gets its first point and the counters move, without a reload.
        page.wait_for_function("Number(document.querySelector('#chart-curve').dataset.points) >= 1", timeout=15000)
        page.wait_for_function("Number(document.querySelector('[data-stat=labeled]').textContent) >= 19",
                               timeout=15000)
        assert page.locator("#chart-curve svg circle.dot").count() >= 1
        # The accuracy tile names its estimator and the labels behind it; the agreement report is drawn.
        page.wait_for_function("document.querySelector('[data-stat=accuracy-detail]').textContent"
                               ".includes('audit labels')", timeout=15000)
        tile = page.text_content("[data-stat=accuracy]")
        assert "±" in tile or ("(" in tile and "–" in tile)  # symmetric, or the clipped interval itself
        assert "estimates: how often the model" in page.text_content("[data-stat=accuracy-detail]")
        page.wait_for_function("document.querySelector('#quality').textContent.includes('Krippendorff')",
                               timeout=30000)
        assert page.locator("#chart-distribution svg rect.bar").count() >= 2

        # An admin starts a round from Django admin in another tab; the dashboard shows it finish.  No label
        # came since the rounds settled, so nothing else started one: the admin's is the next number.
        admin = context.new_page()  # same session (logged in)
        admin.goto(srv.url + "/admin/annotate/project/1/change/")
        admin.click("text=Start a round now")
        admin.wait_for_selector(f"text=round {newest + 1} queued", timeout=15000)
        page.wait_for_function("n => document.querySelector('#training-state').textContent === `Round ${n}: done`",
                               arg=newest + 1, timeout=30000)
        page.wait_for_function("n => document.querySelectorAll('#chart-rounds svg rect.bar').length === n",
                               arg=newest + 1, timeout=15000)
        assert page.evaluate("window.__noReload") == "still here"
        page.screenshot(path=str(tmp_path / "dashboard.png"), full_page=True)
        browser.close()
    assert not errors, errors
