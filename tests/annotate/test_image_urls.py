"""Signed image URLs (annotate/image_urls.py): served without a session or a query, refused when forged or expired."""
import asyncio
import json
import time

import numpy as np
import pytest
from django.conf import settings
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from annotate import image_urls
from annotate.models import Item, Membership
from annotate.storage import media_path

pytestmark = pytest.mark.django_db


@pytest.fixture
def leased(make_user, make_project, make_round):
    user = make_user("ann")
    project = make_project(members=[(user, Membership.Role.ANNOTATOR)], n_items=20, batch_size=10)
    make_round(project)
    client = Client()
    client.force_login(user)
    items = client.post(f"/api/projects/{project.pk}/lease", data=json.dumps({"n": 3}),
                        content_type="application/json").json()["items"]
    return project, items


def asgi_get(path: str, method: str = "GET") -> tuple[int, dict[str, str], bytes]:
    """Call the ASGI fast path as a server would: (status, headers, body)."""
    sent = []

    async def send(msg):
        sent.append(msg)

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    scope = {"type": "http", "method": method, "path": path, "headers": []}
    asyncio.run(image_urls.ImagesFirst(None)(scope, receive, send))
    start = sent[0]
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    return start["status"], headers, b"".join(m.get("body", b"") for m in sent[1:])


def test_a_leased_items_image_url_is_served_without_a_session_or_a_query(leased):
    _project, items = leased
    url = items[0]["image_url"]
    item = Item.objects.get(pk=items[0]["item_id"])
    stored = media_path(item.file).read_bytes()
    anonymous = Client()  # the URL is the proof: no cookie needed
    with CaptureQueriesContext(connection) as ctx:
        r = anonymous.get(url)
    assert r.status_code == 200 and b"".join(r.streaming_content) == stored
    assert len(ctx.captured_queries) == 0, [q["sql"] for q in ctx.captured_queries]
    assert r["Content-Type"] == "image/png" and "immutable" in r["Cache-Control"]
    assert r["Cache-Control"].startswith("private, max-age=")
    assert 0 < int(r["Cache-Control"].split("max-age=")[1].split(",")[0]) <= settings.LOUPE_IMAGE_URL_SECONDS * 1.25 + 1
    # The ASGI fast path (config/asgi.py) answers the same, before Django.
    status, headers, body = asgi_get(url)
    assert status == 200 and body == stored and headers["content-length"] == str(len(stored))
    assert headers["cache-control"].startswith("private, max-age=") and headers["cache-control"].endswith("immutable")
    assert asgi_get(url, "HEAD")[2] == b""


def test_a_repeated_lease_in_one_step_gets_the_same_url(leased):
    _project, items = leased
    item = Item.objects.get(pk=items[0]["item_id"])
    now = time.time()
    assert image_urls.image_url(item.pk, item.file, now=now) == image_urls.image_url(item.pk, item.file, now=now + 1)


@pytest.mark.parametrize("serve", ["django", "asgi"])
def test_forged_altered_expired_and_malformed_urls_are_refused_with_403(leased, serve):
    _project, items = leased
    a, b = (Item.objects.get(pk=i["item_id"]) for i in items[:2])

    def get(url):
        if serve == "asgi":
            status, _h, body = asgi_get(url)
            return status, json.loads(body)["error"]
        r = Client().get(url)
        return r.status_code, r.json()["error"]

    good = image_urls.image_url(a.pk, a.file)
    # /images/<item>/<expires>/<sig>/<path>
    _, _, item_id, expires, sig = good.split("/", 5)[:5]
    prefix = f"/images/{item_id}/{expires}"
    forged = good.replace(sig, ("A" if sig[0] != "A" else "B") + sig[1:])
    assert get(forged) == (403, "bad signature: this image URL was not issued by this server (or was altered)")
    other_file = f"{prefix}/{sig}/{b.file}"  # a valid signature for a's file, pointed at b's
    assert get(other_file)[0] == 403 and "bad signature" in get(other_file)[1]
    longer = good.replace(f"/{expires}/", f"/{int(expires) + 3600}/")  # a later expiry under the old signature
    assert get(longer)[0] == 403 and "bad signature" in get(longer)[1]
    expired = image_urls.image_url(a.pk, a.file, now=time.time() - 10 * settings.LOUPE_IMAGE_URL_SECONDS)
    status, message = get(expired)
    assert status == 403 and message.startswith("image URL expired") and "lease the item again" in message
    assert get("/images/1/2/x") == (403, "malformed image URL; expected /images/<item>/<expires>/<signature>/<path>")
    escape = image_urls.image_url(a.pk, "../../etc/passwd")  # signed by us, still outside MEDIA_ROOT
    assert get(escape)[0] == 403 and "escapes MEDIA_ROOT" in get(escape)[1]


def test_a_post_is_refused_and_a_missing_file_is_404(leased):
    _project, items = leased
    a = Item.objects.get(pk=items[0]["item_id"])
    url = image_urls.image_url(a.pk, a.file)
    assert asgi_get(url, "POST")[0] == 405 and Client().post(url).status_code == 405
    media_path(a.file).unlink()
    assert asgi_get(url)[0] == 404 and Client().get(url).status_code == 404


def test_behind_a_proxy_the_answer_is_x_accel_redirect_without_a_body(leased, settings):
    settings.LOUPE_IMAGE_ACCEL_REDIRECT = "/_media/"
    _project, items = leased
    a = Item.objects.get(pk=items[0]["item_id"])
    url = image_urls.image_url(a.pk, a.file)
    status, headers, body = asgi_get(url)
    assert status == 200 and body == b"" and headers["x-accel-redirect"] == "/_media/" + a.file
    assert "immutable" in headers["cache-control"]
    r = Client().get(url)
    assert r.status_code == 200 and r.content == b"" and r["X-Accel-Redirect"] == "/_media/" + a.file


def _tiff(mode: str) -> bytes:
    import io

    from PIL import Image

    size = (12, 9)
    if mode == "F":
        img = Image.fromarray(np.linspace(0, 1, 108, dtype=np.float32).reshape(9, 12))
    elif mode == "I;16":
        img = Image.fromarray(np.arange(108, dtype=np.uint16).reshape(9, 12) * 600)
    else:
        img = Image.new(mode, size, (10, 200, 30, 0) if mode == "CMYK" else 1)
    buf = io.BytesIO()
    img.save(buf, "TIFF")
    return buf.getvalue()


@pytest.mark.parametrize("mode", ["F", "I;16", "CMYK", "RGB"])
def test_a_tiff_is_sent_to_browsers_as_a_png_copy_and_kept_as_imported(leased, mode):
    """Found by QA: TIFF is an allowed import format, but Chromium and Firefox decode no TIFF, so the
    labeling page (signed URL) and the review page (item view) showed a broken image."""
    import io

    from PIL import Image

    _project, items = leased
    item = Item.objects.get(pk=items[0]["item_id"])
    original = _tiff(mode)
    rel = item.file.rsplit(".", 1)[0] + ".tiff"
    media_path(rel).write_bytes(original)
    Item.objects.filter(pk=item.pk).update(file=rel)
    client = Client()
    client.force_login(_project.memberships.first().user)
    leased_again = client.post(f"/api/projects/{_project.pk}/lease", data=json.dumps({"n": 3}),
                               content_type="application/json").json()["items"]
    url = next(i["image_url"] for i in leased_again if i["item_id"] == item.pk)
    status, headers, body = asgi_get(url)
    viewed = client.get(f"/items/{item.pk}/image")
    for ctype, data in ((headers["content-type"], body), (viewed["Content-Type"], b"".join(viewed.streaming_content))):
        assert ctype == "image/png"
        with Image.open(io.BytesIO(data)) as im:
            assert im.format == "PNG" and im.size == (12, 9)
            if mode == "F":  # float samples 0..1 stretched over 0..255
                px = np.asarray(im)
                assert px.min() == 0 and px.max() == 255
    assert status == 200
    assert media_path(rel).read_bytes() == original  # the import's file is kept as it was (exports use it)
