"""The labeling JSON API over Django's test client: auth, CSRF, tokens, and bad input -> 4xx JSON."""
import json
import uuid

import pytest
from django.test import Client

from annotate.models import Annotation, Membership, QueueEntry
from annotate.services.tokens import token_create

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(make_user, make_project, make_round):
    user = make_user("ann")
    project = make_project(members=[(user, Membership.Role.ANNOTATOR)], batch_size=10, refill_threshold=0)
    make_round(project)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get(f"/projects/{project.pk}/label/")  # sets the csrftoken cookie, as the page does
    return project, user, client


def post(client, url, body, **extra):
    token = client.cookies["csrftoken"].value if "csrftoken" in client.cookies else ""
    data = body if isinstance(body, (str, bytes)) else json.dumps(body)
    return client.post(url, data=data, content_type=extra.pop("content_type", "application/json"),
                       HTTP_X_CSRFTOKEN=extra.pop("csrf", token), **extra)


def state():
    return (list(Annotation.objects.order_by("id").values()),
            list(QueueEntry.objects.order_by("id").values("id", "state", "leased_by_id")))


def test_lease_label_skip_undo_round_trip(setup):
    project, user, client = setup
    base = f"/api/projects/{project.pk}/"
    r = post(client, base + "lease", {"n": 3})
    assert r.status_code == 200
    items = r.json()["items"]
    assert len(items) == 3 and all(i["image_url"].startswith(f"/images/{i['item_id']}/") for i in items)
    r = post(client, base + "label", {"item_id": items[0]["item_id"], "label": "dog", "client_id": str(uuid.uuid4()),
                                      "time_ms": 900})
    assert r.status_code == 201 and r.json()["progress"]["mine"] == 1 and r.json()["progress"]["labeled"] == 1
    r = post(client, base + "skip", {"item_id": items[1]["item_id"]})
    assert r.status_code == 201 and r.json()["annotation"]["action"] == "skip"
    r = post(client, base + "undo", {})
    assert r.status_code == 201 and r.json()["item"]["item_id"] == items[1]["item_id"]
    assert r.json()["undone"]["action"] == "skip"
    r = client.get(base + "status")
    assert r.status_code == 200 and r.json()["progress"]["labeled"] == 1 and r.json()["project"]["classes"] == [
        "cat", "dog", "fox"]


def test_a_retried_label_with_the_same_client_id_answers_200_and_stores_once(setup):
    project, user, client = setup
    base = f"/api/projects/{project.pk}/"
    item = post(client, base + "lease", {"n": 1}).json()["items"][0]["item_id"]
    body = {"item_id": item, "label": "cat", "client_id": str(uuid.uuid4())}
    assert post(client, base + "label", body).status_code == 201
    again = post(client, base + "label", body)
    assert again.status_code == 200 and again.json()["created"] is False
    assert Annotation.objects.count() == 1


@pytest.mark.parametrize("path, body, status, words", [
    ("label", "{not json", 400, "malformed JSON"),
    ("label", "[1, 2]", 400, "must be an object"),
    ("label", {"item_id": "7", "label": "cat"}, 400, "item_id='7'"),
    ("label", {"label": "cat"}, 400, "missing field(s) ['item_id']"),
    ("label", {"item_id": "ITEM", "label": "cat", "colour": "red"}, 400, "unknown field(s) ['colour']"),
    ("label", {"item_id": "ITEM", "label": "wolf"}, 400, "not one of the project's classes"),
    ("label", {"item_id": "ITEM", "label": "cat", "client_id": "x"}, 400, "not a UUID"),
    ("label", {"item_id": "FREE", "label": "cat"}, 409, "not leased to you"),
    ("label", {"item_id": 999999, "label": "cat"}, 404, "not in project"),
    ("lease", {"n": 0}, 400, "n=0"),
    ("lease", {"n": "many"}, 400, "n='many'"),
    ("lease", {"n": 6, "sending": "ITEM"}, 400, "sending="),
    ("lease", {"n": 6, "sending": [0]}, 400, "item ids"),
    ("lease", {"n": 6, "sending": list(range(1, 52))}, 400, "at most 50"),
    ("undo", {"item_id": "ITEM"}, 404, "nothing to undo"),
    ("release", {"item_ids": "all"}, 400, "item_ids"),
])
def test_bad_input_gets_a_4xx_json_error_and_changes_nothing(setup, path, body, status, words):
    project, user, client = setup
    base = f"/api/projects/{project.pk}/"
    leased = post(client, base + "lease", {"n": 2}).json()["items"][0]["item_id"]
    free = QueueEntry.objects.filter(state="pending").first().item_id
    if isinstance(body, dict):
        body = {k: (leased if v == "ITEM" else free if v == "FREE" else v) for k, v in body.items()}
    before = state()
    r = post(client, base + path, body)
    assert r.status_code == status, r.content
    assert r["Content-Type"] == "application/json"
    assert words in r.json()["error"]
    assert state() == before


def test_a_double_submit_is_a_409_naming_the_problem(setup):
    project, user, client = setup
    base = f"/api/projects/{project.pk}/"
    item = post(client, base + "lease", {"n": 1}).json()["items"][0]["item_id"]
    assert post(client, base + "label", {"item_id": item, "label": "cat"}).status_code == 201
    before = state()
    r = post(client, base + "label", {"item_id": item, "label": "dog"})
    assert r.status_code == 409 and "double submit" in r.json()["error"]
    assert state() == before


def test_a_non_json_body_is_415(setup):
    project, user, client = setup
    before = state()
    r = post(client, f"/api/projects/{project.pk}/label", "item_id=1&label=cat",
             content_type="application/x-www-form-urlencoded")
    assert r.status_code == 415 and "must be JSON" in r.json()["error"]
    assert state() == before


def test_session_writes_need_the_csrf_token(setup):
    project, user, client = setup
    before = state()
    r = post(client, f"/api/projects/{project.pk}/lease", {"n": 2}, csrf="wrong")
    assert r.status_code == 403 and "CSRF" in r.json()["error"]
    assert state() == before


def test_anonymous_requests_get_401_json(setup):
    project, _, _ = setup
    r = Client().get(f"/api/projects/{project.pk}/status")
    assert r.status_code == 401 and "authentication required" in r.json()["error"]


def test_unknown_project_and_non_member_get_404(setup, make_user, make_project):
    project, user, client = setup
    other = make_project()  # user is not a member
    assert client.get("/api/projects/999999/status").status_code == 404
    r = client.get(f"/api/projects/{other.pk}/status")
    assert r.status_code == 404 and "does not exist" in r.json()["error"]


@pytest.mark.parametrize("path", ["/api/projects/abc/status", "/api/projects/1/statuss", "/api/nothing"])
def test_a_path_under_api_that_names_no_endpoint_is_a_json_404(setup, path):
    """Found by QA: a project id that is not a number (or a typo) got Django's HTML 404 page."""
    _, _, client = setup
    for r in (client.get(path), post(client, path, {"n": 1}, csrf="")):
        assert r.status_code == 404 and r["Content-Type"] == "application/json"
        assert r.json()["error"].startswith(f"no API endpoint at {path!r}")


def test_token_auth_works_without_csrf_and_bad_tokens_are_401(setup):
    project, user, _ = setup
    _, key = token_create(user=user, name="script")
    c = Client(enforce_csrf_checks=True)
    r = c.post(f"/api/projects/{project.pk}/lease", data=json.dumps({"n": 2}), content_type="application/json",
               HTTP_AUTHORIZATION=f"Token {key}")
    assert r.status_code == 200 and len(r.json()["items"]) == 2
    assert QueueEntry.objects.filter(leased_by=user).count() == 2
    for header in ("Token nope", "Bearer abc"):
        r = c.get(f"/api/projects/{project.pk}/status", HTTP_AUTHORIZATION=header)
        assert r.status_code == 401 and r.json()["error"]


def test_wrong_method_is_405(setup):
    project, _, client = setup
    r = client.get(f"/api/projects/{project.pk}/label")
    assert r.status_code == 405 and r["Allow"] == "POST"


def test_item_images_are_served_to_members_only(setup, make_user):
    project, user, client = setup
    item = project.items.first()
    r = client.get(f"/items/{item.pk}/image")
    assert r.status_code == 200 and r["Content-Type"] == "image/png"
    assert b"".join(r.streaming_content).startswith(b"\x89PNG")
    assert "private" in r["Cache-Control"]
    stranger = Client()
    stranger.force_login(make_user("stranger"))
    assert stranger.get(f"/items/{item.pk}/image").status_code == 404
    assert Client().get(f"/items/{item.pk}/image").status_code == 401
    assert client.get("/items/999999/image").status_code == 404


def test_pages_need_login_and_show_the_classes_with_their_keys(setup, make_project):
    project, user, client = setup
    assert Client().get(f"/projects/{project.pk}/label/").status_code == 302
    html = client.get(f"/projects/{project.pk}/label/").content.decode()
    for name, key in zip(project.classes, "123"):
        assert f'data-label="{name}" title="{name}" data-hotkey="{key}"' in html
    # The page's own keys are never letters or digits (those belong to classes).
    assert 'data-hotkey=" "' in html and 'data-hotkey="backspace"' in html and 'data-hotkey="?"' in html
    listing = client.get("/").content.decode()
    assert project.name in listing
    assert make_project(name="hidden one").name not in client.get("/").content.decode()


def test_ten_classes_get_keys_1_to_9_then_0():
    from annotate.services.keymap import keymap_complete

    keys = keymap_complete(["x" + str(i) for i in range(11)])
    assert list(keys.values()) == ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0", "a"]


