"""Issue 12, rows 11 and 12: the users page is scoped to one's projects; failed logins and failed
API tokens are throttled; tokens are listed and revoked in the admin and by a management command."""
from __future__ import annotations

import io

import pytest
from django.core.cache import cache
from django.core.management import call_command
from django.test import Client

from annotate.models import ApiToken, Membership
from annotate.services.roles import membership_set
from annotate.services.tokens import token_create

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _throttle(settings):
    settings.LOUPE_AUTH_FAILURES = 3
    settings.LOUPE_AUTH_ADDRESS_FAILURES = 6
    cache.clear()
    yield
    cache.clear()


@pytest.fixture
def two_projects(make_project, make_user):
    boss, member, outsider = make_user("boss"), make_user("member"), make_user("outsider")
    root = make_user("root", superuser=True)
    mine, theirs = make_project(name="mine"), make_project(name="theirs")
    membership_set(project=mine, user=boss, role=Membership.Role.ADMIN)
    membership_set(project=mine, user=member, role=Membership.Role.ANNOTATOR)
    membership_set(project=theirs, user=outsider, role=Membership.Role.ANNOTATOR)
    boss.refresh_from_db()
    return boss, member, outsider, root


# --------------------------------------------------------------------------- row 11
def test_a_project_admin_sees_only_members_of_their_projects(two_projects):
    boss, member, outsider, root = two_projects
    c = Client()
    c.force_login(boss)
    page = c.get("/admin/auth/user/")
    assert page.status_code == 200
    html = page.content.decode()
    assert ">member<" in html and ">boss<" in html
    assert "outsider" not in html and ">root<" not in html
    assert "Superuser status" not in html and "is_superuser" not in html
    assert c.get(f"/admin/auth/user/{outsider.pk}/change/").status_code in (302, 404)
    detail = c.get(f"/admin/auth/user/{member.pk}/change/").content.decode()
    assert "Superuser status" not in detail and "User permissions" not in detail
    # The membership picker finds a member by search, anyone else only by exact username.
    url = "/admin/autocomplete/?app_label=annotate&model_name=membership&field_name=user&term="
    found = [r["text"] for r in c.get(url + "o").json()["results"]]
    assert "boss" in found and "outsider" not in found and "root" not in found
    assert [r["text"] for r in c.get(url + "outsider").json()["results"]] == ["outsider"]
    # A superuser still sees everybody.
    c.force_login(root)
    assert "outsider" in c.get("/admin/auth/user/").content.decode()


# --------------------------------------------------------------------------- row 12
def test_failed_logins_are_throttled_by_username_and_the_form_says_so(make_user):
    make_user("alice", password="right-password-1")
    c = Client()
    for _ in range(3):
        r = c.post("/accounts/login/", {"username": "alice", "password": "wrong"})
        assert r.status_code == 200 and "_auth_user_id" not in c.session
    r = c.post("/accounts/login/", {"username": "alice", "password": "right-password-1"})
    assert "_auth_user_id" not in c.session  # refused even with the right password
    assert "Too many failed logins" in r.content.decode()
    r = Client().post("/admin/login/", {"username": "alice", "password": "right-password-1"})
    assert "Too many failed logins" in r.content.decode()
    cache.clear()  # the window has passed
    c.post("/accounts/login/", {"username": "alice", "password": "right-password-1"})
    assert "_auth_user_id" in c.session


def _login(address: str, username: str, password: str) -> bool:
    c = Client(REMOTE_ADDR=address)
    c.post("/accounts/login/", {"username": username, "password": password})
    return "_auth_user_id" in c.session


def test_one_persons_typos_do_not_lock_out_a_team_behind_one_address(make_user):
    """The lockout is per (address, username); the address as a whole has a higher cap (6 here)."""
    for name in ("alice", "bob", "carol", "dave"):
        make_user(name, password=f"{name}-password-1")
    nat, home = "203.0.113.7", "198.51.100.2"
    for _ in range(3):
        assert not _login(nat, "alice", "typo")
    assert not _login(nat, "alice", "alice-password-1")  # alice, from there: locked for the window
    assert _login(nat, "bob", "bob-password-1")  # her colleagues behind the same NAT are not
    assert _login(home, "alice", "alice-password-1")  # nor is alice from elsewhere
    for _ in range(3):
        assert not _login(nat, "bob", "typo")  # 6 failures from the NAT now (a blocked try is not counted)
    assert not _login(nat, "carol", "carol-password-1")  # guessing across usernames: the address cap
    assert _login(home, "carol", "carol-password-1")


def test_guessing_one_username_from_many_addresses_is_capped(make_user):
    make_user("erin", password="erin-password-1")
    for i in range(6):
        assert not _login(f"10.9.0.{i}", "erin", "guess")
    assert not _login("10.9.0.99", "erin", "erin-password-1")


def test_failed_api_tokens_are_throttled_per_token_and_address(make_user):
    _, key = token_create(user=make_user("bot"))
    c = Client()
    for _ in range(3):
        assert c.get("/api/projects/1/status", HTTP_AUTHORIZATION="Token nope").status_code == 401
    r = c.get("/api/projects/1/status", HTTP_AUTHORIZATION="Token nope")
    assert r.status_code == 429 and "too many failed token attempts" in r.json()["error"]
    assert int(r["Retry-After"]) > 0
    # A valid token from the same address still works (a colleague's script behind the same NAT) ...
    assert c.get("/api/projects/1/status", HTTP_AUTHORIZATION=f"Token {key}").status_code == 404
    for n in range(3):  # ... until the address as a whole used its 6 failures (other bad tokens)
        assert c.get("/api/projects/1/status", HTTP_AUTHORIZATION=f"Token other{n}").status_code == 401
    assert c.get("/api/projects/1/status", HTTP_AUTHORIZATION=f"Token {key}").status_code == 429
    other = Client(REMOTE_ADDR="10.0.0.9")  # another address is not blocked
    assert other.get("/api/projects/1/status", HTTP_AUTHORIZATION=f"Token {key}").status_code == 404


@pytest.mark.django_db(transaction=True)
def test_failed_websocket_tokens_are_throttled_like_http(make_user, make_project, settings):
    """The WebSocket path counts failed tokens with the HTTP ones and closes with 4429 while blocked."""
    import asyncio

    from channels.routing import URLRouter
    from channels.testing import WebsocketCommunicator

    from annotate.routing import websocket_urlpatterns

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    bot = make_user("wsbot")
    project = make_project(members=[(bot, Membership.Role.ANNOTATOR)])
    _, key = token_create(user=bot)
    address = "192.0.2.44"
    http = Client(REMOTE_ADDR=address)
    assert http.get("/api/projects/1/status", HTTP_AUTHORIZATION="Token nope").status_code == 401

    async def connect(token: str):
        comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/projects/{project.pk}/",
                                     headers=[(b"authorization", f"Token {token}".encode())])
        comm.scope["client"] = (address, 50000)
        ok, code = await comm.connect()
        await comm.disconnect()
        return "open" if ok else code

    async def run():
        assert [await connect("nope") for _ in range(3)] == [4401, 4401, 4429]  # 1 over HTTP + 2 here
        assert await connect(key) == "open"  # the valid token from the same address still connects
        assert [await connect(f"guess{n}") for n in range(4)] == [4401, 4401, 4401, 4429]  # the address cap
        assert await connect(key) == 4429
        # No lookup while blocked: the valid token did not count, and HTTP sees the same block.

    asyncio.run(run())
    assert http.get("/api/projects/1/status", HTTP_AUTHORIZATION=f"Token {key}").status_code == 429


def test_tokens_are_listed_and_revoked_in_the_admin(make_user, two_projects):
    *_, root = two_projects
    tok, key = token_create(user=make_user("bot"), name="ci")
    c = Client()
    c.force_login(root)
    page = c.get("/admin/annotate/apitoken/").content.decode()
    assert tok.prefix in page and key not in page and tok.key_hash not in page
    r = c.post("/admin/annotate/apitoken/", {"action": "revoke", "_selected_action": [tok.pk]})
    assert r.status_code == 302
    assert ApiToken.objects.get(pk=tok.pk).revoked
    assert Client().get("/api/projects/1/status", HTTP_AUTHORIZATION=f"Token {key}").status_code == 401


def test_tokens_are_listed_and_revoked_by_the_management_command(make_user):
    bot = make_user("bot")
    a, key_a = token_create(user=bot, name="laptop")
    b, _ = token_create(user=bot, name="ci")
    out = io.StringIO()
    call_command("loupe_token", "--list", "bot", stdout=out)
    assert a.prefix in out.getvalue() and "laptop" in out.getvalue() and "active" in out.getvalue()
    call_command("loupe_token", "--revoke", a.prefix, stdout=io.StringIO())
    assert ApiToken.objects.get(pk=a.pk).revoked and not ApiToken.objects.get(pk=b.pk).revoked
    call_command("loupe_token", "--revoke-user", "bot", stdout=io.StringIO())
    assert ApiToken.objects.get(pk=b.pk).revoked
    out = io.StringIO()
    call_command("loupe_token", "--list", stdout=out)
    assert out.getvalue().count("revoked") == 2
