"""Reads (HackSoft styleguide): querysets and small summaries used by views, services and tasks."""
from __future__ import annotations

from typing import Any

from django.db.models import QuerySet

from .models import Annotation, Item, Project, QueueEntry, Round

#: Annotation actions whose current row gives an item its label.
LABEL_ACTIONS = (Annotation.Action.LABEL, Annotation.Action.CORRECT)
#: Current rows that take an item out of the pool (labeled, or skipped by someone).
DECIDED_ACTIONS = (*LABEL_ACTIONS, Annotation.Action.SKIP)


def current_labels(*, project: Project) -> QuerySet[Annotation]:
    """Current label rows of the project (one per item and annotator)."""
    return Annotation.objects.filter(item__project=project, is_current=True, action__in=LABEL_ACTIONS)


def labeled_item_labels(*, project: Project) -> dict[int, str]:
    """item id -> its label.  Several annotators' current labels on one item: the latest wins."""
    rows = current_labels(project=project).order_by("created_at", "id").values_list("item_id", "label")
    return {item_id: label for item_id, label in rows}


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


def project_progress(*, project: Project, user=None) -> dict[str, Any]:
    """Counts for the labeling page: items, labeled items, this user's labels, queue and rounds."""
    labels = current_labels(project=project)
    counts = {
        "total": Item.objects.filter(project=project).count(),
        "labeled": labels.values("item_id").distinct().count(),
        "pending": QueueEntry.objects.filter(project=project, state=QueueEntry.State.PENDING).count(),
        "leased": QueueEntry.objects.filter(project=project, state=QueueEntry.State.LEASED).count(),
    }
    if user is not None:
        counts["mine"] = labels.filter(annotator=user).count()
    counts["round"] = round_summary(active_round(project=project) or last_round(project=project))
    return counts


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
