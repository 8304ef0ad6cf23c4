"""Roles: members only; annotators label; reviewers see and correct; admins configure (Django groups mirror it)."""
from __future__ import annotations

import json

import pytest
from tests.annotate.datakit import image_bytes, write_tree
from tests.factories import add_member, empty_project, make_user
from django.test import Client

from annotate.models import Annotation, Item, Job, Membership
from annotate.services.exports import export_execute, export_request
from annotate.services.imports import ImportOptions, import_images
from annotate.services.roles import GROUPS, membership_remove, membership_set

pytestmark = pytest.mark.django_db


@pytest.fixture
def world(tmp_path, settings, monkeypatch, pushes):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    project = empty_project(classes=("cat", "dog"))
    import_images(project=project, options=ImportOptions(source=str(write_tree(tmp_path / "s", {
        "a.png": image_bytes(1), "b.png": image_bytes(2)}))))
    users = {name: make_user(name) for name in ("annotator", "reviewer", "admin", "outsider")}
    for role in ("annotator", "reviewer", "admin"):
        add_member(project, users[role], role)
    item = Item.objects.filter(project=project).first()
    Annotation.objects.create(item=item, annotator=users["annotator"], label="cat")
    job = export_execute(job_id=str(export_request(project=project, fmt="csv").pk))
    return project, users, item, job


def client_for(user):
    c = Client(enforce_csrf_checks=False)
    c.force_login(user)
    return c


# (url template, method, minimum role) — non-members get 404, lower roles 403.
ENDPOINTS = [
    ("/projects/{p}/", "get", "annotator"),
    ("/api/projects/{p}/stats", "get", "annotator"),
    ("/projects/{p}/review/", "get", "reviewer"),
    ("/api/projects/{p}/review/items", "get", "reviewer"),
    ("/api/jobs/{j}", "get", "admin"),
    ("/jobs/{j}/download", "get", "admin"),
]
ORDER = ["annotator", "reviewer", "admin"]


@pytest.mark.parametrize("url, method, minimum", ENDPOINTS)
@pytest.mark.parametrize("who", ["outsider", "annotator", "reviewer", "admin"])
def test_each_role_sees_what_it_may(world, url, method, minimum, who):
    project, users, _, job = world
    resp = getattr(client_for(users[who]), method)(url.format(p=project.pk, j=job.pk))
    if who == "outsider":
        assert resp.status_code == 404
    elif ORDER.index(who) < ORDER.index(minimum):
        assert resp.status_code == 403
    else:
        assert resp.status_code == 200, resp.content[:300]


def test_anonymous_users_are_sent_to_log_in(world):
    project, _, _, job = world
    c = Client()
    assert c.get(f"/projects/{project.pk}/").status_code == 302
    assert c.get(f"/api/projects/{project.pk}/stats").status_code == 401
    assert c.get(f"/jobs/{job.pk}/download").status_code == 302


def test_download_streams_the_export_file(world):
    project, users, _, job = world
    resp = client_for(users["admin"]).get(f"/jobs/{job.pk}/download")
    body = b"".join(resp.streaming_content).decode()
    assert resp["Content-Disposition"].startswith("attachment")
    assert body.splitlines()[0].startswith("image,label,annotator")
    assert "a.png" in body or "b.png" in body


def test_only_reviewers_correct_and_only_admins_export(world):
    project, users, item, _ = world
    body = json.dumps({"item_id": item.pk, "label": "dog"})
    r = client_for(users["annotator"]).post(f"/api/projects/{project.pk}/review/correct", body,
                                            content_type="application/json")
    assert r.status_code == 403 and Annotation.objects.filter(action="correct").count() == 0
    r = client_for(users["reviewer"]).post(f"/api/projects/{project.pk}/review/correct", body,
                                           content_type="application/json")
    assert r.status_code == 201 and Annotation.objects.filter(action="correct").count() == 1
    exp = json.dumps({"format": "csv"})
    n_jobs = Job.objects.count()
    r = client_for(users["reviewer"]).post(f"/api/projects/{project.pk}/exports", exp, content_type="application/json")
    assert r.status_code == 403 and Job.objects.count() == n_jobs
    r = client_for(users["admin"]).post(f"/api/projects/{project.pk}/exports", exp, content_type="application/json")
    assert r.status_code == 202 and Job.objects.count() == n_jobs + 1


def test_roles_are_mirrored_on_django_groups_and_staff(world):
    project, users, _, _ = world
    names = lambda u: set(u.groups.values_list("name", flat=True))  # noqa: E731
    assert names(users["annotator"]) == {GROUPS["annotator"]}
    assert names(users["admin"]) == {GROUPS["admin"]}
    users["admin"].refresh_from_db()
    users["annotator"].refresh_from_db()
    assert users["admin"].is_staff and not users["annotator"].is_staff
    assert users["admin"].has_perm("annotate.change_project") and users["admin"].has_perm("annotate.configure_project")
    assert users["reviewer"].has_perm("annotate.review_project")
    assert not users["reviewer"].has_perm("annotate.change_project")
    assert not users["annotator"].has_perm("annotate.review_project")
    membership_set(project=project, user=users["annotator"], role="admin")
    u = type(users["annotator"]).objects.get(pk=users["annotator"].pk)
    assert names(u) == {GROUPS["admin"]} and u.is_staff
    membership_remove(project=project, user=u)
    u = type(u).objects.get(pk=u.pk)
    assert names(u) == set() and not u.is_staff
    assert not Membership.objects.filter(user=u).exists()


def test_project_admins_see_only_their_projects_in_django_admin(world):
    project, users, _, _ = world
    other = empty_project(name="other")
    c = client_for(users["admin"])
    assert c.get("/admin/annotate/project/").status_code == 200
    assert c.get(f"/admin/annotate/project/{project.pk}/change/").status_code == 200
    assert c.get(f"/admin/annotate/project/{other.pk}/change/").status_code in (302, 404)
    assert c.get(f"/admin/annotate/project/{other.pk}/import/").status_code == 404
    assert c.get(f"/admin/annotate/project/{project.pk}/import/").status_code == 200
    listing = c.get("/admin/annotate/project/").content.decode()
    assert project.name in listing and ">other<" not in listing
    assert client_for(users["reviewer"]).get("/admin/annotate/project/").status_code == 302  # not staff


def test_project_admin_can_add_a_member_through_admin(world):
    project, users, _, _ = world
    newbie = make_user("newbie")
    c = client_for(users["admin"])
    # A user outside the admin's projects is found by exact username only (no enumeration, issue 12).
    q = {"app_label": "annotate", "model_name": "membership", "field_name": "user"}
    assert not any(x["text"] == "newbie" for x in c.get("/admin/autocomplete/", {**q, "term": "new"}).json()["results"])
    r = c.get("/admin/autocomplete/", {**q, "term": "newbie"})
    assert r.status_code == 200 and any(x["text"] == "newbie" for x in r.json()["results"])
    r = c.post("/admin/annotate/membership/add/", {"project": project.pk, "user": newbie.pk, "role": "reviewer"})
    assert r.status_code == 302, r.content.decode()[:500]
    newbie.refresh_from_db()
    assert set(newbie.groups.values_list("name", flat=True)) == {GROUPS["reviewer"]}


def test_download_with_an_api_token(world):
    from annotate.services.tokens import token_create

    project, users, _, job = world
    _, key = token_create(user=users["admin"])
    r = Client().get(f"/jobs/{job.pk}/download", HTTP_AUTHORIZATION=f"Token {key}")
    assert r.status_code == 200 and b"".join(r.streaming_content).startswith(b"image,label")
    r = Client().get(f"/jobs/{job.pk}/download", HTTP_AUTHORIZATION="Token nope")
    assert r.status_code == 401
    _, key2 = token_create(user=users["reviewer"])
    assert Client().get(f"/jobs/{job.pk}/download", HTTP_AUTHORIZATION=f"Token {key2}").status_code == 403
