"""The item totals of a project (``ProjectCounts``): every service that inserts items or assigns
embedding rows updates them in its own transaction, so that a label response or the dashboard
reads them in constant time instead of counting the project's items (a million-item project:
docs/million-items.md).  Items are never deleted one by one (only with their project, which
takes its counts along).
"""
from __future__ import annotations

from django.db import IntegrityError, transaction
from django.db.models import Count, F

from ..models import Item, ProjectCounts


def item_counts_add(*, project_id: int, items: int, embedded: int) -> None:
    """Add ``items`` new items, ``embedded`` of them with an embedding row; call it inside the
    transaction that inserts them.  A project without a counts row yet gets one counted from the
    table (which then includes the rows just inserted)."""
    bump = {"items": F("items") + items, "embedded": F("embedded") + embedded}
    if ProjectCounts.objects.filter(project_id=project_id).update(**bump):
        return
    try:
        with transaction.atomic():
            ProjectCounts.objects.create(project_id=project_id, **_count(project_id))
    except IntegrityError:   # a concurrent first insert created the row meanwhile: add to it
        ProjectCounts.objects.filter(project_id=project_id).update(**bump)


def item_counts_refresh(*, project_id: int) -> None:
    """Count the project's items and embedded items from the item table and store the totals
    (after an embedding job reassigns every row; the job holds the project's row lock)."""
    ProjectCounts.objects.update_or_create(project_id=project_id, defaults=_count(project_id))


def _count(project_id: int) -> dict[str, int]:
    return Item.objects.filter(project_id=project_id).aggregate(items=Count("id"), embedded=Count("row"))
