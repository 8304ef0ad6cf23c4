"""Sessions and users from the cache (annotate/cached_auth.py): logout, deactivation and a role change count
at once, and requests go on reading the database when the cache is unreachable."""
import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from annotate import cached_auth
from annotate.models import Membership
from annotate.services.roles import membership_remove, membership_set

pytestmark = pytest.mark.django_db


@pytest.fixture
def member(make_user, make_project, make_round):
    user = make_user("ann")
    project = make_project(members=[(user, Membership.Role.ANNOTATOR)], n_items=10, batch_size=5)
    make_round(project)
    client = Client()
    client.force_login(user)
    url = f"/api/projects/{project.pk}/status"
    assert client.get(url).status_code == 200  # session and user now cached
    return project, user, client, url


def queries(client, url):
    with CaptureQueriesContext(connection) as ctx:
        r = client.get(url)
    return r, [q["sql"] for q in ctx.captured_queries]


def test_the_session_and_user_come_from_the_cache(member):
    _project, _user, client, url = member
    r, sql = queries(client, url)
    assert r.status_code == 200 and not any("django_session" in q or "auth_user" in q for q in sql), sql


def test_a_logged_out_session_is_refused_even_though_it_was_cached(member):
    _project, _user, client, url = member
    cookie = client.cookies["sessionid"].value
    client.post("/accounts/logout/")
    replay = Client()
    replay.cookies["sessionid"] = cookie  # the old cookie, sent again
    assert replay.get(url).status_code == 401


def test_deactivating_or_changing_the_password_of_a_user_counts_at_once(member):
    _project, user, client, url = member
    user.is_active = False
    user.save()
    assert client.get(url).status_code == 401
    user.is_active = True
    user.save()
    assert client.get(url).status_code == 200
    user.set_password("a new password")  # the session's password hash no longer matches
    user.save()
    assert client.get(url).status_code == 401


def test_a_role_change_or_removal_counts_at_the_next_request(member):
    project, user, client, url = member
    review = f"/api/projects/{project.pk}/review/items"
    assert client.get(review).status_code == 403
    membership_set(project=project, user=user, role=Membership.Role.REVIEWER)
    assert client.get(review).status_code == 200
    membership_remove(project=project, user=user)
    assert client.get(url).status_code == 404


def test_an_unreachable_cache_falls_back_to_the_database(member, settings, caplog):
    _project, _user, client, url = member
    settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache",
                                   "LOCATION": "redis://127.0.0.1:1/0",  # nothing listens on port 1
                                   "OPTIONS": {"socket_connect_timeout": 0.5}}}
    cached_auth._down_until = 0.0
    r, sql = queries(client, url)
    assert r.status_code == 200
    assert any("django_session" in q for q in sql) and any("auth_user" in q for q in sql)
    assert "auth cache skipped" in caplog.text
    r, _sql = queries(client, url)  # within the backoff: the cache is not tried, the database answers
    assert r.status_code == 200
    cached_auth._down_until = 0.0
