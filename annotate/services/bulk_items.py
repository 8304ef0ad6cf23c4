"""Item rows in bulk, for projects of a million items (issue 17).

``items_bulk_insert`` streams rows into the item table with PostgreSQL's ``COPY ... FROM STDIN``
(one statement, no per-row INSERT or Python model objects) and with ``bulk_create`` in batches
elsewhere (SQLite).  Unique constraints apply as for any insert: a duplicate checksum or row
number fails the whole call inside the caller's transaction, so nothing half-written stays.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator
from itertools import islice

from django.db import connection, transaction
from django.utils import timezone

from ..models import Item, Project
from .item_counts import item_counts_add

# (file, original_name, checksum, row, width, height, ground_truth)
ItemRow = tuple[str, str, str, int, int, int, str]
COLUMNS = ("project_id", "file", "original_name", "checksum", "row", "width", "height", "ground_truth",
           "consensus_label", "created_at")


def _batches(rows: Iterable[ItemRow], size: int) -> Iterator[list[ItemRow]]:
    it = iter(rows)
    while batch := list(islice(it, size)):
        yield batch


#: PostgreSQL: after a COPY of at least this many rows the item table's statistics are refreshed
ANALYZE_ROWS = 10_000


def items_bulk_insert(*, project: Project, rows: Iterable[ItemRow], batch_size: int = 5000,
                      analyze_rows: int = ANALYZE_ROWS) -> int:
    """Insert item rows for ``project``; returns how many.  COPY on PostgreSQL, batches elsewhere.
    The project's item counts (``ProjectCounts``) follow in the same transaction.

    On PostgreSQL a large insert ends with ``ANALYZE`` of the item table (about 1 s at a million
    rows: it samples), in the same transaction.  Until autovacuum got to it, the planner believed a
    project that had just received a million items still held a few hundred, and joins from labels
    to items then hashed every item of the project: 3.5 s for the label counts of each label response
    (docs/million-items.md)."""
    with transaction.atomic():
        n, embedded = _insert(project, rows, batch_size)
        item_counts_add(project_id=project.pk, items=n, embedded=embedded)
        if connection.vendor == "postgresql" and n >= analyze_rows:
            with connection.cursor() as cur:
                cur.execute(f"ANALYZE {connection.ops.quote_name(Item._meta.db_table)}")
    return n


def _insert(project: Project, rows: Iterable[ItemRow], batch_size: int) -> tuple[int, int]:
    now = timezone.now()
    n = embedded = 0
    if connection.vendor == "postgresql":
        table = connection.ops.quote_name(Item._meta.db_table)
        cols = ", ".join(connection.ops.quote_name(c) for c in COLUMNS)
        # the raw psycopg cursor's errors are translated into Django's (IntegrityError, ...)
        with connection.cursor() as cur, connection.wrap_database_errors:
            with cur.cursor.copy(f"COPY {table} ({cols}) FROM STDIN") as copy:
                for file, name, checksum, row, width, height, truth in rows:
                    copy.write_row((project.pk, file, name, checksum, row, width, height, truth, "", now))
                    n += 1
                    embedded += row is not None
        return n, embedded
    for batch in _batches(rows, batch_size):
        Item.objects.bulk_create([
            Item(project=project, file=f, original_name=nm, checksum=c, row=r, width=w, height=h,
                 ground_truth=t, created_at=now) for f, nm, c, r, w, h, t in batch])
        n += len(batch)
        embedded += sum(r[3] is not None for r in batch)
    return n, embedded
