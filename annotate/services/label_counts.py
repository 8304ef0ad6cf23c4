"""The kept label counts of each project (``LabelCounts``): items with a current label or correction
(the row without an annotator) and each person's current labels and corrections (the labeling page's
"mine").

Every submit answers with both; counting them joined each current label row to the item table, a
nested loop whose probes into a million-row item index made a submit about 10 ms dearer than on a
2,000-item project with as many labels (docs/million-items.md).  So every service that changes a
person's current row on an item adds the change in its own transaction (:func:`label_change`):

=========================================  =====================================================
submit (label or skip), undo               the person's previous current row -> the new one
reviewer correction                        the reviewer's previous current row -> ``correct``
import with pre-labels                     + the new items and the importer's labels
admin deletes of items                     recounted (:func:`label_counts_recount`)
=========================================  =====================================================

**Exact under concurrency.**  Whether an item counts as labeled depends on other people's rows.  On
PostgreSQL a change first runs its deferred foreign-key checks (``SET CONSTRAINTS``, two statements:
their locks must not come at COMMIT, after the counters', see services/queue_counts.py), locks the
project's row (one statement), then moves both counts in one ``UPDATE`` whose sub-query looks at the
other people's rows: that statement starts after any earlier
change of the project has committed, so it sees that change's rows, and changes add up as if they
had run one after the other.  The project's row is always locked before a person's row (no cycle of
waits), and after the transaction's queue rows and queue count (services/queue_counts.py).  A
person's first label inserts their counts row under that lock, and its reference to the project is
checked at COMMIT with a key-share lock on the project's row: so the services that hold a project's
row for a long transaction (an import, which then waits for the label counts; a re-embed) lock it
``FOR NO KEY UPDATE``, which that check does not wait for.  SQLite
runs one write transaction at a time and needs no lock.  On the hot path: four statements on
PostgreSQL, one on SQLite.

**Self-healing.**  :func:`label_counts_check` compares the kept counts with fresh counts in one
statement each and recounts the projects that differ under their rows' locks; the sweep and
``manage.py loupe_recount`` run it with the queue's check.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Iterable

from django.db import IntegrityError, connection, transaction
from django.db.models import Count, F

from ..models import Annotation, Item, LabelCounts, Project
from ..selectors_labels import LABEL_ACTIONS
from .queue_counts import deferred_checks_now

log = logging.getLogger(__name__)
_LABELS = tuple(sorted(a.value for a in LABEL_ACTIONS))


def _current_labels(project_id: int):
    return Annotation.objects.filter(item__project_id=project_id, is_current=True, action__in=LABEL_ACTIONS)


def _count_labeled(project_id: int) -> int:
    return _current_labels(project_id).values("item_id").distinct().count()


def _count_mine(project_id: int, annotator_id: int) -> int:
    return _current_labels(project_id).filter(annotator_id=annotator_id).count()


def _lock_project_row(project_id: int) -> bool:
    """Lock the project's counts row (on PostgreSQL; SQLite's write lock is held already): whether it exists."""
    qs = LabelCounts.objects.filter(project_id=project_id, annotator__isnull=True)
    if connection.features.has_select_for_update:
        qs = qs.select_for_update()
    return qs.values_list("pk", flat=True).first() is not None


def label_counts_add(*, project_id: int, labeled: int, mine: dict[int, int]) -> None:
    """Add known changes (``labeled`` items, ``{annotator id: labels}``), e.g. an import's new items
    with their pre-labels; call it last in the transaction that wrote the rows."""
    if not labeled and not any(mine.values()):
        return
    if not _lock_project_row(project_id):
        label_counts_recount(project_id=project_id)  # no counts yet: count them (this transaction's rows too)
        return
    LabelCounts.objects.filter(project_id=project_id, annotator__isnull=True).update(labels=F("labels") + labeled)
    for annotator_id in sorted(mine):
        _add_mine(project_id, annotator_id, mine[annotator_id])


def _add_mine(project_id: int, annotator_id: int, step: int) -> None:
    if not step or LabelCounts.objects.filter(project_id=project_id, annotator_id=annotator_id).update(
            labels=F("labels") + step):
        return
    try:  # the person's first label in the project: a row counted from the table (with this change)
        with transaction.atomic():
            LabelCounts.objects.create(project_id=project_id, annotator_id=annotator_id,
                                       labels=_count_mine(project_id, annotator_id))
    except IntegrityError:  # a concurrent first label made it meanwhile (its count missed this change)
        LabelCounts.objects.filter(project_id=project_id, annotator_id=annotator_id).update(labels=F("labels") + step)


@functools.cache
def _change_sql() -> str:
    """Both counts in one statement: the person's row by ``step``, the project's by ``step`` unless
    another person's current label keeps the item labeled."""
    counts, ann = LabelCounts._meta.db_table, Annotation._meta.db_table
    others = (f'EXISTS (SELECT 1 FROM "{ann}" WHERE "item_id" = %(item)s AND "is_current" = %(t)s '
              'AND "action" IN (%(a1)s, %(a2)s) AND "annotator_id" <> %(u)s)')
    return (f'UPDATE "{counts}" SET "labels" = "labels" + CASE WHEN "annotator_id" IS NOT NULL THEN %(step)s '
            f'WHEN {others} THEN 0 ELSE %(step)s END '
            'WHERE "project_id" = %(p)s AND ("annotator_id" IS NULL OR "annotator_id" = %(u)s)')


def label_change(*, project_id: int, item_id: int, annotator_id: int, before: str | None, after: str | None) -> None:
    """The person's current row on the item went from action ``before`` to ``after`` (None: no current
    row): add what that changes to the kept counts.  Call it after the rows are written, last."""
    was, now = before in _LABELS, after in _LABELS
    if was == now:
        return  # a relabel, a skip after a skip: nothing to count
    # PostgreSQL: the caller inserted a row (the label, the undo, the correction): its deferred reference
    # checks run now, not at COMMIT after the counters' locks (queue_counts.deferred_checks_now); then
    # the project's row is locked first (module docstring).  SQLite holds its write lock already.
    locked = None
    if connection.features.has_select_for_update:
        deferred_checks_now()
        locked = _lock_project_row(project_id)
    if locked is False:
        label_counts_recount(project_id=project_id)  # no counts yet: count them (this transaction's rows too)
        return
    step = int(now) - int(was)
    with connection.cursor() as cur:
        cur.execute(_change_sql(), {"step": step, "item": item_id, "t": True, "a1": _LABELS[0], "a2": _LABELS[1],
                                  "u": annotator_id, "p": project_id})
        moved = cur.rowcount
    if moved < 2:
        if locked is None and not LabelCounts.objects.filter(project_id=project_id, annotator__isnull=True).exists():
            label_counts_recount(project_id=project_id)  # no counts yet (SQLite): count them
            return
        _add_mine(project_id, annotator_id, step)  # the person's first label in the project: their row is made


@transaction.atomic
def label_counts_recount(*, project_id: int) -> dict[int | None, tuple[int | None, int]]:
    """Count the project's labeled items and each person's labels and store them, under the rows'
    locks (the project's first, exact while changes run as ``queue_counts.queue_pending_recount``):
    ``{annotator id or None for the project: (kept before, counted)}``."""
    if not _lock_project_row(project_id):
        try:
            with transaction.atomic():
                LabelCounts.objects.create(project_id=project_id, annotator=None, labels=0)
        except IntegrityError:
            pass  # made meanwhile
        _lock_project_row(project_id)
    qs = LabelCounts.objects.filter(project_id=project_id).order_by("annotator_id")
    kept = dict((qs.select_for_update() if connection.features.has_select_for_update else qs)
                .values_list("annotator_id", "labels"))
    counted: dict[int | None, int] = {None: _count_labeled(project_id)}
    counted.update(_current_labels(project_id).order_by().values("annotator_id").annotate(n=Count("id"))
                   .values_list("annotator_id", "n"))
    for who in sorted(set(kept) | set(counted), key=lambda a: -1 if a is None else a):
        n = counted.get(who, 0)
        if who not in kept:
            LabelCounts.objects.get_or_create(project_id=project_id, annotator_id=who, defaults={"labels": n})
        elif kept[who] != n:
            LabelCounts.objects.filter(project_id=project_id, annotator_id=who).update(labels=n)
    return {who: (kept.get(who), counted.get(who, 0)) for who in set(kept) | set(counted)}


def label_counts_recount_many(*, project_ids: Iterable[int]) -> None:
    for pk in sorted(set(project_ids)):
        label_counts_recount(project_id=pk)


def _drifted_projects() -> dict[int, list[str]]:
    """{project: what differs} for every project whose kept label counts differ from a fresh count,
    in one statement (one snapshot)."""
    proj, ann, item, lc = (Project._meta.db_table, Annotation._meta.db_table, Item._meta.db_table,
                           LabelCounts._meta.db_table)
    cur_labels = (f'SELECT i."project_id" AS p, a."annotator_id" AS u, a."item_id" AS it FROM "{ann}" a '
                  f'JOIN "{item}" i ON i."id" = a."item_id" WHERE a."is_current" = %s AND a."action" IN (%s, %s)')
    per_person = f"(SELECT p, u, COUNT(*) AS n FROM ({cur_labels}) x GROUP BY p, u)"
    # the project rows (every project), the person rows, and counted people without a row
    sql = (f'SELECT pr."id", NULL, k."labels", COALESCE(q.n, 0) FROM "{proj}" pr '
           f'LEFT JOIN "{lc}" k ON k."project_id" = pr."id" AND k."annotator_id" IS NULL '
           f'LEFT JOIN (SELECT p, COUNT(DISTINCT it) AS n FROM ({cur_labels}) x GROUP BY p) q ON q.p = pr."id" '
           f'UNION ALL SELECT k."project_id", k."annotator_id", k."labels", COALESCE(q.n, 0) FROM "{lc}" k '
           f'LEFT JOIN {per_person} q ON q.p = k."project_id" AND q.u = k."annotator_id" '
           'WHERE k."annotator_id" IS NOT NULL '
           f'UNION ALL SELECT q.p, q.u, NULL, q.n FROM {per_person} q LEFT JOIN "{lc}" k '
           'ON k."project_id" = q.p AND k."annotator_id" = q.u WHERE k."project_id" IS NULL')
    one = [True, *_LABELS]
    out: dict[int, list[str]] = {}
    with connection.cursor() as cur:
        cur.execute(sql, one * 3)
        for pk, who, kept, n in cur.fetchall():
            if (kept or 0) != n:
                what = "labeled items" if who is None else f"labels of user {who}"
                out.setdefault(int(pk), []).append(f"{what}: kept {kept}, counted {n}")
    return out


def label_counts_check(*, repair: bool = True) -> dict[int, str]:
    """Every project's kept label counts against fresh counts: ``{project: what differs}``, each
    logged, and recounted with ``repair``."""
    drift = {pk: "; ".join(what) for pk, what in sorted(_drifted_projects().items())}
    for pk, what in drift.items():
        log.warning("label counts of project %s drifted: %s%s", pk, what, "; recounted" if repair else "")
        if repair:
            label_counts_recount(project_id=pk)
    return drift
