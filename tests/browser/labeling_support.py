"""Shared set-up of the labeling-page browser tests: projects imported from a zip of class folders
(as a team would: ``import_images --class-folders``), logged-in pages, and reading labels back."""
from __future__ import annotations

import io
import json
import os
import shutil
import zipfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from tests.support import CHROMIUM, ROOT, LoupeServer, launch_chromium, need

PASSWORD = "admin-pw-123"
IMG_DIR = ROOT / "docs" / "img"


def chromium_or_skip():
    need(os.path.exists(CHROMIUM), f"Chromium is not at {CHROMIUM} (LOUPE_CHROMIUM)")
    try:
        from playwright.sync_api import sync_playwright  # noqa: PLC0415 - optional: the test skips without it
    except ImportError:
        need(False, "playwright is not installed")
    return sync_playwright


def class_zip(path: Path, classes: list[str], per_class: int, seed: int = 0, size: int = 96) -> Path:
    """A zip of ``<class>/<n>.png`` images (``size`` px square): each class its own grey level (well apart
    even after the ``pixels`` extractor's downscale) and tint, with a little noise."""
    from PIL import Image  # noqa: PLC0415 - Pillow only when a zip is built

    rng = np.random.default_rng(seed)
    with zipfile.ZipFile(path, "w") as zf:
        for k, c in enumerate(classes):
            grey = 30 + 190 * k / max(len(classes) - 1, 1)
            base = np.array([grey, grey, grey]) + rng.integers(-20, 20, size=3)
            for n in range(per_class):
                a = np.tile(base, (24, 24, 1)).astype(float)
                a[(k * 5) % 24:(k * 5) % 24 + 3, :, :] = 255 - grey  # a band whose place tells the class too
                a += rng.normal(0, 6, size=a.shape)
                buf = io.BytesIO()
                img = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8))
                img.resize((size, size), Image.NEAREST).save(buf, "PNG")
                zf.writestr(f"{c}/{n:03d}.png", buf.getvalue())
    return path


def add_project(srv: LoupeServer, name: str, classes: list[str], *, per_class: int = 6, batch: int = 12,
                size: int = 96) -> int:
    """A project with ``classes`` in this order, its images imported from a class-folder zip (folder names
    kept as ground truth), embedded, with ``admin`` as its admin.  Returns the project id."""
    zpath = class_zip(srv.var_dir / f"{name}.zip", classes, per_class, size=size)
    out = srv.manage("shell", "--no-imports", "-c", (
        "import json; from django.contrib.auth.models import User; "
        "from annotate.models import Project, Membership; "
        f"p = Project.objects.create(name={name!r}, classes={classes!r}, batch_size={batch}, refill_threshold=3, "
        "audit_rate=0.0); "
        "Membership.objects.create(project=p, user=User.objects.get(username='admin'), role='admin'); "
        "print(json.dumps(p.pk))"))
    srv.manage("import_images", name, str(zpath), "--class-folders", "--no-embed")
    srv.manage("embed_project", name)
    return int(out.strip().splitlines()[-1])


def truth(srv: LoupeServer, project_id: int) -> dict[int, str]:
    out = srv.manage("shell", "--no-imports", "-c", (
        "import json; from annotate.models import Item; "
        f"print(json.dumps(dict(Item.objects.filter(project_id={project_id}).values_list('id', 'ground_truth'))))"))
    return {int(k): v for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def stored_labels(srv: LoupeServer, project_id: int) -> dict[int, tuple[str, str]]:
    """item id -> (label, origin) of admin's current label rows."""
    out = srv.manage("shell", "--no-imports", "-c", (
        "import json; from annotate.models import Annotation; "
        f"rows = Annotation.objects.filter(item__project_id={project_id}, is_current=True, action='label', "
        "annotator__username='admin').values_list('item_id', 'label', 'origin'); "
        "print(json.dumps({i: [l, o] for i, l, o in rows}))"))
    return {int(k): tuple(v) for k, v in json.loads(out.strip().splitlines()[-1]).items()}


def open_page(p, srv: LoupeServer, path: str, viewport=(1280, 800)):
    browser = launch_chromium(p, CHROMIUM)
    page = browser.new_page(viewport={"width": viewport[0], "height": viewport[1]})
    page.errors = []
    page.on("pageerror", lambda exc: page.errors.append(str(exc)))
    page.goto(f"{srv.url}/accounts/login/?next={path}")
    page.fill("#id_username", "admin")
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{path}")
    return browser, page


@contextmanager
def labeling_page(p, srv: LoupeServer, project_id: int, viewport=(1280, 800)):
    """The labeling page of ``project_id``, logged in as the admin, in a browser of its own (closed after)."""
    browser, page = open_page(p, srv, f"/projects/{project_id}/label/", viewport=viewport)
    try:
        yield page
    finally:
        browser.close()


def wait_for_item(page, timeout: float = 30000) -> int:
    page.wait_for_selector("#current-image:not([hidden])", timeout=timeout)
    return int(page.get_attribute("#labeler", "data-item-id"))


def press_and_advance(page, key: str) -> int:
    before = page.get_attribute("#labeler", "data-item-id")
    page.keyboard.press(key)
    page.wait_for_function(f"document.getElementById('labeler').dataset.itemId !== '{before}'", timeout=10000)
    return int(before)


def save_screenshot(page, name: str, tmp: Path) -> Path:
    """Screenshot to ``tmp``; copied into docs/img/ when LOUPE_UPDATE_SCREENSHOT=1."""
    shot = tmp / name
    page.wait_for_function("""() => { const im = document.getElementById('current-image');
        return !im || im.hidden || (im.complete && im.naturalWidth > 0); }""")
    page.screenshot(path=str(shot))
    if os.environ.get("LOUPE_UPDATE_SCREENSHOT") == "1":
        IMG_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, IMG_DIR / name)
    return shot
