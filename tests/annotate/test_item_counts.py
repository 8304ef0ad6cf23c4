"""Kept item totals (``ProjectCounts``, issue 17): every way items arrive keeps them equal to a
count of the item table, and the labeling responses and the dashboard read them."""
import pytest
from django.db import IntegrityError
from tests.annotate.datakit import imported_project
from tests.factories import empty_project, make_project, make_user

from annotate import selectors
from annotate.models import Item, ProjectCounts
from annotate.selectors_stats import project_stats
from annotate.services.bulk_items import items_bulk_insert
from annotate.services.embeddings import embeddings_compute

pytestmark = pytest.mark.django_db


def counted(project) -> dict[str, int]:
    qs = Item.objects.filter(project=project)
    return {"items": qs.count(), "embedded": qs.filter(row__isnull=False).count()}


def kept(project) -> dict[str, int]:
    return dict(ProjectCounts.objects.filter(project=project).values("items", "embedded").get())


def _rows(n, start=0, row=True):
    for i in range(start, start + n):
        yield (f"projects/x/images/{i}.png", f"{i}.png", f"{i:064x}", i if row else None, 4, 3, "cat")


def test_bulk_inserts_add_to_the_counts_and_a_failed_insert_adds_nothing():
    project = empty_project()
    assert selectors.item_totals(project=project) == {"items": 0, "embedded": 0}  # no counts row yet
    items_bulk_insert(project=project, rows=_rows(30))
    items_bulk_insert(project=project, rows=_rows(12, start=100, row=False))
    assert kept(project) == counted(project) == {"items": 42, "embedded": 30}
    with pytest.raises(IntegrityError):   # a duplicate checksum: the whole insert and its count roll back
        items_bulk_insert(project=project, rows=list(_rows(5, start=200)) + list(_rows(1, start=3)))
    assert kept(project) == counted(project) == {"items": 42, "embedded": 30}


def test_imports_and_embedding_keep_the_counts(media, tmp_path):
    project = imported_project(tmp_path, 7)   # the import service, no embeddings yet
    assert kept(project) == counted(project) == {"items": 7, "embedded": 0}
    embeddings_compute(project=project, extractor="pixels", params={"size": 8, "dim": 5})
    assert kept(project) == counted(project) == {"items": 7, "embedded": 7}


def test_progress_and_dashboard_read_the_kept_counts_not_the_table():
    user = make_user()
    project = make_project(n_items=9, members=[(user, "annotator")])
    assert selectors.progress_counts(project=project, user=user)["total"] == 9
    assert project_stats(project=project)["totals"]["items"] == 9
    # the responses show what the counts say: proof that no request counts the items
    ProjectCounts.objects.filter(project=project).update(items=1234, embedded=1000)
    assert selectors.progress_counts(project=project, user=user)["total"] == 1234
    assert {k: project_stats(project=project)["totals"][k] for k in ("items", "embedded")} == {
        "items": 1234, "embedded": 1000}
    # without a counts row (no item ever inserted through a service) the table is counted
    ProjectCounts.objects.filter(project=project).delete()
    assert selectors.progress_counts(project=project, user=user)["total"] == 9
    assert selectors.item_totals(project=project) == {"items": 9, "embedded": 9}
