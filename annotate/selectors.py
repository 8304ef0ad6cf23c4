"""Reads (HackSoft styleguide): querysets and small summaries used by views, services and tasks."""
from __future__ import annotations

from typing import Any

from django.db import connection
from django.db.models import Case, Count, IntegerField, QuerySet, Value, When

from .models import Annotation, Item, LabelCounts, Project, ProjectCounts, QueueCounts, QueueEntry, Round
from .payloads import round_payload
from .selectors_labels import LABEL_ACTIONS, final_labels

#: Current rows that take an item out of the pool (labeled, or skipped by someone).
DECIDED_ACTIONS = (*LABEL_ACTIONS, Annotation.Action.SKIP)


def current_labels(*, project: Project) -> QuerySet[Annotation]:
    """Current label rows of the project (one per item and annotator)."""
    return Annotation.objects.filter(item__project=project, is_current=True, action__in=LABEL_ACTIONS)


#: Items per ``final_labels`` query in :func:`labeled_item_labels` (bounded ``IN`` lists).
FINAL_LABELS_CHUNK = 5000


def labeled_item_labels(*, project: Project) -> dict[int, str]:
    """item id -> its label for training: the *final label* of ``selectors_labels.final_labels``
    (a reviewer's correction wins over annotators' labels; among rows of one kind the latest wins),
    the same rule as exports and statistics."""
    ids = sorted(set(current_labels(project=project).order_by().values_list("item_id", flat=True)))
    out: dict[int, str] = {}
    for k in range(0, len(ids), FINAL_LABELS_CHUNK):
        out.update({item_id: fl.label for item_id, fl in final_labels(ids[k:k + FINAL_LABELS_CHUNK]).items()})
    return out


def decided_item_ids(*, project: Project) -> QuerySet:
    return (
        Annotation.objects.filter(item__project=project, is_current=True, action__in=DECIDED_ACTIONS)
        .values("item_id")
    )


def open_item_ids(*, project: Project, states=QueueEntry.OPEN) -> QuerySet:
    return QueueEntry.objects.filter(project=project, state__in=states).values("item_id")


def pool_items(*, project: Project, include_pending: bool = False) -> QuerySet[Item]:
    """Items a round may pick: an embedding row, no current label or skip, and not in the open queue.

    ``include_pending=True`` also admits items whose entry is still pending (not leased): a new round
    supersedes those entries, so it re-scores their items with the new model (services/rounds.py).
    """
    states = (QueueEntry.State.LEASED,) if include_pending else QueueEntry.OPEN
    return (
        Item.objects.filter(project=project, row__isnull=False)
        .exclude(pk__in=decided_item_ids(project=project))
        .exclude(pk__in=open_item_ids(project=project, states=states))
    )


def active_round(*, project: Project) -> Round | None:
    return Round.objects.filter(project=project, status__in=Round.ACTIVE).order_by("-number").first()


def last_round(*, project: Project) -> Round | None:
    return Round.objects.filter(project=project).order_by("-number").first()


def current_round(*, project: Project) -> Round | None:
    """``active_round(...) or last_round(...)`` in one query: the newest active round, else the newest."""
    active_first = Case(When(status__in=Round.ACTIVE, then=Value(0)), default=Value(1), output_field=IntegerField())
    return Round.objects.filter(project=project).order_by(active_first, "-number").first()


def pending_count(*, project: Project) -> int:
    """Pending queue entries of the project: the count the queue services keep (``QueueCounts``,
    services/queue_counts.py), a constant-time read; counted only for a project without a kept
    count yet (no entry has changed state through a service since it was created)."""
    kept = QueueCounts.objects.filter(project=project).values_list("pending", flat=True).first()
    if kept is None:
        return QueueEntry.objects.filter(project=project, state=QueueEntry.State.PENDING).count()
    return int(kept)


def item_totals(*, project: Project) -> dict[str, int]:
    """``items`` and ``embedded`` (items with an embedding row) of the project: the totals the item
    services keep (``ProjectCounts``, services/item_counts.py), a constant-time read; counted
    from the item table only for a project whose items were never inserted (none, then)."""
    row = ProjectCounts.objects.filter(project=project).values("items", "embedded").first()
    if row is None:
        return Item.objects.filter(project=project).aggregate(items=Count("id"), embedded=Count("row"))
    return row


def _progress_sql() -> str:
    """The SQL of :func:`progress_counts` (table names from the models; portable SQLite/PostgreSQL)."""
    item, ann, queue = Item._meta.db_table, Annotation._meta.db_table, QueueEntry._meta.db_table
    counts, qcounts = ProjectCounts._meta.db_table, QueueCounts._meta.db_table
    lcounts = LabelCounts._meta.db_table
    labels = (f'FROM "{ann}" a INNER JOIN "{item}" i ON i."id" = a."item_id" '
              'WHERE i."project_id" = %(p)s AND a."is_current" = %(t)s AND a."action" IN (%(a1)s, %(a2)s)')
    # total, labeled, pending and mine: the kept counts (services/item_counts.py, label_counts.py,
    # queue_counts.py); a COUNT runs only where a counts row is missing, as COALESCE stops at its first
    # non-null argument.  Leased entries are few (a share per annotator): counted.
    return (
        "SELECT "
        f'COALESCE((SELECT "items" FROM "{counts}" WHERE "project_id" = %(p)s), '
        f'(SELECT COUNT(*) FROM "{item}" WHERE "project_id" = %(p)s)) AS n_total, '
        f'COALESCE((SELECT "labels" FROM "{lcounts}" WHERE "project_id" = %(p)s AND "annotator_id" IS NULL), '
        f'(SELECT COUNT(DISTINCT a."item_id") {labels})) AS n_labeled, '
        f'COALESCE((SELECT "pending" FROM "{qcounts}" WHERE "project_id" = %(p)s), '
        f'(SELECT COUNT(*) FROM "{queue}" WHERE "project_id" = %(p)s AND "state" = %(pending)s)) AS n_pending, '
        f'(SELECT COUNT(*) FROM "{queue}" WHERE "project_id" = %(p)s AND "state" = %(leased)s) AS n_leased, '
        f'COALESCE((SELECT "labels" FROM "{lcounts}" WHERE "project_id" = %(p)s AND "annotator_id" = %(u)s), '
        f'(SELECT COUNT(*) {labels} AND a."annotator_id" = %(u)s)) AS n_mine'
    )


_PROGRESS_SQL: str | None = None


def progress_counts(*, project: Project, user=None) -> dict[str, int]:
    """``total``, ``labeled``, ``pending``, ``leased`` (and ``mine`` with a user) in ONE query.

    Every label response carries these, so they cost one round trip: all but ``leased`` are
    kept counts (constant time whatever the project's size), ``leased`` an indexed ``COUNT`` over
    the few leased entries, written as SQL once per process: building the same sub-queries with the ORM cost
    about 5 ms of CPU per request, a third of a label's (docs/bench-load.md).  ``labeled``
    counts items with a current ``label`` or ``correct`` row, as :func:`current_labels`."""
    global _PROGRESS_SQL
    if _PROGRESS_SQL is None:
        _PROGRESS_SQL = _progress_sql()
    params = {"p": project.pk, "t": True, "a1": LABEL_ACTIONS[0].value, "a2": LABEL_ACTIONS[1].value,
              "pending": QueueEntry.State.PENDING.value, "leased": QueueEntry.State.LEASED.value,
              "u": getattr(user, "pk", None)}
    with connection.cursor() as cur:
        cur.execute(_PROGRESS_SQL, params)
        total, labeled, pending, leased, mine = cur.fetchone()
    out = {"total": int(total), "labeled": int(labeled), "pending": int(pending), "leased": int(leased)}
    if user is not None:
        out["mine"] = int(mine)
    return out


_ROUND_PROGRESS_SQL: str | None = None


def progress_and_round(*, project: Project, user) -> tuple[dict[str, int], Round | None]:
    """:func:`progress_counts` and :func:`current_round` in ONE statement (the submit's hot path).

    The current round's row with the five counts as extra columns; a project without rounds has
    no such row, and then the counts are read alone."""
    global _ROUND_PROGRESS_SQL, _PROGRESS_SQL
    if _ROUND_PROGRESS_SQL is None:
        _PROGRESS_SQL = _PROGRESS_SQL or _progress_sql()
        counts = _PROGRESS_SQL[len("SELECT "):]
        cols = ", ".join(f'"{f.column}"' for f in Round._meta.concrete_fields)
        _ROUND_PROGRESS_SQL = (
            f'SELECT {cols}, {counts} FROM "{Round._meta.db_table}" WHERE "project_id" = %(p)s '
            'ORDER BY CASE WHEN "status" IN (%(queued)s, %(running)s) THEN 0 ELSE 1 END, "number" DESC LIMIT 1')
    params = {"p": project.pk, "t": True, "a1": LABEL_ACTIONS[0].value, "a2": LABEL_ACTIONS[1].value,
              "pending": QueueEntry.State.PENDING.value, "leased": QueueEntry.State.LEASED.value,
              "u": user.pk, "queued": Round.Status.QUEUED.value, "running": Round.Status.RUNNING.value}
    rows = list(Round.objects.raw(_ROUND_PROGRESS_SQL, params))
    if not rows:
        return progress_counts(project=project, user=user), None
    rnd = rows[0]
    return {"total": int(rnd.n_total), "labeled": int(rnd.n_labeled), "pending": int(rnd.n_pending),
            "leased": int(rnd.n_leased), "mine": int(rnd.n_mine)}, rnd


_UNREAD = object()


def project_progress(*, project: Project, user=None, counts: dict[str, int] | None = None,
                     current: Round | None = _UNREAD) -> dict[str, Any]:
    """Counts for the labeling page: items, labeled items, this user's labels, queue and rounds.

    One query (:func:`progress_and_round`) with a user; pass ``counts`` / ``current`` when the caller
    has read them already."""
    if counts is None and current is _UNREAD and user is not None:
        counts, current = progress_and_round(project=project, user=user)
    out: dict[str, Any] = dict(counts) if counts is not None else progress_counts(project=project, user=user)
    rnd = current_round(project=project) if current is _UNREAD else current
    out["round"] = round_payload(rnd) if rnd is not None else None
    return out

