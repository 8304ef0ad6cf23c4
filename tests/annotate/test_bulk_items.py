"""Bulk item rows (COPY on PostgreSQL, batched bulk_create elsewhere) (issue 17)."""
import pytest
from django.db import IntegrityError

from annotate.models import Item
from annotate.services.bulk_items import items_bulk_insert
from tests.factories import empty_project

pytestmark = pytest.mark.django_db


def _rows(n, start=0):
    for i in range(start, start + n):
        yield (f"projects/x/images/{i}.png", f"{i}.png", f"{i:064x}", i, 4, 3, "cat" if i % 2 else "dog")


def test_rows_are_inserted_with_every_field():
    project = empty_project()
    assert items_bulk_insert(project=project, rows=_rows(2345), batch_size=1000) == 2345
    qs = Item.objects.filter(project=project)
    assert qs.count() == 2345
    assert sorted(qs.values_list("row", flat=True)) == list(range(2345))
    it = qs.get(row=7)
    assert (it.file, it.original_name, it.checksum, it.width, it.height, it.ground_truth) == (
        "projects/x/images/7.png", "7.png", f"{7:064x}", 4, 3, "cat")
    assert it.created_at is not None and it.consensus_label == "" and it.suspect_score is None


def test_a_duplicate_fails_the_whole_insert():
    project = empty_project()
    items_bulk_insert(project=project, rows=_rows(10))
    with pytest.raises(IntegrityError):
        items_bulk_insert(project=project, rows=list(_rows(5, start=100)) + list(_rows(1, start=3)))
    assert Item.objects.filter(project=project).count() == 10


def test_a_large_insert_on_postgresql_refreshes_the_planner_statistics():
    from django.db import connection

    if connection.vendor != "postgresql":
        pytest.skip("PostgreSQL only (ANALYZE after COPY)")
    project = empty_project()
    items_bulk_insert(project=project, rows=_rows(1500), analyze_rows=1000)
    with connection.cursor() as cur:
        cur.execute("SELECT reltuples FROM pg_class WHERE relname = %s", [Item._meta.db_table])
        assert cur.fetchone()[0] >= 1500   # never analyzed: -1 or 0
