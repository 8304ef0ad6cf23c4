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


def test_failed_api_tokens_are_throttled_per_address(make_user):
    _, key = token_create(user=make_user("bot"))
    c = Client()
    for _ in range(3):
        assert c.get("/api/projects/1/status", HTTP_AUTHORIZATION="Token nope").status_code == 401
    r = c.get("/api/projects/1/status", HTTP_AUTHORIZATION=f"Token {key}")
    assert r.status_code == 429 and "too many failed token attempts" in r.json()["error"]
    assert int(r["Retry-After"]) > 0
    other = Client(REMOTE_ADDR="10.0.0.9")  # another address is not blocked
    assert other.get("/api/projects/1/status", HTTP_AUTHORIZATION=f"Token {key}").status_code == 404


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
