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
import re
import sys
import uuid
from pathlib import Path

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from tests.ops.ops_support import client_for, seed_queue

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable

ANON_REFUSED = {401, 403, 404}
OUTSIDER_REFUSED = {403, 404}

pytestmark = pytest.mark.django_db


# --------------------------------------------------------------------------- fixtures
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
    seed_queue(world["a"])
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
