"""Reads (HackSoft styleguide): querysets and small summaries used by views, services and tasks."""
from __future__ import annotations

from typing import Any

from django.db.models import Case, Count, IntegerField, Q, QuerySet, Subquery, Value, When
from django.db.models.functions import Coalesce

from .models import Annotation, Item, Project, QueueEntry, Round
from .selectors_labels import final_labels

#: Annotation actions whose current row gives an item its label.
LABEL_ACTIONS = (Annotation.Action.LABEL, Annotation.Action.CORRECT)
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
    return QueueEntry.objects.filter(project=project, state=QueueEntry.State.PENDING).count()


def round_summary(rnd: Round | None) -> dict[str, Any] | None:
    if rnd is None:
        return None
    return {
        "id": rnd.pk,
        "number": rnd.number,
        "status": rnd.status,
        "progress": rnd.progress,
        "message": rnd.progress_message,
        "failure": rnd.failure,
        "labeled_count": rnd.labeled_count,
        "batch_size": rnd.batch_size,
        "strategy": rnd.strategy,
        "finished_at": rnd.finished_at.isoformat() if rnd.finished_at else None,
    }


def _scalar_count(qs: QuerySet, expr) -> Coalesce:
    """A scalar sub-query: ``expr`` aggregated over all rows of ``qs`` (0 when there are none).

    Grouping by a constant adds no ``GROUP BY`` column, so the sub-query is one aggregate row."""
    sub = qs.order_by().annotate(_all=Value(1)).values("_all").annotate(n=expr).values("n")
    return Coalesce(Subquery(sub, output_field=IntegerField()), Value(0))


def progress_counts(*, project: Project, user=None) -> dict[str, int]:
    """``total``, ``labeled``, ``pending``, ``leased`` (and ``mine`` with a user) in ONE query.

    Each is an indexed ``COUNT`` sub-query of a one-row select on the project; this is what every
    label response carries, so it is kept to one round trip (docs/bench-load.md)."""
    labels = current_labels(project=project)
    queue = QueueEntry.objects.filter(project=project, state__in=QueueEntry.OPEN)
    exprs = {
        "total": _scalar_count(Item.objects.filter(project=project), Count("pk")),
        "labeled": _scalar_count(labels, Count("item_id", distinct=True)),
        "pending": _scalar_count(queue, Count("pk", filter=Q(state=QueueEntry.State.PENDING))),
        "leased": _scalar_count(queue, Count("pk", filter=Q(state=QueueEntry.State.LEASED))),
    }
    if user is not None:
        exprs["mine"] = _scalar_count(labels.filter(annotator=user), Count("pk"))
    row = Project.objects.filter(pk=project.pk).values(**exprs).first()
    if row is None:  # the project was deleted meanwhile
        return {k: 0 for k in exprs}
    return {k: int(v) for k, v in row.items()}


def project_progress(*, project: Project, user=None, counts: dict[str, int] | None = None) -> dict[str, Any]:
    """Counts for the labeling page: items, labeled items, this user's labels, queue and rounds.

    Two queries: :func:`progress_counts` (pass ``counts`` when the caller has them already) and
    :func:`current_round`."""
    out: dict[str, Any] = dict(counts) if counts is not None else progress_counts(project=project, user=user)
    out["round"] = round_summary(current_round(project=project))
    return out


def entry_payload(entry: QueueEntry) -> dict[str, Any]:
    """What the labeling page needs to show a leased item (no prediction: it would bias the label)."""
    return {
        "entry_id": entry.pk,
        "item_id": entry.item_id,
        "image_url": f"/items/{entry.item_id}/image",
        "round": entry.round.number if entry.round_id else None,
        "rank": entry.rank,
        "lease_expires_at": entry.lease_expires_at.isoformat() if entry.lease_expires_at else None,
    }
