"""Leasing: one holder per item, renewal, expiry and release."""
from datetime import timedelta

import pytest
from django.utils import timezone

from annotate.models import QueueEntry
from annotate.services.errors import BadInput
from annotate.services.queue import queue_lease, queue_release, queue_release_expired

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(two_annotators):
    return two_annotators


def test_two_annotators_never_get_the_same_item(setup):
    project, ann1, ann2 = setup
    a = queue_lease(project=project, user=ann1, n=4)
    b = queue_lease(project=project, user=ann2, n=4)
    assert len(a) == 4 and len(b) == 4
    assert not {e.item_id for e in a} & {e.item_id for e in b}
    rows = QueueEntry.objects.filter(state=QueueEntry.State.LEASED)
    assert {e.leased_by_id for e in rows.filter(item_id__in=[e.item_id for e in a])} == {ann1.pk}


def test_a_second_lease_renews_the_held_items_before_taking_new_ones(setup):
    project, ann1, _ = setup
    first = queue_lease(project=project, user=ann1, n=3)
    again = queue_lease(project=project, user=ann1, n=5)
    assert [e.pk for e in again[:3]] == [e.pk for e in first]
    assert len({e.pk for e in again}) == 5
    assert QueueEntry.objects.filter(leased_by=ann1, state=QueueEntry.State.LEASED).count() == 5


def test_items_are_served_in_rank_order(setup):
    project, ann1, _ = setup
    got = queue_lease(project=project, user=ann1, n=10)
    assert [e.rank for e in got] == sorted(e.rank for e in got)


def test_expired_leases_return_to_the_queue_and_go_to_someone_else(setup):
    project, ann1, ann2 = setup
    held = queue_lease(project=project, user=ann1, n=10)  # its share of the batch (lease_cap)
    QueueEntry.objects.filter(project=project, state="pending").update(state="expired")  # nothing else left
    assert queue_lease(project=project, user=ann2, n=3) == []
    QueueEntry.objects.filter(pk__in=[e.pk for e in held[:2]]).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1))
    got = queue_lease(project=project, user=ann2, n=3)
    assert {e.pk for e in got} == {e.pk for e in held[:2]}
    assert all(e.leased_by_id == ann2.pk for e in QueueEntry.objects.filter(pk__in=[e.pk for e in got]))


def test_release_expired_counts_only_expired_leases(setup):
    project, ann1, _ = setup
    held = queue_lease(project=project, user=ann1, n=4)
    QueueEntry.objects.filter(pk=held[0].pk).update(lease_expires_at=timezone.now() - timedelta(minutes=1))
    assert queue_release_expired(project=project) == 1
    assert QueueEntry.objects.get(pk=held[0].pk).state == QueueEntry.State.PENDING
    assert QueueEntry.objects.filter(state=QueueEntry.State.LEASED).count() == 3


def test_release_hands_back_only_my_leases(setup):
    project, ann1, ann2 = setup
    mine = queue_lease(project=project, user=ann1, n=2)
    theirs = queue_lease(project=project, user=ann2, n=2)
    assert queue_release(project=project, user=ann1) == 2
    assert all(QueueEntry.objects.get(pk=e.pk).state == QueueEntry.State.PENDING for e in mine)
    assert all(QueueEntry.objects.get(pk=e.pk).leased_by_id == ann2.pk for e in theirs)


@pytest.mark.parametrize("n", [0, -1, 51, "3", 2.0, True, None])
def test_lease_size_is_validated(setup, n):
    project, ann1, _ = setup
    with pytest.raises(BadInput, match="n="):
        queue_lease(project=project, user=ann1, n=n)
    assert not QueueEntry.objects.filter(state=QueueEntry.State.LEASED).exists()
