"""Security rules of issue 6, item 5: one test per rule, each showing that the wrong user is refused.

Every refusal is paired with the right user getting through the same door, so a test cannot
pass because the URL was wrong or the view is broken for everybody.

Rules:
 1. every page requires login and project membership;
 2. every API call requires authentication and membership (and the role it needs);
 3. item images only through the permission-checked view, never a public media URL;
 4. WebSockets: session auth, membership, and the Origin check;
 5. CSRF on forms and on the session-authenticated API;
 6. upload size and type limits;
 7. configuration (project settings, import, export) is admin-only;
 8. production mode: secure cookies, strict hosts, no DEBUG, a real SECRET_KEY.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from tests.ops.ops_support import png_bytes

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

ANON_REFUSED = {401, 403, 404}
OUTSIDER_REFUSED = {403, 404}

pytestmark = pytest.mark.django_db


# --------------------------------------------------------------------------- fixtures
@pytest.fixture
def world(make_project, add_member, settings):
    """Two projects; users: admin/reviewer/annotator of A, an admin of B (an outsider to A)."""
    from annotate.models import Job, Membership

    media_root = Path(settings.MEDIA_ROOT)
    a = make_project(name="A", n_items=12, batch_size=10)
    b = make_project(name="B", n_items=3, seed=1)
    users = {
        "admin": add_member(a, "a-admin", Membership.Role.ADMIN),
        "reviewer": add_member(a, "a-reviewer", Membership.Role.REVIEWER),
        "annotator": add_member(a, "a-annotator", Membership.Role.ANNOTATOR),
        "outsider": add_member(b, "b-admin", Membership.Role.ADMIN),
    }
    try:  # issue 5 mirrors roles onto Django groups/staff for the admin site
        from annotate.services.roles import membership_sync

        for u in users.values():
            membership_sync(user=u)
    except ImportError:
        pass
    # Something to undo for each member of A (so that "undo" answers them with success, not "nothing to undo").
    from annotate.services.annotations import annotation_submit
    from annotate.services.queue import queue_lease

    _seed_queue(a)
    for key in ("admin", "reviewer", "annotator"):
        for _ in range(2):
            entry = queue_lease(project=a, user=users[key], n=1)[0]
            annotation_submit(project=a, user=users[key], item_id=entry.item_id, label="cat")
    export = Path(media_root) / "projects" / str(a.pk) / "exports" / "labels.json"
    export.parent.mkdir(parents=True, exist_ok=True)
    export.write_text("[]")
    job = Job.objects.create(project=a, kind=Job.Kind.EXPORT, status=Job.Status.DONE, progress=1.0,
                             result_file=str(export.relative_to(media_root)), created_by=users["admin"])
    return {"a": a, "b": b, "job": job, "item": a.items.first(), **users}


def client_for(user=None, **kw) -> Client:
    c = Client(**kw)
    if user is not None:
        c.force_login(user)
    return c


def app_urls(world) -> list[tuple[str, str]]:
    """(name, concrete path) for every app URL that takes a project, item or job (admin/auth/static excluded)."""
    values = {"project_id": str(world["a"].pk), "item_id": str(world["item"].pk), "job_id": str(world["job"].pk)}
    found = []

    def walk(patterns, prefix):
        for p in patterns:
            route = prefix + str(p.pattern)
            if isinstance(p, URLResolver):
                if route.startswith(("admin/", "accounts/")):
                    continue
                walk(p.url_patterns, route)
            elif isinstance(p, URLPattern):
                params = re.findall(r"<(?:\w+:)?(\w+)>", route)
                if not params:
                    continue
                if any(k not in values for k in params):
                    raise AssertionError(f"URL {route!r} takes {params}: teach this test how to fill them")
                path = re.sub(r"<(?:\w+:)?(\w+)>", lambda m: values[m.group(1)], route)
                found.append((p.name or route, "/" + path))

    walk(get_resolver().url_patterns, "")
    assert len(found) >= 8, f"too few URLs found: {found}"
    return found


def call(client: Client, path: str):
    """GET the path; when it only takes POST, POST an empty JSON object."""
    resp = client.get(path)
    if resp.status_code == 405:
        resp = client.post(path, data="{}", content_type="application/json")
    return resp


def refused_anonymous(resp) -> bool:
    if resp.status_code == 302:
        return resp["Location"].startswith("/accounts/login/") or "/login" in resp["Location"]
    return resp.status_code in ANON_REFUSED


def allowed(resp) -> bool:
    return resp.status_code not in {401, 403, 404} and not (
        resp.status_code == 302 and "login" in resp.get("Location", ""))


# --------------------------------------------------------------------------- 1 + 2: pages and API
def test_rule1_2_every_project_url_refuses_anonymous_and_non_members(world):
    """Every page and API URL with a project/item/job in it: the project's admin gets through;
    an anonymous visitor and a member of another project do not."""
    problems = []
    for name, path in app_urls(world):
        ok = call(client_for(world["admin"]), path)
        anon = call(client_for(None), path)
        outsider = call(client_for(world["outsider"]), path)
        if not allowed(ok):
            problems.append(f"{name} {path}: the project's admin got {ok.status_code}")
        if not refused_anonymous(anon):
            problems.append(f"{name} {path}: anonymous got {anon.status_code}")
        if outsider.status_code not in OUTSIDER_REFUSED:
            problems.append(f"{name} {path}: a non-member got {outsider.status_code}")
    assert not problems, "\n".join(problems)


def test_rule1_project_list_needs_login_and_shows_only_own_projects(world):
    anon = client_for(None).get("/")
    assert anon.status_code == 302 and anon["Location"].startswith("/accounts/login/")
    mine = client_for(world["annotator"]).get("/").content.decode()
    theirs = client_for(world["outsider"]).get("/").content.decode()
    assert f"/projects/{world['a'].pk}/" in mine
    assert f"/projects/{world['a'].pk}/" not in theirs


def test_rule2_api_refuses_bad_and_foreign_tokens(world):
    from annotate.services.tokens import token_create

    _, mine = token_create(user=world["annotator"])
    _, foreign = token_create(user=world["outsider"])
    url = f"/api/projects/{world['a'].pk}/status"
    assert Client().get(url, HTTP_AUTHORIZATION=f"Token {mine}").status_code == 200
    assert Client().get(url, HTTP_AUTHORIZATION=f"Token {foreign}").status_code == 404
    assert Client().get(url, HTTP_AUTHORIZATION="Token not-a-key").status_code == 401
    assert Client().get(url, HTTP_AUTHORIZATION=f"Bearer {mine}").status_code == 401


def test_rule2_role_limited_urls_refuse_annotators(world):
    """Admin-only and reviewer-only URLs: an annotator of the same project gets 403."""
    limited = [(n, p) for n, p in app_urls(world)
               if not allowed(call(client_for(world["annotator"]), p))]
    assert limited, "no URL needs more than the annotator role (exports and jobs should)"
    for name, path in limited:
        assert call(client_for(world["annotator"]), path).status_code == 403, name
        assert allowed(call(client_for(world["admin"]), path)), name
    names = {n for n, _ in limited}
    assert {"api_export_create", "api_job", "job_download"} <= names, names


# --------------------------------------------------------------------------- 3: images
def test_rule3_images_only_through_the_permission_checked_view(world, settings):
    item = world["item"]
    url = f"/items/{item.pk}/image"
    ok = client_for(world["annotator"]).get(url)
    assert ok.status_code == 200 and ok["Content-Type"] == "image/png"
    assert b"".join(ok.streaming_content).startswith(b"\x89PNG")
    assert "public" not in ok.get("Cache-Control", "")
    assert client_for(None).get(url).status_code in ANON_REFUSED
    assert client_for(world["outsider"]).get(url).status_code == 404
    # No public media URL: the file's own path under MEDIA_ROOT is not served to anyone.
    assert not settings.MEDIA_URL
    for prefix in ("/media/", "/static/", "/"):
        resp = client_for(world["admin"]).get(prefix + item.file)
        assert resp.status_code == 404, f"{prefix + item.file} answered {resp.status_code}"


# --------------------------------------------------------------------------- 4: WebSockets
async def _ws_connect(path: str, headers: list[tuple[bytes, bytes]]):
    from channels.testing import WebsocketCommunicator

    from config.asgi import application

    comm = WebsocketCommunicator(application, path, headers=headers)
    connected, code = await comm.connect(timeout=5)
    await comm.disconnect()
    return connected, code


def _session_cookie(user) -> bytes:
    c = Client()
    c.force_login(user)
    return f"sessionid={c.cookies['sessionid'].value}".encode()


@pytest.mark.django_db(transaction=True)
def test_rule4_websocket_needs_session_membership_and_same_origin(make_project, add_member):
    from annotate.models import Membership

    a = make_project(name="WS-A", n_items=2)
    b = make_project(name="WS-B", n_items=2, seed=1)
    member = add_member(a, "ws-member", Membership.Role.ANNOTATOR)
    outsider = add_member(b, "ws-outsider", Membership.Role.ANNOTATOR)
    path = f"/ws/projects/{a.pk}/"
    origin = (b"origin", b"http://127.0.0.1")
    ok, _ = asyncio.run(_ws_connect(path, [origin, (b"cookie", _session_cookie(member))]))
    assert ok is True
    anon, anon_code = asyncio.run(_ws_connect(path, [origin]))
    assert anon is False and anon_code == 4401
    other, other_code = asyncio.run(_ws_connect(path, [origin, (b"cookie", _session_cookie(outsider))]))
    assert other is False and other_code == 4404
    # Cross-site WebSocket hijacking: the member's cookie sent from a foreign page is refused.
    headers = [(b"origin", b"https://evil.example"), (b"cookie", _session_cookie(member))]
    evil, _ = asyncio.run(_ws_connect(path, headers))
    assert evil is False


# --------------------------------------------------------------------------- 5: CSRF
def test_rule5_csrf_required_on_session_api_writes(world):
    from annotate.models import Annotation

    user = world["annotator"]
    c = client_for(user, enforce_csrf_checks=True)
    lease = c.post(f"/api/projects/{world['a'].pk}/lease", data='{"n": 1}', content_type="application/json")
    assert lease.status_code == 403 and "CSRF" in lease.json()["error"]
    # The same request with the token the page holds goes through.
    secret = uuid.uuid4().hex
    c.cookies["csrftoken"] = secret
    _seed_queue(world["a"])
    lease = c.post(f"/api/projects/{world['a'].pk}/lease", data='{"n": 1}', content_type="application/json",
                   HTTP_X_CSRFTOKEN=secret)
    assert lease.status_code == 200 and lease.json()["items"]
    item_id = lease.json()["items"][0]["item_id"]
    body = json.dumps({"item_id": item_id, "label": "cat"})
    c2 = client_for(user, enforce_csrf_checks=True)
    c2.cookies["csrftoken"] = secret
    forged = c2.post(f"/api/projects/{world['a'].pk}/label", data=body, content_type="application/json",
                     HTTP_X_CSRFTOKEN=uuid.uuid4().hex)  # a token that does not match the cookie
    assert forged.status_code == 403
    assert not Annotation.objects.filter(item_id=item_id).exists()
    good = c2.post(f"/api/projects/{world['a'].pk}/label", data=body, content_type="application/json",
                   HTTP_X_CSRFTOKEN=secret)
    assert good.status_code == 201


def test_rule5_csrf_required_on_forms(world):
    from django.contrib.auth import get_user_model

    get_user_model().objects.create_user("form-user", password="pw-123456789")
    c = Client(enforce_csrf_checks=True)
    refused = c.post("/accounts/login/", {"username": "form-user", "password": "pw-123456789"})
    assert refused.status_code == 403 and "_auth_user_id" not in c.session
    page = c.get("/accounts/login/")
    token = page.context["csrf_token"] if page.context else c.cookies["csrftoken"].value
    ok = c.post("/accounts/login/", {"username": "form-user", "password": "pw-123456789",
                                     "csrfmiddlewaretoken": str(token)})
    assert ok.status_code == 302 and "_auth_user_id" in c.session


# --------------------------------------------------------------------------- 6: upload limits
def _seed_queue(project, n=None):
    from annotate.models import QueueEntry

    items = list(project.items.all()[: n or 100])
    QueueEntry.objects.bulk_create(
        [QueueEntry(project=project, item=it, rank=k) for k, it in enumerate(items)
         if not QueueEntry.objects.filter(item=it).exists()])


def test_rule6_request_body_size_limit(world, settings):
    from annotate.models import Annotation

    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 4096
    _seed_queue(world["a"])
    c = client_for(world["annotator"])
    item_id = c.post(f"/api/projects/{world['a'].pk}/lease", data='{"n": 1}',
                     content_type="application/json").json()["items"][0]["item_id"]
    body = json.dumps({"item_id": item_id, "label": "cat"})
    too_big = body[:-1] + " " * 5000 + "}"  # the same JSON, padded past the limit
    resp = c.post(f"/api/projects/{world['a'].pk}/label", data=too_big, content_type="application/json")
    assert resp.status_code == 400
    assert not Annotation.objects.filter(item_id=item_id).exists()
    resp = c.post(f"/api/projects/{world['a'].pk}/label", data=body, content_type="application/json")
    assert resp.status_code == 201


def test_rule6_upload_size_and_type_limits(settings, tmp_path):
    """An upload over LOUPE_MAX_UPLOAD_BYTES is refused by the import form; a file that is not an
    allowed image is skipped with its reason; an image over LOUPE_MAX_IMAGE_BYTES likewise."""
    import zipfile

    from django.core.files.uploadedfile import SimpleUploadedFile

    from annotate.forms import ImportForm
    from annotate.services.imports import ImportOptions, import_images



    settings.LOUPE_MAX_UPLOAD_BYTES = 2048
    big = SimpleUploadedFile("images.zip", b"PK" + b"\0" * 4096, content_type="application/zip")
    form = ImportForm(data={"labels_as": "ground_truth"}, files={"zip_file": big})
    assert not form.is_valid() and "LOUPE_MAX_UPLOAD_BYTES" in str(form.errors)
    small = SimpleUploadedFile("images.zip", b"PK" + b"\0" * 100, content_type="application/zip")
    assert ImportForm(data={"labels_as": "ground_truth"}, files={"zip_file": small}).is_valid()

    settings.LOUPE_MAX_UPLOAD_BYTES = 10**8
    settings.LOUPE_MAX_IMAGE_BYTES = 4096
    from PIL import Image
    import io as _io
    import numpy as np

    buf = _io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (128, 128, 3), dtype=np.uint8)).save(buf, "PNG")
    archive = tmp_path / "upload.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("ok.png", png_bytes(999))
        z.writestr("script.png", b"<script>alert(1)</script>")  # not an image, whatever its name
        z.writestr("page.html", b"<html></html>")
        z.writestr("huge.png", buf.getvalue())  # a real image, over LOUPE_MAX_IMAGE_BYTES
    from annotate.models import Project

    project = Project.objects.create(name="upload-target", classes=["cat", "dog"], extractor="pixels")
    before = project.items.count()
    result = import_images(project=project, options=ImportOptions(source=str(archive)))
    skipped = " ".join(str(s) for s in getattr(result, "skipped", []))
    assert project.items.count() == before + 1, skipped
    assert "script.png" in skipped and "huge.png" in skipped and "LOUPE_MAX_IMAGE_BYTES" in skipped


# --------------------------------------------------------------------------- 7: admin-only configuration
def test_rule7_project_configuration_is_admin_only(world):
    a = world["a"]
    url = f"/admin/annotate/project/{a.pk}/change/"
    for who in ("annotator", "reviewer"):
        resp = client_for(world[who]).get(url)
        assert resp.status_code in (302, 403, 404), f"{who} opened the project's settings ({resp.status_code})"
        if resp.status_code == 302:
            assert "/admin/login/" in resp["Location"]
    # A project admin of B cannot open A's settings or A's import/export pages.
    for path in (url, f"/admin/annotate/project/{a.pk}/import/", f"/admin/annotate/project/{a.pk}/export/"):
        resp = client_for(world["outsider"]).get(path)
        assert resp.status_code in (302, 403, 404), f"{path}: admin of another project got {resp.status_code}"
    # A's admin can.
    assert client_for(world["admin"]).get(url).status_code == 200
    # An annotator's POST to the change form changes nothing.
    client_for(world["annotator"]).post(url, {"name": "hijacked", "batch_size": 1})
    a.refresh_from_db()
    assert a.name == "A" and a.batch_size == 10


def test_rule7_server_side_import_sources_are_superuser_only(world):
    """A project admin (not a superuser) cannot point an import at the server's own files."""
    from annotate.models import Job

    c = client_for(world["admin"])
    before = Job.objects.filter(kind=Job.Kind.IMPORT).count()
    for data in ({"folder": "/etc"}, {"manifest_url": "file:///etc/passwd"}, {"manifest_url": "/etc/passwd"}):
        resp = c.post(f"/admin/annotate/project/{world['a'].pk}/import/", {**data, "labels_as": "ground_truth"})
        assert resp.status_code in (200, 403), f"{data}: {resp.status_code}"
    assert Job.objects.filter(kind=Job.Kind.IMPORT).count() == before
    # A superuser may (the right user gets through the same door).
    from django.contrib.auth import get_user_model

    root = get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-123456")
    resp = client_for(root).post(f"/admin/annotate/project/{world['a'].pk}/import/",
                                 {"folder": str(Path(__file__).parent), "labels_as": "ground_truth"})
    assert resp.status_code == 302 and Job.objects.filter(kind=Job.Kind.IMPORT).count() == before + 1


def test_rule7_manifest_urls_of_admins_cannot_reach_internal_addresses(world):
    """No SSRF through imports: a project admin's manifest URL may not name a loopback, private or
    link-local host (the worker would fetch it)."""
    from annotate.models import Job

    c = client_for(world["admin"])
    before = Job.objects.filter(kind=Job.Kind.IMPORT).count()
    for url in ("http://127.0.0.1:6379/manifest.csv", "http://169.254.169.254/latest/meta-data/",
                "http://localhost:5432/x.csv"):
        resp = c.post(f"/admin/annotate/project/{world['a'].pk}/import/",
                      {"manifest_url": url, "labels_as": "ground_truth"})
        assert resp.status_code in (200, 403), f"{url}: {resp.status_code}"
    assert Job.objects.filter(kind=Job.Kind.IMPORT).count() == before


# --------------------------------------------------------------------------- 8: production settings
def _production(extra: dict[str, str], code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in ("DEBUG", "ALLOWED_HOSTS", "SECRET_KEY", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE")}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", LOUPE_PRODUCTION="1", **extra)
    return subprocess.run([PY, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_rule8_production_refuses_to_start_without_a_secret_key():
    out = _production({}, "import django; django.setup()")
    assert out.returncode != 0 and "SECRET_KEY" in out.stderr


def test_rule8_production_settings_pass_the_deploy_checks(tmp_path):
    code = """
import json, django
django.setup()
from django.conf import settings as s
from django.core.management import call_command
from django.core import checks
msgs = [m.id for m in checks.run_checks(include_deployment_checks=True) if m.level >= checks.WARNING]
print(json.dumps({"msgs": msgs, "debug": s.DEBUG, "session_secure": s.SESSION_COOKIE_SECURE,
  "csrf_secure": s.CSRF_COOKIE_SECURE, "httponly": s.SESSION_COOKIE_HTTPONLY, "hosts": s.ALLOWED_HOSTS,
  "xfo": s.X_FRAME_OPTIONS, "nosniff": s.SECURE_CONTENT_TYPE_NOSNIFF}))
"""
    out = _production({"SECRET_KEY": "s" * 20 + uuid.uuid4().hex * 2, "ALLOWED_HOSTS": "loupe.example.org",
                       "LOUPE_VAR_DIR": str(tmp_path)}, code)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["debug"] is False and got["session_secure"] and got["csrf_secure"] and got["httponly"]
    assert got["hosts"] == ["loupe.example.org"] and got["xfo"] == "DENY" and got["nosniff"]
    # TLS ends at the proxy (docs/deploy.md): HSTS and the SSL redirect are the proxy's to set,
    # so only those two deploy warnings may remain.
    assert set(got["msgs"]) <= {"security.W004", "security.W008"}, got["msgs"]


def test_rule8_production_refuses_unknown_hosts(tmp_path):
    code = """
import django
django.setup()
from django.test import Client
c = Client()
print(c.get("/accounts/login/", HTTP_HOST="evil.example", secure=True).status_code,
      c.get("/accounts/login/", HTTP_HOST="loupe.example.org", secure=True).status_code)
"""
    out = _production({"SECRET_KEY": "s" * 60, "ALLOWED_HOSTS": "loupe.example.org",
                       "LOUPE_VAR_DIR": str(tmp_path), "DATABASE_URL": f"sqlite:///{tmp_path / 'x.db'}"}, code)
    assert out.returncode == 0, out.stderr
    evil, good = out.stdout.split()[-2:]
    assert evil == "400"
    assert good == "200"
