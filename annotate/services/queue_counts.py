"""The kept pending-queue count of each project (``QueueCounts``).

A submit decides on the refill from the number of pending entries and every label response shows
it ("N waiting"); counting them cost 1-3 ms per submit once a round of a million-item project had
queued 10k entries, growing with the queue (docs/million-items.md).  So every service that moves an
entry into or out of ``pending`` adds the change to the project's row in its own transaction:

==========================================  ======================================
lease (``queue.queue_lease``)               - entries taken, + expired leases returned
release, lease expiry, access revoked       + leases returned
round write (``round_pipeline.round_write``)  + entries written - pending entries superseded
submit of an overlapped item                + the pending copy for the next annotator
undo of an item whose entry was pending     - 1 (leased to the undoer again)
admin deletes of entries, items, rounds     recounted (:func:`queue_pending_recount`)
==========================================  ======================================

Each adds the number of rows its own statement changed (an ``UPDATE``'s row count, rows it inserted),
never a number read earlier, so concurrent transitions add up exactly: on PostgreSQL a row another
transaction changed first no longer matches the second's ``WHERE`` and is not counted twice.

**Lock order.**  The counter row is one per project, so every transaction updates it *last*, after
all its queue rows are locked and written, and several projects' rows in ascending project order: a
transaction holding a counter never waits for a queue row, so no cycle of waits can form with the
``SKIP LOCKED`` leases (services/queue.py), and the counter's lock is held only until the commit.
A transaction that inserted rows runs its deferred foreign-key checks before it takes the counter
(``inserted=True``): PostgreSQL would otherwise take their locks at COMMIT, after the counter's.

**Self-healing.**  :func:`queue_counts_check` compares every kept count with a fresh count in one
statement (one snapshot, so a difference is real drift, not a transition in flight), logs each
difference and recounts that project under the counter's lock; the periodic sweep runs it every
``LOUPE_RECOUNT_SECONDS`` (services/liveness.py) and ``manage.py loupe_recount`` on demand.  A write
that bypasses the services (raw SQL, a shell ``update()``) is the only way to drift.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping

from django.db import IntegrityError, connection, transaction
from django.db.models import F

from ..models import Project, QueueCounts, QueueEntry

log = logging.getLogger(__name__)


def _count(project_id: int) -> int:
    return QueueEntry.objects.filter(project_id=project_id, state=QueueEntry.State.PENDING).count()


def deferred_checks_now() -> None:
    """Run the transaction's deferred foreign-key checks now, not at COMMIT (PostgreSQL).

    Django's foreign keys are ``DEFERRABLE INITIALLY DEFERRED``: a row inserted with a reference is
    checked at COMMIT, with a ``FOR KEY SHARE`` lock on the row it references.  An overlap copy or a
    round's entries reference the project, whose row an import or a re-embed holds ``FOR UPDATE`` for
    its whole transaction; checked at COMMIT, that wait would come after the counter's lock, and every
    lease of the project would wait for the import too.  Two statements, never one string: a server-side
    binding connection may prepare a repeated query, and a prepared statement holds one command."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("SET CONSTRAINTS ALL IMMEDIATE")
            cur.execute("SET CONSTRAINTS ALL DEFERRED")


def queue_pending_add(*, project_id: int, delta: int, inserted: bool = False) -> None:
    """Add ``delta`` to the project's pending count; call it inside the transaction that moved the
    entries, after its last queue statement (lock order, see the module docstring).  ``inserted``:
    the transaction inserted rows (entries, annotations), whose deferred reference checks then run
    first, so that the counter's lock is held for no other wait (:func:`deferred_checks_now`).

    A project without a row yet gets one counted from the table, which then already includes this
    transaction's own change (so ``delta`` is not added again); when a concurrent first change
    created the row meanwhile, the unique key refuses the second row and ``delta`` is added to the
    first (whose count did not see this transaction's uncommitted change)."""
    if not delta:
        return
    if inserted:
        deferred_checks_now()
    bump = {"pending": F("pending") + delta}
    if QueueCounts.objects.filter(project_id=project_id).update(**bump):
        return
    try:
        with transaction.atomic():
            QueueCounts.objects.create(project_id=project_id, pending=_count(project_id))
    except IntegrityError:
        QueueCounts.objects.filter(project_id=project_id).update(**bump)


def queue_pending_add_many(deltas: Mapping[int, int]) -> None:
    """:func:`queue_pending_add` for several projects, in ascending project order (lock order)."""
    for project_id in sorted(deltas):
        queue_pending_add(project_id=project_id, delta=deltas[project_id])


@transaction.atomic
def queue_pending_recount(*, project_id: int) -> tuple[int | None, int]:
    """Count the project's pending entries and store the count: ``(kept before, counted)``; ``None``
    when the project had no row.

    Exact while transitions run: the counter row is locked first, so a transition that already
    added to it has committed before the count (which then sees its entries), and one that has not
    yet added waits for this commit and then adds its change to a count that did not see it."""
    row = QueueCounts.objects.select_for_update().filter(project_id=project_id).first()
    if row is None:
        try:
            with transaction.atomic():
                made = QueueCounts.objects.create(project_id=project_id, pending=_count(project_id))
            return None, made.pending
        except IntegrityError:  # created meanwhile: lock it and count again
            row = QueueCounts.objects.select_for_update().get(project_id=project_id)
    counted = _count(project_id)
    if counted != row.pending:
        QueueCounts.objects.filter(project_id=project_id).update(pending=counted)
    return row.pending, counted


def queue_counts_recount(*, project_ids: Iterable[int]) -> None:
    """Recount the pending entries of these projects (after an admin deleted entries, items or
    rounds: a cascade bypasses the services), in ascending order, in the caller's transaction."""
    for pk in sorted(set(project_ids)):
        queue_pending_recount(project_id=pk)


def _kept_and_counted() -> list[tuple[int, int | None, int]]:
    """(project, kept count or None, counted) for every project, read in ONE statement (one snapshot)."""
    proj, counts, queue = Project._meta.db_table, QueueCounts._meta.db_table, QueueEntry._meta.db_table
    with connection.cursor() as cur:
        cur.execute(
            f'SELECT p."id", c."pending", COALESCE(q."n", 0) FROM "{proj}" p '
            f'LEFT JOIN "{counts}" c ON c."project_id" = p."id" '
            f'LEFT JOIN (SELECT "project_id", COUNT(*) AS "n" FROM "{queue}" WHERE "state" = %s '
            'GROUP BY "project_id") q ON q."project_id" = p."id" ORDER BY p."id"',
            [QueueEntry.State.PENDING.value])
        return [(int(pk), None if kept is None else int(kept), int(n)) for pk, kept, n in cur.fetchall()]


def queue_counts_check(*, repair: bool = True) -> dict[int, tuple[int | None, int]]:
    """Every project's kept pending count against a fresh count: ``{project: (kept, counted)}`` for
    the ones that differ (a missing row counts as a difference only when entries are pending),
    each logged, and recounted under its lock with ``repair``."""
    drift = {pk: (kept, n) for pk, kept, n in _kept_and_counted() if (kept or 0) != n}
    for pk, (kept, n) in drift.items():
        log.warning("queue count of project %s drifted: kept %s, counted %d%s", pk, kept, n,
                    "; recounted" if repair else "")
        if repair:
            queue_pending_recount(project_id=pk)
    return drift
