"""Label, skip and undo.

History is kept: rows are never edited except for the ``is_current`` flag.  A label or a skip
adds a row that becomes the current one for (item, annotator); undo adds an ``undo`` row that
becomes current, so the item has no label from that person any more, and hands the item back
to them (leased again) so they can label it at once.

After a label or a skip the project's refill policy runs (``rounds.round_maybe_request``), here and
not in a view, so every way of labeling (the API, the shell, a bulk script) keeps the queue filled.

Idempotency: the client sends a ``client_id`` (UUID) with every submit and retries with the same
one; a retry of a stored submit returns the stored row (``created=False``) and stores nothing.
The same ``client_id`` for a different submit is a conflict.  A second submit for an item
without the first's ``client_id`` (a double submit) is refused: the item is no longer leased.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta

from django.db import IntegrityError, connection, transaction
from django.utils import timezone

from .. import selectors
from ..models import Annotation, Item, Project, QueueEntry, Round
from .errors import BadInput, Conflict, NotFound
from .queue import lease_seconds
from .label_counts import label_change
from .queue_counts import queue_pending_add
from .rounds import round_maybe_request

MAX_TIME_MS = 24 * 3600 * 1000
#: origins a labeling request may claim (pre-labels come only from an import)
ANNOTATOR_ORIGINS = (Annotation.Origin.MANUAL, Annotation.Origin.SUGGESTION, Annotation.Origin.CANDIDATE)


@dataclass
class SubmitResult:
    annotation: Annotation
    created: bool
    progress: dict[str, int]  # selectors.progress_counts for the submitter, read after the submit
    round: Round | None  # selectors.current_round after the refill policy ran (the round it started, if any)


@dataclass
class UndoResult:
    undone: Annotation  # the row that was undone
    annotation: Annotation  # the new "undo" row
    entry: QueueEntry  # the item's queue entry, leased to the user again
    created: bool


# The largest primary key a BigAutoField holds; a larger JSON integer would overflow the database driver.
MAX_ID = 2**63 - 1


def is_item_id(value) -> bool:
    """A JSON integer that can be an item's primary key (not true, not 1708.9, not 2**64)."""
    return isinstance(value, int) and not isinstance(value, bool) and 1 <= value <= MAX_ID


def parse_item_id(item_id) -> int:
    if not is_item_id(item_id):
        raise BadInput(f"item_id={item_id!r} must be a positive integer (at most {MAX_ID})")
    return item_id


def _parse_client_id(client_id) -> uuid.UUID | None:
    if client_id is None:
        return None
    try:
        return uuid.UUID(str(client_id))
    except ValueError:
        raise BadInput(f"client_id={client_id!r} is not a UUID") from None


def _parse_time_ms(time_ms) -> int:
    if time_ms is None:
        return 0
    if isinstance(time_ms, bool) or not isinstance(time_ms, (int, float)) or time_ms != time_ms or time_ms < 0:
        raise BadInput(f"time_ms={time_ms!r} must be a number of milliseconds >= 0")
    return int(min(time_ms, MAX_TIME_MS))


def _replay(*, user, client_id: uuid.UUID, item_id: int, action: str, label: str) -> Annotation | None:
    """The stored row for this client_id, if the same submit was stored before; Conflict if it differs."""
    prior = Annotation.objects.filter(annotator=user, client_id=client_id).first()
    if prior is None:
        return None
    if prior.item_id != item_id or prior.action != action or prior.label != label:
        raise Conflict(
            f"client_id {client_id} was already used for {prior.action} {prior.label!r} on item {prior.item_id}"
        )
    return prior


def annotation_submit(
    *,
    project: Project,
    user,
    item_id: int,
    label: str | None = None,
    skip: bool = False,
    client_id=None,
    time_ms=0,
    origin: str = Annotation.Origin.MANUAL,
) -> SubmitResult:
    """Store a label (or a skip) for an item leased to ``user``; the entry is then done (skipped).

    ``origin``: how the annotator gave the label: ``manual`` (a class key, button or the type-ahead),
    ``suggestion`` (accepted the model's guess with one key) or ``candidate`` (picked one of the model's
    candidate classes).  It is the annotator's label either way; the origin lets quality statistics
    separate the labels that were shown the model's answer.

    Then the refill policy runs.  The hot path (docs/bench-load.md) reads the progress counts and
    the current round once: they feed the policy (the round holds the project's pace), and the
    caller shows them (``SubmitResult.progress``, ``SubmitResult.round``).
    """
    item_id = parse_item_id(item_id)
    cid = _parse_client_id(client_id)
    time_ms = _parse_time_ms(time_ms)
    if origin not in ANNOTATOR_ORIGINS:
        raise BadInput(f"origin={origin!r} is not one of {list(ANNOTATOR_ORIGINS)}")
    if skip:
        action, label = Annotation.Action.SKIP, ""
    else:
        action = Annotation.Action.LABEL
        if not isinstance(label, str) or label not in project.classes:
            raise BadInput(f"label={label!r} is not one of the project's classes {project.classes}")
    try:
        with transaction.atomic():
            ann, created = _submit(project=project, user=user, item_id=item_id, action=action, label=label,
                                   cid=cid, time_ms=time_ms,
                                   origin=origin if action == Annotation.Action.LABEL else "manual")
    except IntegrityError:
        # Two retries of one submit raced: the other one stored it.
        prior = None
        if cid is not None:
            prior = _replay(user=user, client_id=cid, item_id=item_id, action=action, label=label)
        if prior is None:
            raise Conflict(f"item {item_id} was changed by a concurrent request; reload and try again") from None
        ann, created = prior, False
    counts, current = selectors.progress_and_round(project=project, user=user)
    started = round_maybe_request(project=project, pending=counts["pending"], current=current)
    return SubmitResult(ann, created, counts, started or current)


def _close_lease(*, project, user, item_id: int, state: str, now) -> tuple[int, int] | None:
    """Mark the user's lease on the item done (or skipped) in one statement: (entry id, overlap_k), or
    None when the user holds no lease on it.

    ``UPDATE ... WHERE state = 'leased' AND leased_by = user RETURNING``: the row lock and the state
    change in one round trip (it was a ``SELECT ... FOR UPDATE`` and an ``UPDATE``).  A concurrent
    submit of the same item waits for this row lock and then no longer matches (PostgreSQL re-checks
    the condition on the updated row), so exactly one of them closes the lease; at most one open
    entry per item exists (``queue_item_open_once``)."""
    table = QueueEntry._meta.db_table
    with connection.cursor() as cur:
        cur.execute(
            f'UPDATE "{table}" SET "state" = %s, "done_at" = %s '
            'WHERE "project_id" = %s AND "item_id" = %s AND "state" = %s AND "leased_by_id" = %s '
            'RETURNING "id", "overlap_k"',
            [state, connection.ops.adapt_datetimefield_value(now), project.pk, item_id,
             QueueEntry.State.LEASED.value, user.pk])
        row = cur.fetchone()
    return (int(row[0]), int(row[1])) if row else None


def _retire_current(*, user, item_id: int) -> tuple[int, str] | None:
    """Clear ``is_current`` of the user's current row on the item (one statement); its id and
    action, or None."""
    table = Annotation._meta.db_table
    with connection.cursor() as cur:
        cur.execute(f'UPDATE "{table}" SET "is_current" = %s '
                    'WHERE "item_id" = %s AND "annotator_id" = %s AND "is_current" = %s RETURNING "id", "action"',
                    [False, item_id, user.pk, True])
        row = cur.fetchone()
    return (int(row[0]), str(row[1])) if row else None


def _submit(*, project, user, item_id, action, label, cid, time_ms, origin) -> tuple[Annotation, bool]:
    """Three statements on the hot path: close the lease, retire the previous current row, insert.

    A replayed ``client_id`` whose lease is still open (the item was undone and leased again)
    fails the insert on ``annotation_unique_client_id``; the caller then answers the stored row
    (``annotation_submit``'s ``IntegrityError`` branch), and the rolled-back transaction leaves
    the lease open, as before."""
    now = timezone.now()
    state = QueueEntry.State.SKIPPED if action == Annotation.Action.SKIP else QueueEntry.State.DONE
    closed = _close_lease(project=project, user=user, item_id=item_id, state=state.value, now=now)
    if closed is None:
        # Not leased to the user: an unknown item (404), a replay of a stored submit (the stored
        # row), or a double submit / an expired or foreign lease (409).
        if not Item.objects.filter(project=project, pk=item_id).exists():
            raise NotFound(f"item {item_id} is not in project {project.pk}")
        if cid is not None:
            prior = _replay(user=user, client_id=cid, item_id=item_id, action=action, label=label)
            if prior is not None:
                return prior, False
        raise Conflict(_why_not_leased(project=project, user=user, item_id=item_id))
    entry_id, overlap_k = closed
    retired = _retire_current(user=user, item_id=item_id)
    ann = Annotation.objects.create(
        item_id=item_id,
        annotator=user,
        action=action,
        label=label,
        skipped=action == Annotation.Action.SKIP,
        time_ms=time_ms,
        origin=origin,
        is_current=True,
        supersedes_id=retired[0] if retired else None,
        queue_entry_id=entry_id,
        client_id=cid,
    )
    # the kept counts last, the queue's first (lock order: services/queue_counts.py)
    if overlap_k > 1 and _overlap_copy(QueueEntry.objects.get(pk=entry_id)):
        queue_pending_add(project_id=project.pk, delta=1, inserted=True)
    label_change(project_id=project.pk, item_id=item_id, annotator_id=user.pk,
                 before=retired[1] if retired else None, after=action)
    return ann, True


def _overlap_copy(entry: QueueEntry) -> bool:
    """Serve an overlapped item again (to someone else, services/queue.py) until k people labeled it:
    whether a pending copy was added."""
    labeled = (Annotation.objects.filter(item_id=entry.item_id, is_current=True, action=Annotation.Action.LABEL)
               .values("annotator_id").distinct().count())
    if labeled >= entry.overlap_k:
        return False
    QueueEntry.objects.create(
        project_id=entry.project_id, round_id=entry.round_id, item_id=entry.item_id, rank=entry.rank,
        score=entry.score, is_audit=False, predicted_label=entry.predicted_label,
        predicted_confidence=entry.predicted_confidence, overlap_k=entry.overlap_k,
    )
    return True


def _why_not_leased(*, project, user, item_id) -> str:
    mine = Annotation.objects.filter(item_id=item_id, annotator=user, is_current=True).first()
    if mine is not None and mine.action != Annotation.Action.UNDO:
        return (f"item {item_id} was already {'skipped' if mine.skipped else 'labeled'} by you "
                f"(a double submit?); undo it to change it")
    other = QueueEntry.objects.filter(project=project, item_id=item_id, state=QueueEntry.State.LEASED).first()
    if other is not None:
        return f"item {item_id} is leased to another annotator"
    return f"item {item_id} is not leased to you (the lease may have expired); lease it first"


def annotation_undo(*, project: Project, user, item_id: int | None = None, client_id=None) -> UndoResult:
    """Undo the user's latest label or skip in the project (or the one on ``item_id``).

    Adds an ``undo`` row (the undone row stays in the history) and leases the item to the user
    again.  Repeated undos walk back through the user's earlier labels.
    """
    if item_id is not None:
        item_id = parse_item_id(item_id)
    cid = _parse_client_id(client_id)
    try:
        with transaction.atomic():
            return _undo(project=project, user=user, item_id=item_id, cid=cid)
    except IntegrityError:
        raise Conflict("the label was changed by a concurrent request; reload and try again") from None


def _undo(*, project, user, item_id, cid) -> UndoResult:
    if cid is not None:
        prior = Annotation.objects.filter(annotator=user, client_id=cid).first()
        if prior is not None:
            if prior.action != Annotation.Action.UNDO or (item_id is not None and prior.item_id != item_id):
                raise Conflict(f"client_id {cid} was already used for {prior.action} on item {prior.item_id}")
            entry = QueueEntry.objects.filter(project=project, item_id=prior.item_id).order_by("-id").first()
            return UndoResult(prior.supersedes, prior, entry, False)
    # Lock the label rows only, not the joined item: a submit of the item's overlap copy checks its
    # reference to the item at COMMIT (a deferred foreign key) while it holds the copy's row, which
    # _relocate_entry below waits for - locking the item too made the two wait for each other.
    qs = Annotation.objects.select_for_update(of=("self",)).filter(
        item__project=project,
        annotator=user,
        is_current=True,
        action__in=(Annotation.Action.LABEL, Annotation.Action.SKIP, Annotation.Action.CORRECT),
    )
    if item_id is not None:
        qs = qs.filter(item_id=item_id)
    target = qs.order_by("-created_at", "-id").first()
    if target is None:
        where = f" on item {item_id}" if item_id is not None else ""
        raise NotFound(f"nothing to undo{where}: you have no current label or skip in project {project.pk}")
    now = timezone.now()
    expires = now + timedelta(seconds=lease_seconds())
    Annotation.objects.filter(pk=target.pk).update(is_current=False)
    undo = Annotation.objects.create(
        item_id=target.item_id,
        annotator=user,
        action=Annotation.Action.UNDO,
        label="",
        is_current=True,
        supersedes=target,
        queue_entry_id=target.queue_entry_id,
        client_id=cid,
    )
    entry = _relocate_entry(project=project, user=user, target=target, now=now, expires=expires)
    label_change(project_id=project.pk, item_id=target.item_id, annotator_id=user.pk, before=target.action,
                 after=undo.action)
    return UndoResult(target, undo, entry, True)


def _relocate_entry(*, project, user, target: Annotation, now, expires) -> QueueEntry:
    """Lease the undone item to the user again: reopen its entry, or add one when it has none."""
    open_entry = (
        QueueEntry.objects.select_for_update()
        .filter(project=project, item_id=target.item_id, state__in=QueueEntry.OPEN)
        .first()
    )
    if open_entry is not None:
        if open_entry.state == QueueEntry.State.LEASED and open_entry.leased_by_id != user.pk:
            raise Conflict(f"item {target.item_id} is leased to another annotator now; it cannot be undone")
        entry = open_entry
    elif target.queue_entry_id is not None:
        entry = QueueEntry.objects.select_for_update().get(pk=target.queue_entry_id)
    else:
        entry = QueueEntry(project=project, item_id=target.item_id, round=None, rank=0)
    was_pending = entry.pk is not None and entry.state == QueueEntry.State.PENDING
    entry.state = QueueEntry.State.LEASED
    entry.leased_by = user
    entry.leased_at = now
    entry.lease_expires_at = expires
    entry.done_at = None
    entry.save()
    if was_pending:
        queue_pending_add(project_id=project.pk, delta=-1, inserted=True)  # the undo row was inserted
    return entry
