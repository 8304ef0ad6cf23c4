"""Concurrent leasing: SELECT ... FOR UPDATE SKIP LOCKED on PostgreSQL, IMMEDIATE transactions on SQLite."""
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection

from annotate.models import Membership, QueueEntry
from annotate.services.queue import queue_lease
from tests.support import db_is_postgres, need

pytestmark = pytest.mark.django_db(transaction=True)


def lease_all_at_once(project, users, n):
    barrier = threading.Barrier(len(users))

    def work(user):
        barrier.wait()  # start together
        try:
            return [e.pk for e in queue_lease(project=project, user=user, n=n)]
        finally:
            connection.close()

    with ThreadPoolExecutor(len(users)) as pool:
        return list(pool.map(work, users))


def _setup(make_user, make_project, make_round, batch):
    users = [make_user(f"ann{i}") for i in range(8)]
    project = make_project(n_items=batch + 10, batch_size=batch,
                           members=[(u, Membership.Role.ANNOTATOR) for u in users])
    make_round(project)
    return project, users


@pytest.mark.postgres
def test_eight_threads_leasing_at_once_never_get_the_same_item(make_user, make_project, make_round):
    need(db_is_postgres(), "the test database is not PostgreSQL: run with DATABASE_URL=postgres://... "
                           "(.ci/run does)")
    project, users = _setup(make_user, make_project, make_round, batch=40)
    for _attempt in range(3):
        QueueEntry.objects.update(state="pending", leased_by=None, leased_at=None, lease_expires_at=None)
        got = lease_all_at_once(project, users, n=6)  # 48 wanted, 40 there
        flat = [pk for ids in got for pk in ids]
        assert len(flat) == len(set(flat)) == 40, got
        holders = dict(QueueEntry.objects.filter(state="leased").values_list("pk", "leased_by_id"))
        for user, ids in zip(users, got):
            assert all(holders[pk] == user.pk for pk in ids)


def test_concurrent_leases_on_the_default_database_never_overlap(make_user, make_project, make_round):
    if connection.vendor == "sqlite" and "mode=memory" in str(connection.settings_dict.get("TEST", {}).get("NAME")
                                                              or connection.settings_dict["NAME"]):
        pytest.skip("an in-memory SQLite test database is one shared-cache connection set; "
                    "concurrency needs a file or PostgreSQL")
    project, users = _setup(make_user, make_project, make_round, batch=24)
    got = lease_all_at_once(project, users, n=4)  # 32 wanted, 24 there
    flat = [pk for ids in got for pk in ids]
    assert len(flat) == len(set(flat)) == 24
