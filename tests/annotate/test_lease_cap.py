"""Issue 12, row 8: one annotator cannot take (or, by renewing, keep) the whole queue.

``queue.lease_cap``: a fair share ``ceil(open / (others + 2))`` of the open queue, never below the
page's prefetch (6); a project's only member is not capped.
"""
from datetime import timedelta

from django.utils import timezone

from annotate.models import Membership, QueueCounts, QueueEntry
from annotate.services.queue import SENDING_HEADROOM, lease_cap, queue_lease


def _project(make_project, make_user, make_round, n_members: int, batch: int):
    users = [make_user() for _ in range(n_members)]
    project = make_project(n_items=60, batch_size=batch, members=[(u, Membership.Role.ANNOTATOR) for u in users])
    make_round(project)
    return project, users


def test_one_annotator_asking_for_50_leaves_work_for_the_others(make_project, make_user, make_round):
    project, (a, b, c) = _project(make_project, make_user, make_round, 3, batch=19)
    got_a = queue_lease(project=project, user=a, n=50)
    assert len(got_a) == 10  # ceil(19 / (0 others + 2)), not 19 of 19
    got_b = queue_lease(project=project, user=b, n=50)
    assert len(got_b) == 7  # ceil(19 / (1 + 2))
    got_c = queue_lease(project=project, user=c, n=50)
    assert len(got_c) == 2  # what is left: everybody got work
    held = {e.pk for e in got_a} | {e.pk for e in got_b} | {e.pk for e in got_c}
    assert len(held) == 19 and QueueEntry.objects.filter(project=project, state="pending").count() == 0


def test_renewing_keeps_only_a_fair_share_and_the_rest_runs_out(make_project, make_user, make_round, settings):
    project, (a, b, c) = _project(make_project, make_user, make_round, 3, batch=19)
    first = queue_lease(project=project, user=a, n=50)
    queue_lease(project=project, user=b, n=50)
    renewed = queue_lease(project=project, user=a, n=50)  # others: 1 -> cap ceil(19 / 3) = 7
    assert len(renewed) == 7 and {e.pk for e in renewed} < {e.pk for e in first}
    stale = [e.pk for e in first if e.pk not in {r.pk for r in renewed}]
    # Those three were not renewed: when their lease runs out they go to someone who needs work.
    QueueEntry.objects.filter(pk__in=stale).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    got_c = queue_lease(project=project, user=c, n=6)
    assert set(stale) <= {e.pk for e in got_c}


def test_the_cap_never_drops_below_a_page_and_a_lone_member_is_not_capped(make_project, make_user, make_round):
    project, (a, b) = _project(make_project, make_user, make_round, 2, batch=8)
    assert lease_cap(project=project, user=a) == 6  # ceil(8 / 2) = 4, but a page is 6
    alone, (solo,) = _project(make_project, make_user, make_round, 1, batch=19)
    assert len(queue_lease(project=alone, user=solo, n=50)) == 19


def test_the_cap_counts_expired_leases_the_same_lease_returns(make_project, make_user, make_round):
    """A lease first returns expired leases to the queue, in its transaction: they are open again
    and count toward the cap, exactly as a lease without expired ones would see the same queue."""
    project, (a, b, _c) = _project(make_project, make_user, make_round, 3, batch=19)
    got_a = queue_lease(project=project, user=a, n=50)
    assert len(got_a) == 10  # ceil(19 / 2)
    QueueEntry.objects.filter(leased_by=a).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    # a's ten are pending again: 19 open, nobody else holds any -> ceil(19 / 2) = 10
    assert len(queue_lease(project=project, user=b, n=50)) == 10
    # the same without a kept count yet (a fresh count already sees the returned leases)
    QueueEntry.objects.filter(leased_by=b).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    QueueCounts.objects.filter(project=project).delete()
    assert len(queue_lease(project=project, user=a, n=50)) == 10
    assert QueueEntry.objects.filter(project=project, state="pending").count() == 9


def test_items_being_sent_do_not_count_toward_the_page_or_the_cap(make_project, make_user, make_round):
    """A page labeling faster than its submits land still holds the leases of the items it labeled:
    named as ``sending`` they are renewed but neither returned nor counted, so the page gets new items."""
    project, (a, _b) = _project(make_project, make_user, make_round, 2, batch=30)
    first = queue_lease(project=project, user=a, n=6)
    assert lease_cap(project=project, user=a) == 15  # ceil(30 / 2): the teammate holds nothing yet
    labeled = [e.item_id for e in first[:4]]  # typed; their submits still on their way
    QueueEntry.objects.filter(leased_by=a).update(lease_expires_at=timezone.now() + timedelta(seconds=5))
    without = queue_lease(project=project, user=a, n=6)
    assert {e.item_id for e in without} >= set(labeled)  # the bug: the page got back what it had labeled
    got = queue_lease(project=project, user=a, n=6, sending=labeled)
    assert len(got) == 6 and not {e.item_id for e in got} & set(labeled)
    held = QueueEntry.objects.filter(leased_by=a, state="leased")
    assert held.count() == 10  # 6 for the page + the 4 being sent
    # the ones being sent were renewed too (their submits need the lease)
    soon = timezone.now() + timedelta(seconds=30)
    assert all(e.lease_expires_at > soon for e in held.filter(item_id__in=labeled))


def test_claiming_held_items_as_sent_never_takes_more_than_the_cap_and_a_page(make_project, make_user, make_round):
    """The cap's purpose stands: a page naming everything it holds as being sent, lease after lease,
    holds at most the cap plus one page (SENDING_HEADROOM) of items being sent; a teammate still gets work."""
    project, (a, b) = _project(make_project, make_user, make_round, 2, batch=40)
    for _ in range(10):
        held = list(QueueEntry.objects.filter(leased_by=a, state="leased").values_list("item_id", flat=True))
        queue_lease(project=project, user=a, n=50, sending=held)
        cap = lease_cap(project=project, user=a)
        assert QueueEntry.objects.filter(leased_by=a, state="leased").count() <= cap + SENDING_HEADROOM
    # ceil(40 / (0 others + 2)) = 20, plus 6 named as being sent: 14 of 40 still open
    assert QueueEntry.objects.filter(leased_by=a, state="leased").count() == 20 + 6
    assert len(queue_lease(project=project, user=b, n=6)) == 6
