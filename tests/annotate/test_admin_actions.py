"""The project list's actions: one message per chosen project, a project's error does not stop the others,
and only the projects the user administers are acted on."""
from __future__ import annotations

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from annotate.models import Project
from tests.factories import add_member, make_user
from tests.factories import empty_project as make_project

pytestmark = pytest.mark.django_db


def _act(client, action: str, projects) -> tuple[int, list[tuple[str, str]]]:
    resp = client.post("/admin/annotate/project/", {"action": action, "_selected_action": [p.pk for p in projects]})
    return resp.status_code, [(m.level_tag, str(m)) for m in get_messages(resp.wsgi_request)]


def _client(user) -> Client:
    c = Client()
    c.force_login(user)
    return c


def test_reassign_keys_tells_each_project_its_new_keys():
    a = make_project(name="a", classes=("cat", "dog"))
    b = make_project(name="b", classes=("x", "y", "z"))
    Project.objects.filter(pk=a.pk).update(hotkeys={"cat": "9", "dog": "2"})
    status, msgs = _act(_client(make_user("root", superuser=True)), "reassign_keys", [a, b])
    assert status == 302
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.hotkeys == {"cat": "1", "dog": "2"}  # the stored "9" is forgotten
    assert set(b.hotkeys) == {"x", "y", "z"}
    shown_b = ", ".join(f"{b.hotkeys[c]} {c}" for c in ("x", "y", "z"))
    assert sorted(msgs) == [("info", "a: keys reassigned (1 cat, 2 dog)"), ("info", f"b: keys reassigned ({shown_b})")]


def test_a_project_that_cannot_run_the_action_gets_its_reason_as_an_error():
    project = make_project(name="pixels-project")  # not on the 'hf' extractor: no feature alignment
    status, msgs = _act(_client(make_user("root", superuser=True)), "align", [project])
    assert status == 302
    assert len(msgs) == 1 and msgs[0][0] == "error" and msgs[0][1].startswith("pixels-project: ")


def test_a_project_the_user_does_not_administer_is_left_alone():
    mine, theirs = make_project(name="mine", classes=("cat", "dog")), make_project(name="theirs", classes=("a", "b"))
    Project.objects.filter(pk__in=[mine.pk, theirs.pk]).update(hotkeys={"cat": "9", "dog": "2", "a": "9", "b": "2"})
    user = add_member(mine, make_user("lead", is_staff=True), role="admin")
    add_member(theirs, user, role="annotator")
    status, msgs = _act(_client(user), "reassign_keys", [mine, theirs])
    assert status == 302 and msgs == [("info", "mine: keys reassigned (1 cat, 2 dog)")]
    theirs.refresh_from_db()
    assert theirs.hotkeys == {"cat": "9", "dog": "2", "a": "9", "b": "2"}
