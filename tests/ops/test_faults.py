"""Faults (issue 6, items 2 and 3): a worker killed mid-round, a round that fails, closed tabs, retries.

The worker tests run a real ``celery -A config worker`` subprocess on PostgreSQL with the Redis
broker and kill it with SIGKILL.  To kill it *inside* the round's write transaction (the worst
moment), the test holds a row lock on one of the pending queue entries the write must expire:
the worker blocks in the middle of its transaction, the test sees it waiting in
``pg_stat_activity``, and kills it there.
"""
from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid

import pytest
from django.db import connection
from django.test import Client

from tests.ops import ops_support as ops

BROKER = ops.redis_db_url()


def worker_test(test):
    """The marks of a test that runs rounds on the module's real worker (PostgreSQL, Redis broker)."""
    for mark in (pytest.mark.django_db(transaction=True), pytest.mark.celery, pytest.mark.redis,
                 pytest.mark.postgres):
        test = mark(test)
    return test


# --------------------------------------------------------------------------- worker fixtures
@pytest.fixture(scope="module")
def ops_media(tmp_path_factory):
    return tmp_path_factory.mktemp("ops-faults-media")


@pytest.fixture(scope="module")
def worker_process(django_db_setup, django_db_blocker, ops_media, tmp_path_factory):
    """One real worker for the module (Redis broker, the test database, the module's media folder)."""
    with django_db_blocker.unblock():
        ops.need_postgres_db()
        ops.need_service("Redis", "127.0.0.1", 6379)
        env = ops.app_env(broker_url=BROKER, media_root=ops_media)
    ops.purge_queues(env)
    _broker().delete("unacked", "unacked_index")  # a killed earlier run's deliveries: never coming back here
    w = ops.WorkerProcess(env, tmp_path_factory.mktemp("ops-faults-logs") / "worker.log").start()
    yield w
    w.stop()


@pytest.fixture
def worker(worker_process, transactional_db):
    """The module's worker for one test, settled afterwards: the worker outlives the test, so whatever the
    test set off (a round's follow-up quality task, a failure being recorded) must finish before the
    test database is flushed, or the flush and the worker's transaction race (TRUNCATE waits on its
    locks, or its rows land in the next test).  This fixture is torn down before the flush
    (``transactional_db`` is set up first, so it is torn down last)."""
    yield worker_process
    _settle(connection.settings_dict["NAME"])


def _annotators_hold_items(project, add_member):
    """Two annotators: one holds leases (a tab left open), one labeled an item."""
    from annotate.services.annotations import annotation_submit
    from annotate.services.queue import queue_lease

    holder = add_member(project, f"holder-{project.pk}")
    labeler = add_member(project, f"labeler-{project.pk}")
    queue_lease(project=project, user=holder, n=3)
    done = queue_lease(project=project, user=labeler, n=1)[0]
    annotation_submit(project=project, user=labeler, item_id=done.item_id, label="cat", client_id=uuid.uuid4())
    return holder, labeler


def _snapshot(project):
    from annotate.models import Annotation, QueueEntry

    leased = sorted(QueueEntry.objects.filter(project=project, state="leased")
                    .values_list("id", "item_id", "leased_by_id", "lease_expires_at", "round_id"))
    anns = sorted(Annotation.objects.filter(item__project=project).values_list("id", "item_id", "annotator_id",
                                                                               "action", "label", "is_current"))
    return leased, anns


def _lock_waiters(dbname: str) -> list[tuple[int, str]]:
    """(pid, query) of the backends of the test database waiting for a row lock."""
    with connection.cursor() as cur:
        cur.execute("SELECT pid, query FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                    [dbname])
        return cur.fetchall()


def _broker():
    import redis

    return redis.Redis.from_url(BROKER)


def _broker_backlog() -> int:
    """Tasks on the broker that are waiting (the gpu and cpu lists) or delivered but not yet acknowledged
    (kombu's Redis ``unacked`` hash; tasks are acked late, i.e. after they finish)."""
    with _broker() as r:
        return r.llen("gpu") + r.llen("cpu") + r.hlen("unacked")


def _db_busy(dbname: str) -> int:
    """Other backends of the test database inside a statement or a transaction."""
    with connection.cursor() as cur:
        cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() "
                    "AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')", [dbname])
        return cur.fetchone()[0]


def _settle(dbname: str, seconds: float = 60.0) -> None:
    """Wait until the worker has nothing left to do for this test: no task queued or running on the broker
    and no other backend of the test database in a transaction, seen twice in a row 0.3 s apart (a task
    moves from the queue to ``unacked`` in two steps).  Fails naming what is still busy."""
    deadline, quiet, state = time.monotonic() + seconds, 0, (0, 0)
    while time.monotonic() < deadline and quiet < 2:
        state = (_broker_backlog(), _db_busy(dbname))
        quiet = quiet + 1 if state == (0, 0) else 0
        time.sleep(0.3)
    assert quiet >= 2, f"the worker did not settle in {seconds} s: (broker tasks, busy backends) = {state}"


def _waiting_write(dbname: str):
    """The worker's backend blocked on our row lock inside the round's write (expiring pending entries)."""
    return next((w for w in _lock_waiters(dbname) if w[1].startswith('UPDATE "annotate_queueentry"')), None)


# --------------------------------------------------------------------------- item 2: worker killed
@worker_test
def test_worker_killed_inside_the_round_write_loses_nothing_and_the_round_is_rerun(
        worker, ops_media, settings, make_project, make_round, add_member):
    import psycopg

    from annotate.models import QueueEntry, Round

    settings.MEDIA_ROOT = ops_media
    project = make_project(name="kill-mid-write", n_items=60, batch_size=8, strategy="random")
    r1 = make_round(project)  # round 1 here (cold start), so there is a queue to hold
    assert r1.status == "done", r1.failure
    holder, labeler = _annotators_hold_items(project, add_member)
    before = _snapshot(project)
    pending_r1 = list(QueueEntry.objects.filter(round=r1, state="pending").values_list("id", flat=True))
    assert pending_r1

    dbname = connection.settings_dict["NAME"]
    lock = psycopg.connect(ops.database_url(), autocommit=False)
    try:
        # Hold one pending entry: the round's write blocks on it inside its transaction.
        lock.execute("SELECT id FROM annotate_queueentry WHERE id = %s FOR UPDATE", [pending_r1[0]])
        r2 = ops.enqueue_round(worker.env, project.pk, "ops-test")
        waiting = ops.wait_for(lambda: _waiting_write(dbname), 90, "the round's write to block on the row lock")
        children = worker.children()
        assert len(children) == 1
        os.kill(children[0], signal.SIGKILL)  # the pool process dies inside the transaction
        # acks_late + reject_on_worker_lost: the message returns and a new pool process re-runs the
        # round
        # (the dead attempt's backend still holds the round row until our lock goes, so the re-run
        # waits at its first update of the round).  Meanwhile nothing of the killed attempt is visible:
        ops.wait_for(lambda: any(pid != waiting[0] for pid, _ in _lock_waiters(dbname)), 90,
                 "the re-run to start and wait for the round row")
        assert os.getpgid(worker.proc.pid) and worker.children() and worker.children() != children
        mid = Round.objects.get(pk=r2)
        assert mid.status == "running"
        assert not QueueEntry.objects.filter(round_id=r2).exists(), "the killed attempt left entries behind"
        assert set(QueueEntry.objects.filter(round=r1, state="pending").values_list("id", flat=True)) == set(pending_r1)
        assert _snapshot(project) == before
    finally:
        lock.rollback()
        lock.close()

    done = ops.wait_for(lambda: Round.objects.filter(pk=r2, status__in=["done", "failed"]).first(), 90, "round 2")
    assert done.status == "done", done.failure
    assert done.attempts == 2
    entries = list(QueueEntry.objects.filter(round=done).values_list("item_id", flat=True))
    assert len(entries) == len(set(entries)) == 8
    # The annotators' queue is untouched: the same leases, same holders, same expiry; same labels.
    assert _snapshot(project) == before
    held = {i for _, i, *_ in before[0]}
    assert not held & set(entries)
    # The rest of round 1 was superseded exactly once, by the round that finished.
    assert not QueueEntry.objects.filter(round=r1, state="pending").exists()
    assert "WorkerLostError" in worker.log() or "SIGKILL" in worker.log()


@worker_test
def test_round_that_fails_is_marked_failed_with_its_reason_and_writes_nothing(
        worker, ops_media, settings, make_project, make_round, add_member):
    from annotate import storage
    from annotate.models import QueueEntry, Round

    settings.MEDIA_ROOT = ops_media
    # refill_threshold=0: the annotators below must not start round 2 themselves (labels run the refill policy).
    project = make_project(name="fails", n_items=30, batch_size=5, strategy="random", refill_threshold=0)
    r1 = make_round(project)
    _annotators_hold_items(project, add_member)
    before = _snapshot(project)
    pending = set(QueueEntry.objects.filter(round=r1, state="pending").values_list("id", flat=True))
    storage.media_path(project.embedding_file).unlink()  # the embeddings vanish (a bad volume, say)
    r2 = ops.enqueue_round(worker.env, project.pk, "ops-test")
    rnd = ops.wait_for(lambda: Round.objects.filter(pk=r2, status__in=["done", "failed"]).first(), 90, "round 2")
    assert rnd.status == "failed"
    assert "FileNotFoundError" in rnd.failure, rnd.failure
    assert rnd.finished_at is not None
    assert not QueueEntry.objects.filter(round=rnd).exists()
    assert set(QueueEntry.objects.filter(round=r1, state="pending").values_list("id", flat=True)) == pending
    assert _snapshot(project) == before
    # A failed round frees the project: the next request may start a new one.
    assert not Round.objects.filter(project=project, status__in=Round.ACTIVE).exists()


# --------------------------------------------------------------------------- item 3: annotator faults
def _api(client: Client, project, action: str, body: dict):
    return client.post(f"/api/projects/{project.pk}/{action}", data=json.dumps(body), content_type="application/json")


@pytest.mark.django_db
def test_closed_tab_leases_expire_and_return_to_the_queue(settings, make_project, add_member):
    from annotate.models import Annotation, QueueEntry

    settings.LOUPE_LEASE_SECONDS = 1
    project = make_project(name="closed-tab", n_items=6)
    QueueEntry.objects.bulk_create([QueueEntry(project=project, item=it, rank=k)
                                    for k, it in enumerate(project.items.all()[:4])])
    gone, other = add_member(project, "gone"), add_member(project, "other")
    tab = Client()
    tab.force_login(gone)
    got = _api(tab, project, "lease", {"n": 4}).json()["items"]
    assert len(got) == 4
    c2 = Client()
    c2.force_login(other)
    assert _api(c2, project, "lease", {"n": 4}).json()["items"] == []  # all held by the closed tab
    time.sleep(1.2)  # the tab is closed: no renewals, the leases run out
    back = _api(c2, project, "lease", {"n": 4}).json()["items"]
    assert sorted(i["item_id"] for i in back) == sorted(i["item_id"] for i in got)
    assert set(QueueEntry.objects.filter(state="leased").values_list("leased_by_id", flat=True)) == {other.pk}
    # The first tab comes back late: its label on an item now held by another is refused, nothing stored.
    late = _api(tab, project, "label", {"item_id": got[0]["item_id"], "label": "cat", "client_id": str(uuid.uuid4())})
    assert late.status_code == 409
    assert not Annotation.objects.filter(annotator=gone).exists()


@pytest.mark.django_db
def test_label_submitted_twice_after_a_timeout_is_stored_once(make_project, add_member):
    from annotate.models import Annotation, QueueEntry

    project = make_project(name="retry", n_items=3)
    QueueEntry.objects.bulk_create([QueueEntry(project=project, item=it, rank=k)
                                    for k, it in enumerate(project.items.all())])
    user = add_member(project, "retrier")
    c = Client()
    c.force_login(user)
    item_id = _api(c, project, "lease", {"n": 1}).json()["items"][0]["item_id"]
    body = {"item_id": item_id, "label": "dog", "client_id": str(uuid.uuid4()), "time_ms": 1200}
    first = _api(c, project, "label", body)
    retry = _api(c, project, "label", body)  # the answer to the first was lost; the page retries
    assert first.status_code == 201 and retry.status_code == 200
    assert retry.json()["annotation"]["id"] == first.json()["annotation"]["id"]
    assert Annotation.objects.filter(annotator=user, item_id=item_id).count() == 1
    # A double submit without the idempotency key is refused and stores nothing either.
    again = _api(c, project, "label", {"item_id": item_id, "label": "dog"})
    assert again.status_code == 409
    assert Annotation.objects.filter(annotator=user, item_id=item_id).count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_retries_of_one_label_are_stored_once(make_project, add_member):
    """Two copies of one submit racing on PostgreSQL (the retry overtakes the slow original)."""
    from django.db import close_old_connections

    from annotate.models import Annotation, QueueEntry
    from annotate.services.annotations import annotation_submit
    from annotate.services.errors import Conflict
    from annotate.services.queue import queue_lease

    ops.need_postgres_db()
    project = make_project(name="race", n_items=3)
    QueueEntry.objects.bulk_create([QueueEntry(project=project, item=it, rank=k)
                                    for k, it in enumerate(project.items.all())])
    user = add_member(project, "racer")
    item_id = queue_lease(project=project, user=user, n=1)[0].item_id
    cid = uuid.uuid4()
    barrier = threading.Barrier(4)
    results, errors = [], []

    def submit():
        try:
            barrier.wait()
            results.append(annotation_submit(project=project, user=user, item_id=item_id, label="fox",
                                             client_id=cid).created)
        except Conflict as exc:  # allowed: "changed by a concurrent request"
            errors.append(str(exc))
        finally:
            close_old_connections()

    threads = [threading.Thread(target=submit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results.count(True) == 1, (results, errors)
    assert Annotation.objects.filter(annotator=user, item_id=item_id).count() == 1


# --------------------------------------------------------------------------- a label during a round
_HOOK: dict = {}


def _register_hook_strategy():
    import numpy as np

    from selection.strategies.base import _REGISTRY, Selection, Strategy, register

    if "ops_hook" in _REGISTRY:
        return

    @register
    class OpsHook(Strategy):
        """Test strategy: runs the test's hook (work done by others while a round selects), then takes
        the first ``batch_size`` pool rows."""

        name = "ops_hook"
        description = "test only"
        needs_probs = False
        uses_cold_start = False

        def _select(self, X_pool, probs_pool, *, X_labeled, probs_labeled, y_labeled, batch_size, rng, context):
            _HOOK["fn"]()
            return Selection(np.arange(batch_size, dtype=np.int64), None, {})


@pytest.mark.django_db(transaction=True)
def test_item_labeled_while_a_round_runs_is_not_queued_again(make_project, make_round, add_member):
    """Found by the load test (docs/bench-load.md): 4 items labeled by two annotators in 2 minutes."""
    from django.db import close_old_connections

    from annotate.models import Annotation, QueueEntry
    from annotate.services.annotations import annotation_submit
    from annotate.services.queue import queue_lease
    from annotate.services.rounds import round_execute, round_request

    _register_hook_strategy()
    project = make_project(name="label-during-round", n_items=12, batch_size=4, strategy="random")
    make_round(project)  # round 1: four pending entries
    first = add_member(project, "first")
    project.strategy, project.strategy_params, project.batch_size = "ops_hook", {}, 100
    project.save()
    rnd = round_request(project=project, reason="test")
    taken: list[int] = []

    def label_meanwhile():  # an annotator leases and labels a pending item while the round selects
        def work():
            try:
                entry = queue_lease(project=project, user=first, n=1)[0]
                annotation_submit(project=project, user=first, item_id=entry.item_id, label="cat")
                taken.append(entry.item_id)
            finally:
                close_old_connections()

        t = threading.Thread(target=work)
        t.start()
        t.join(30)

    _HOOK["fn"] = label_meanwhile
    round_execute(round_id=rnd.pk)
    assert taken, "the hook did not label anything"
    item = taken[0]
    assert Annotation.objects.filter(item_id=item).count() == 1
    assert not QueueEntry.objects.filter(item_id=item, state__in=QueueEntry.OPEN).exists(), (
        "an item labeled during the round was queued again")
