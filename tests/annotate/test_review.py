"""Reviewers see everyone's labels and correct them; history is kept and the correction wins."""
from __future__ import annotations

import json

import pytest
from tests.annotate.datakit import image_bytes, write_tree
from tests.factories import add_member, empty_project, make_user
from django.test import Client

from annotate.models import Annotation, Item
from annotate.selectors_labels import final_labels
from annotate.services.errors import BadInput, NotFound, ServiceError
from annotate.services.imports import ImportOptions, import_images
from annotate.services.review import annotation_correct

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.MEDIA_ROOT.mkdir()
    project = empty_project(classes=("cat", "dog"))
    import_images(project=project, options=ImportOptions(source=str(write_tree(tmp_path / "s", {
        f"{i}.png": image_bytes(i) for i in range(3)}))))
    ann, rev = make_user("ann"), make_user("rev")
    add_member(project, ann, "annotator")
    add_member(project, rev, "reviewer")
    items = list(Item.objects.filter(project=project).order_by("pk"))
    Annotation.objects.create(item=items[0], annotator=ann, label="cat")
    Annotation.objects.create(item=items[1], annotator=ann, label="dog")
    return project, ann, rev, items


def test_a_correction_adds_a_row_keeps_history_and_wins(setup):
    project, ann, rev, items = setup
    original = Annotation.objects.get(item=items[0], annotator=ann)
    c = annotation_correct(project=project, reviewer=rev, item_id=items[0].pk, label="dog")
    assert c.action == "correct" and c.supersedes_id == original.pk and c.is_current
    original.refresh_from_db()
    assert original.is_current and original.label == "cat"  # the annotator's row is untouched
    assert final_labels([items[0].pk])[items[0].pk].label == "dog"
    # The annotator labeling again later does not undo the reviewer's decision.
    Annotation.objects.filter(pk=original.pk).update(is_current=False)
    Annotation.objects.create(item=items[0], annotator=ann, label="cat")
    assert final_labels([items[0].pk])[items[0].pk].label == "dog"
    # A second correction by the same reviewer replaces the first as current.
    c2 = annotation_correct(project=project, reviewer=rev, item_id=items[0].pk, label="cat")
    c.refresh_from_db()
    assert not c.is_current and c2.is_current
    assert final_labels([items[0].pk])[items[0].pk].label == "cat"


def test_the_same_correction_sent_twice_is_stored_once(setup):
    """Found by QA: a double submit of one correction added two identical 'correct' rows."""
    project, ann, rev, items = setup
    c = annotation_correct(project=project, reviewer=rev, item_id=items[0].pk, label="dog")
    again = annotation_correct(project=project, reviewer=rev, item_id=items[0].pk, label="dog")
    assert again.pk == c.pk and again.is_current
    assert Annotation.objects.filter(item=items[0], annotator=rev).count() == 1
    # Over the API too: the same row comes back.
    client = Client()
    client.force_login(rev)
    r = client.post(f"/api/projects/{project.pk}/review/correct", {"item_id": items[0].pk, "label": "dog"},
                    content_type="application/json")
    assert r.status_code in (200, 201) and r.json()["id"] == c.pk
    assert Annotation.objects.filter(item=items[0], annotator=rev).count() == 1


def test_a_review_filter_on_a_class_the_project_lacks_is_a_400(setup):
    """Found by QA: ?label=zebra answered an empty page, as if nobody had used that class."""
    project, ann, rev, items = setup
    c = Client()
    c.force_login(rev)
    r = c.get(f"/api/projects/{project.pk}/review/items?label=zebra")
    assert r.status_code == 400 and r.json()["error"].startswith("label='zebra' is not one of the project's classes")
    assert c.get(f"/api/projects/{project.pk}/review/items?label=cat").json()["count"] == 1


def test_bad_corrections_are_refused_and_change_nothing(setup):
    project, ann, rev, items = setup
    before = list(Annotation.objects.values_list("id", "label", "is_current"))
    with pytest.raises(BadInput, match="label 'zebra' is not one of the project's classes"):
        annotation_correct(project=project, reviewer=rev, item_id=items[0].pk, label="zebra")
    with pytest.raises(BadInput, match="has no label yet"):
        annotation_correct(project=project, reviewer=rev, item_id=items[2].pk, label="cat")
    with pytest.raises(NotFound, match="is not in project"):
        annotation_correct(project=project, reviewer=rev, item_id=999999, label="cat")
    with pytest.raises(ServiceError, match="needs the reviewer role"):
        annotation_correct(project=project, reviewer=ann, item_id=items[0].pk, label="dog")
    assert list(Annotation.objects.values_list("id", "label", "is_current")) == before


def test_review_api_lists_labels_with_annotators_and_filters(setup):
    project, ann, rev, items = setup
    annotation_correct(project=project, reviewer=rev, item_id=items[1].pk, label="cat")
    c = Client()
    c.force_login(rev)
    data = c.get(f"/api/projects/{project.pk}/review/items").json()
    assert data["count"] == 2
    by_id = {row["item_id"]: row for row in data["items"]}
    assert by_id[items[0].pk]["label"] == "cat" and by_id[items[0].pk]["by"] == "ann"
    assert by_id[items[1].pk]["corrected"] and {x["annotator"] for x in by_id[items[1].pk]["labels"]} == {"ann", "rev"}
    only_cat = c.get(f"/api/projects/{project.pk}/review/items?label=dog").json()
    assert [r["item_id"] for r in only_cat["items"]] == [items[1].pk]  # ann's current label there is dog
    r = c.get(f"/api/projects/{project.pk}/review/items?page=x")
    assert r.status_code == 400 and "page" in r.json()["error"]
    r = c.post(f"/api/projects/{project.pk}/review/correct", json.dumps({"item_id": items[0].pk, "label": "bird"}),
               content_type="application/json")
    assert r.status_code == 400 and "'bird'" in r.json()["error"]
    page = c.get(f"/projects/{project.pk}/review/").content.decode()
    assert "Review labels" in page and "ann" in page


def test_the_review_page_gives_its_script_the_api_urls(client, make_project, make_user):
    """review.js fetches what the page names (reverse()), not URLs it spells out itself."""
    from django.urls import reverse

    user = make_user("rev")
    project = make_project(n_items=3, members=[(user, "reviewer")])
    client.force_login(user)
    html = client.get(reverse("review", args=[project.pk])).content.decode()
    for name in ("api_review_items", "api_review_correct"):
        assert f'="{reverse(name, args=[project.pk])}"' in html
