"""Headless Chromium on the pages an admin uses: the project setup page (compact round history, plain-word
parameters, errors beside their field, a save that works with the round table), a job page in words, and
the dashboard whose charts put the axis top at or above the data.  Saves the screenshots of docs/img/."""
from __future__ import annotations

import json

import pytest

from tests.browser.labeling_support import chromium_or_skip, save_screenshot
from tests.support import CHROMIUM, launch_chromium, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow]


@pytest.fixture(scope="module")
def srv(tmp_path_factory):
    chromium_or_skip()
    from tests.support import LoupeServer

    srv = LoupeServer(tmp_path_factory.mktemp("setup"), {})
    try:
        srv.setup_demo(limit=200, batch_size=10, refill_threshold=3)
        srv.start()
        token = srv.token("admin")
        truth = json.loads(srv.manage("shell", "--no-imports", "-c", "import json; from annotate.models import Item; "
                                      "print(json.dumps(dict(Item.objects.values_list('id', 'ground_truth'))))"))

        def done_rounds() -> int:
            return sum(r["status"] == "done" for r in srv.api(token, "/api/projects/1/stats")[1]["rounds"])

        def label_some() -> int:
            code, data = srv.api(token, "/api/projects/1/lease", {"n": 10})
            assert code == 200, data
            for it in data["items"]:
                srv.api(token, "/api/projects/1/label", {"item_id": it["item_id"], "label": truth[str(it["item_id"])]})
            return done_rounds()

        # A few rounds, so the history and the charts have something to show (the refill policy starts them).
        wait_for(lambda: label_some() >= 4, 180, "four finished rounds", interval=1.0)
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def page(srv):
    with chromium_or_skip()() as p:
        browser = launch_chromium(p, CHROMIUM)
        pg = browser.new_page(viewport={"width": 1280, "height": 800})
        pg.errors = []
        pg.on("pageerror", lambda exc: pg.errors.append(str(exc)))
        pg.goto(f"{srv.url}/accounts/login/")
        pg.fill("#id_username", "admin")
        pg.fill("#id_password", "admin-pw-123")
        pg.click("button[type=submit]")
        yield pg
        browser.close()


def test_the_setup_page_is_compact_and_says_things_in_plain_words(srv, page, tmp_path):
    page.goto(f"{srv.url}/admin/annotate/project/1/change/")
    rows = page.locator("table.loupe-compact tbody tr[data-round]")
    assert rows.count() >= 4
    heights = [rows.nth(i).bounding_box()["height"] for i in range(rows.count())]
    assert max(heights) < 40, heights  # one line per round (was ~225 px)
    form_width = page.locator("#project_form").bounding_box()["width"]
    assert page.locator("#id_strategy").bounding_box()["width"] <= form_width
    assert "[temperature β]" in page.text_content("#project_form")  # plain words, the paper term in brackets
    assert page.locator("#keymap kbd").first.inner_text() == "1"
    save_screenshot(page, "setup.png", tmp_path)
    # A bad value is reported beside its field, and nothing is saved.
    page.fill("#id_candidate_coverage", "1.5")
    page.click("input[name=_continue]")
    err = page.locator(".field-candidate_coverage .errorlist")
    assert "between 0.5 and 0.99" in err.inner_text()
    # A good value saves (the round table keeps the inline formset valid).
    page.fill("#id_candidate_coverage", "0.8")
    page.click("input[name=_continue]")
    page.wait_for_selector(".messagelist .success")
    assert page.input_value("#id_candidate_coverage") == "0.8"
    assert page.errors == []


def test_a_job_page_reads_in_words(srv, page):
    page.goto(f"{srv.url}/admin/annotate/project/1/export/")
    page.select_option("select[name=format]", "csv")
    page.click("input[value='Start export']")
    page.wait_for_url("**/jobs/**")
    page.wait_for_function("document.getElementById('job').dataset.state === 'done'", timeout=60000)
    page.wait_for_selector("#job-counts", timeout=15000)  # reloaded once finished: the counts in a table
    assert "Records" in page.inner_text("#job-counts")
    assert page.locator("#job a[href$='/change/']").count() >= 1
    assert page.errors == []


def test_charts_put_the_axis_top_at_or_above_the_tallest_bar(srv, page, tmp_path):
    page.goto(f"{srv.url}/projects/1/")
    page.wait_for_selector("#live[data-state=open]", timeout=15000)
    got = page.evaluate("""async () => {
        const {barChart} = await import('/static/charts.js');
        const el = document.createElement('div');
        el.style.width = '400px';
        document.body.append(el);
        barChart(el, {bars: [{label: 'a', value: 7.8}, {label: 'b', value: 7.1}, {label: 'c', value: 12}]});
        const rects = [...el.querySelectorAll('rect')].map((r) => +r.getAttribute('height'));
        const ticks = [...el.querySelectorAll('text.tick')].map((t) => +t.textContent).filter((v) => !isNaN(v));
        const ys = [...el.querySelectorAll('rect')].map((r) => +r.getAttribute('y'));
        el.remove();
        return {rects, top: Math.max(...ticks), minY: Math.min(...ys)};
    }""")
    assert got["top"] >= 12
    assert got["rects"][0] > got["rects"][1]  # 7.8 and 7.1 are drawn at different heights
    assert got["minY"] >= 12  # inside the plot: nothing spills over the top
    assert page.get_attribute("#chart-rounds svg", "aria-label") == "bar chart: seconds per round"
    assert page.get_attribute("#live", "aria-label").startswith("live updates")
    page.set_viewport_size({"width": 1280, "height": 1000})
    save_screenshot(page, "dashboard.png", tmp_path)
    assert page.errors == []
