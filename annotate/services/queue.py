"""The labeling queue: leases, lease expiry, release.

Two annotators never hold the same item.  On PostgreSQL a lease takes pending rows with
``SELECT ... FOR UPDATE SKIP LOCKED``, so concurrent requests each get different rows without
waiting for one another.  SQLite has no row locks; there every transaction is opened with
``BEGIN IMMEDIATE`` (``transaction_mode`` in ``config/env.py``), which takes the database's
write lock at the start, so two leases run one after the other and the second sees the first's
rows as leased.

Serving order: the newest round's entries first, then by rank inside a round.  Entries of older
rounds are only still pending when their lease expired after a newer round had superseded the
rest of their round (see ``services/rounds.py``); they are served after the current round's.

Overlap: an entry with ``overlap_k > 1`` gets a pending copy each time someone finishes it, until
k people have labeled the item (``services/annotations.py``); a copy is never leased to a person
who already labeled or skipped the item.  Only one entry per item is open at a time, so two
people still never hold the same item at once.
"""
from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Exists, F, OuterRef, Q
from django.utils import timezone

from .. import selectors
from ..models import Annotation, Membership, Project, QueueCounts, QueueEntry
from .errors import BadInput
from .queue_counts import queue_pending_add, queue_pending_add_many
from .rounds import round_maybe_request

MAX_LEASE = 50
LEASE_FLOOR = 6  # the labeling page's prefetch (api.DEFAULT_LEASE)
SENDING_HEADROOM = LEASE_FLOOR  # the most entries being sent that a lease does not count (queue_lease)


def lease_seconds() -> int:
    return int(settings.LOUPE_LEASE_SECONDS)


_RETURNED = {"state": QueueEntry.State.PENDING, "leased_by": None, "leased_at": None, "lease_expires_at": None}


def _return_expired(project_id: int, now: datetime) -> int:
    """Expired leases of the project back to pending, without adding them to the kept count (the caller does)."""
    return (QueueEntry.objects.filter(project_id=project_id, state=QueueEntry.State.LEASED, lease_expires_at__lt=now)
            .update(**_RETURNED))


def queue_release_expired(*, project: Project | None = None, now: datetime | None = None) -> int:
    """Return leased entries whose lease has run out to the pending queue (of one project, or of
    every project, each in its own transaction); the number returned."""
    now = now or timezone.now()
    if project is not None:
        project_ids = [project.pk]
    else:
        project_ids = sorted(set(QueueEntry.objects.filter(state=QueueEntry.State.LEASED, lease_expires_at__lt=now)
                                 .values_list("project_id", flat=True)))
    returned = 0
    for pk in project_ids:
        with transaction.atomic():
            n = _return_expired(pk, now)
            queue_pending_add(project_id=pk, delta=n)
        returned += n
    return returned


def _pending_for_update(project: Project, user=None):
    qs = (QueueEntry.objects.select_related("round", "item")  # the item's file signs its image URL
          .filter(project=project, state=QueueEntry.State.PENDING)
          .order_by(F("round_id").desc(nulls_last=True), "rank", "id"))
    if user is not None:
        # Overlap copies (services/annotations.py) never go back to someone who labeled or skipped the item.
        mine = Annotation.objects.filter(item_id=OuterRef("item_id"), annotator=user, is_current=True).exclude(
            action=Annotation.Action.UNDO)
        qs = qs.filter(Q(overlap_k__lte=1) | ~Exists(mine))
    if connection.features.has_select_for_update_skip_locked:
        # Lock only queue rows (no join is locked), skipping rows another lease holds right now.
        qs = qs.select_for_update(skip_locked=True, of=("self",))
    return qs


def lease_cap(*, project: Project, user, returned: int = 0) -> int:
    """The most entries ``user`` may hold at once: a fair share of the open queue (pending + leased).

    ``ceil(open / (others + 2))`` where ``others`` is the number of other annotators holding a
    lease: one share each for them and for this user, and one kept for an annotator who has not
    arrived yet, so nobody can take (or, by renewing, keep) the whole queue.  Never below
    ``LEASE_FLOOR`` (what the labeling page prefetches), so a small queue still serves a full page.
    A project's only member is not capped.  ``returned``: expired leases the caller's transaction
    has just made pending again, not yet added to the kept pending count (it is updated last).
    """
    if not Membership.objects.filter(project=project).exclude(user=user).exists():
        return MAX_LEASE  # nobody else could want these items
    leased = QueueEntry.objects.filter(project=project, state=QueueEntry.State.LEASED)
    others = leased.exclude(leased_by=user).values("leased_by").distinct().count()
    # pending: the kept count (counting a 10k-entry queue cost milliseconds per lease); leased ones are few
    kept = QueueCounts.objects.filter(project=project).values_list("pending", flat=True).first()
    pending = selectors.pending_count(project=project) if kept is None else int(kept) + returned  # a count sees them
    open_ = pending + leased.count()
    return max(LEASE_FLOOR, -(-open_ // (others + 2)))


def queue_lease(*, project: Project, user, n: int, sending: Collection[int] = ()) -> list[QueueEntry]:
    """Up to ``n`` entries leased to ``user``: the ones they already hold (lease renewed) first,
    then new ones taken from the pending queue, never more than :func:`lease_cap` (held leases beyond
    it are not renewed and run out).  Fewer when the queue runs dry; then the refill policy
    (``rounds.round_maybe_request``) makes sure a round is on its way.

    ``sending``: items the caller has labeled or skipped whose submit has not landed yet (a page
    labeling faster than its submits are stored).  Their entries are still leased to ``user``, but
    they are done with: they count neither toward ``n`` nor toward the cap, so the page gets the
    items it will show next instead of back the ones it has just labeled (which left it empty).
    Their leases are renewed (the submit still needs them) and not returned.  At most
    ``SENDING_HEADROOM`` (a page's prefetch) of them are discounted, so a person holds at most the
    cap plus one page of labels being stored: naming held items as being sent cannot hoard the queue
    (twice the cap could be all of it).  A page further ahead of its server refills as submits land."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= MAX_LEASE:
        raise BadInput(f"n={n!r} must be an integer from 1 to {MAX_LEASE}")
    now = timezone.now()
    expires = now + timedelta(seconds=lease_seconds())
    with transaction.atomic():
        returned = _return_expired(project.pk, now)
        cap = lease_cap(project=project, user=user, returned=returned)
        n = min(n, cap)
        mine = (QueueEntry.objects.select_related("round", "item")  # the item's file signs its image URL
                .select_for_update(of=("self",))
                .filter(project=project, state=QueueEntry.State.LEASED, leased_by=user)
                .order_by("leased_at", "rank", "id"))
        sent = list(mine.filter(item_id__in=sorted(set(sending)))[:SENDING_HEADROOM]) if sending else []
        held = list(mine.exclude(pk__in=[e.pk for e in sent])[:n])
        renewed = held + sent
        if renewed:
            QueueEntry.objects.filter(pk__in=[e.pk for e in renewed]).update(lease_expires_at=expires)
            for e in renewed:
                e.lease_expires_at = expires
        taken: list[QueueEntry] = []
        # the page's prefetch, and the cap on everything held but the (discounted) entries being sent
        holding = QueueEntry.objects.filter(project=project, state=QueueEntry.State.LEASED, leased_by=user).count()
        need = min(n - len(held), cap - (holding - len(sent)))
        if need > 0:
            taken = list(_pending_for_update(project, user)[:need])
            for e in taken:
                e.state = QueueEntry.State.LEASED
                e.leased_by = user
                e.leased_at = now
                e.lease_expires_at = expires
            if taken:  # the same values for every row: one plain UPDATE (bulk_update's CASE per row cost CPU)
                QueueEntry.objects.filter(pk__in=[e.pk for e in taken]).update(
                    state=QueueEntry.State.LEASED, leased_by=user, leased_at=now, lease_expires_at=expires)
        # last, after every queue row of this lease is locked (lock order: services/queue_counts.py)
        queue_pending_add(project_id=project.pk, delta=returned - len(taken))
    if len(held) + len(taken) < n:
        round_maybe_request(project=project)
    return held + taken


def queue_release(*, project: Project, user, item_ids: list[int] | None = None) -> int:
    """Hand the user's leases back to the pending queue (all of them, or those of ``item_ids``)."""
    qs = QueueEntry.objects.filter(project=project, state=QueueEntry.State.LEASED, leased_by=user)
    if item_ids is not None:
        qs = qs.filter(item_id__in=item_ids)
    with transaction.atomic():
        n = qs.update(**_RETURNED)
        queue_pending_add(project_id=project.pk, delta=n)
    return n


def queue_release_users(*, project_id: int, user_ids: list[int]) -> int:
    """Hand several users' leases on the project back to the pending queue in ONE statement, the
    kept count growing once after it: a transaction that released them one user at a time would
    hold the counter while locking the next user's leases (lock order: services/queue_counts.py)."""
    with transaction.atomic():
        n = (QueueEntry.objects.filter(project_id=project_id, state=QueueEntry.State.LEASED,
                                       leased_by_id__in=sorted(set(user_ids))).update(**_RETURNED))
        queue_pending_add(project_id=project_id, delta=n)
    return n


def queue_release_everywhere(*, user_id: int) -> dict[int, int]:
    """Hand all of a user's leases, in every project, back to the pending queue: ``{project: leases}``.

    One transaction: the leases are locked and returned first, then each project's kept count
    grows, in project order (lock order: services/queue_counts.py)."""
    with transaction.atomic():
        held = list(QueueEntry.objects.select_for_update(of=("self",))
                    .filter(leased_by_id=user_id, state=QueueEntry.State.LEASED)
                    .order_by("id").values_list("id", "project_id"))
        returned: dict[int, int] = {}
        for project_id in sorted({pid for _, pid in held}):
            ids = [pk for pk, pid in held if pid == project_id]
            returned[project_id] = (QueueEntry.objects.filter(pk__in=ids, state=QueueEntry.State.LEASED,
                                                              leased_by_id=user_id).update(**_RETURNED))
        queue_pending_add_many(returned)
    return returned
