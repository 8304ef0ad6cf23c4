"""The kept pending-queue count (``QueueCounts``, services/queue_counts.py, issue 17): every transition
of the queue keeps it equal to a fresh count of the pending entries, on SQLite and (concurrently) on
PostgreSQL; the labeling responses and the dashboard read it; drift is found and repaired."""
import logging
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django.test import Client
from django.utils import timezone

from annotate import selectors
from annotate.models import Item, Membership, Project, QueueCounts, QueueEntry
from annotate.selectors_stats import project_stats
from annotate.services import liveness
from annotate.services.annotations import annotation_submit, annotation_undo
from annotate.services.queue import queue_lease, queue_release, queue_release_expired
from annotate.services.queue_counts import queue_counts_check, queue_pending_recount
from annotate.services.roles import membership_remove, user_deactivate
from tests.support import db_is_postgres, need

pytestmark = pytest.mark.django_db


def counted(project) -> int:
    return QueueEntry.objects.filter(project=project, state="pending").count()


def kept(project) -> int:
    return QueueCounts.objects.get(project=project).pending


def exact(project) -> int:
    """The kept count, asserted equal to a fresh count of the table."""
    k, n = kept(project), counted(project)
    assert k == n, f"kept {k}, counted {n}"
    return k


def _label(project, user, entry):
    return annotation_submit(project=project, user=user, item_id=entry.item_id, label=entry.item.ground_truth)


@pytest.fixture
def queued(make_project, make_round, make_user):
    """A project with three annotators and a round of 12 pending entries."""
    a, b, c = make_user("a"), make_user("b"), make_user("c")
    project = make_project(n_items=40, batch_size=12, refill_threshold=1,
                           members=[(u, Membership.Role.ANNOTATOR) for u in (a, b, c)])
    make_round(project)
    return project, a, b, c


def test_a_round_lease_release_submit_and_skip_keep_the_count(queued):
    project, a, b, _c = queued
    assert exact(project) == 12  # the round's write
    got = queue_lease(project=project, user=a, n=5)
    assert len(got) == 5 and exact(project) == 7
    assert queue_lease(project=project, user=a, n=5) and exact(project) == 7  # a renewal takes nothing new
    assert queue_release(project=project, user=a, item_ids=[got[0].item_id, got[1].item_id]) == 2
    assert exact(project) == 9
    _label(project, a, got[2])                                          # leased -> done
    annotation_submit(project=project, user=a, item_id=got[3].item_id, skip=True)   # leased -> skipped
    assert exact(project) == 9
    assert queue_release(project=project, user=b) == 0 and exact(project) == 9  # nothing held: nothing changes


def test_lease_expiry_returns_leases_to_the_count(queued):
    project, a, b, _c = queued
    queue_lease(project=project, user=a, n=4)
    queue_lease(project=project, user=b, n=3)
    assert exact(project) == 5
    past = timezone.now() - timedelta(seconds=1)
    QueueEntry.objects.filter(leased_by=a).update(lease_expires_at=past)  # no state change: count unchanged
    # b's next lease first returns a's expired leases, then takes one: +4 - 1
    assert len(queue_lease(project=project, user=b, n=4)) == 4 and exact(project) == 8
    QueueEntry.objects.filter(leased_by=b).update(lease_expires_at=past)
    assert queue_release_expired() == 4 and exact(project) == 12  # the sweep's form: every project


def test_undo_of_a_labeled_item_and_of_an_item_whose_copy_is_pending(make_project, make_round, make_user):
    a, b = make_user("a"), make_user("b")
    project = make_project(n_items=40, batch_size=6, overlap_rate=1.0, overlap_k=2,
                           members=[(a, Membership.Role.ANNOTATOR), (b, Membership.Role.ANNOTATOR)])
    make_round(project)
    assert exact(project) == 6
    got = queue_lease(project=project, user=a, n=2)
    assert exact(project) == 4
    _label(project, a, got[0])  # an overlapped item: done, and a pending copy for the next annotator
    assert exact(project) == 5
    annotation_undo(project=project, user=a, item_id=got[0].item_id)  # a gets it back: the copy is leased
    assert QueueEntry.objects.get(item_id=got[0].item_id, state="leased").leased_by == a
    assert exact(project) == 4
    _label(project, a, got[0])
    assert exact(project) == 5
    # b takes the copy and labels it: k = 2 labels, no further copy
    mine = [e for e in queue_lease(project=project, user=b, n=6) if e.item_id == got[0].item_id]
    _label(project, b, mine[0])
    assert not QueueEntry.objects.filter(item_id=got[0].item_id, state__in=QueueEntry.OPEN).exists()
    exact(project)


def test_undo_without_overlap_leases_the_done_entry_again_and_leaves_the_count(queued):
    project, a, _b, _c = queued
    got = queue_lease(project=project, user=a, n=1)
    _label(project, a, got[0])
    before = exact(project)
    annotation_undo(project=project, user=a)
    assert exact(project) == before


def test_a_new_round_supersedes_the_pending_rest_and_adds_its_own(queued, make_round):
    project, a, _b, _c = queued
    got = queue_lease(project=project, user=a, n=3)
    _label(project, a, got[0])
    rnd = make_round(project)
    assert rnd.metrics["superseded"] == 9
    assert exact(project) == rnd.metrics["entries"] > 0


def test_deactivation_and_leaving_a_project_return_the_leases(queued, make_project, make_round):
    project, a, b, c = queued
    other = make_project(n_items=20, batch_size=5, members=[(a, Membership.Role.ANNOTATOR),
                                                            (c, Membership.Role.ANNOTATOR)])
    make_round(other)
    queue_lease(project=project, user=a, n=3)
    queue_lease(project=other, user=a, n=2)
    queue_lease(project=project, user=b, n=2)
    assert (exact(project), exact(other)) == (7, 3)
    assert user_deactivate(user=a) == 5          # both projects, one transaction
    assert (exact(project), exact(other)) == (10, 5)
    membership_remove(project=project, user=b)
    assert exact(project) == 12


def test_admin_deletes_of_entries_items_and_rounds_are_recounted(queued, make_user):
    project, a, _b, _c = queued
    queue_lease(project=project, user=a, n=2)
    assert exact(project) == 10
    client = Client()
    client.force_login(make_user("root", superuser=True))
    entry = QueueEntry.objects.filter(project=project, state="pending").first()
    assert client.post(f"/admin/annotate/queueentry/{entry.pk}/delete/", {"post": "yes"}).status_code == 302
    assert exact(project) == 9
    item = QueueEntry.objects.filter(project=project, state="pending").first().item
    r = client.post("/admin/annotate/item/", {"action": "delete_selected", "_selected_action": [item.pk],
                                             "post": "yes"})
    assert r.status_code == 302 and exact(project) == 8
    rnd = project.rounds.get()
    assert client.post(f"/admin/annotate/round/{rnd.pk}/delete/", {"post": "yes"}).status_code == 302
    assert exact(project) == 0
    # entries change state only through the services: no add or edit form in the admin
    assert client.get("/admin/annotate/queueentry/add/").status_code == 403
    left = QueueEntry.objects.create(project=project, item=Item.objects.filter(project=project).first())
    page = client.post(f"/admin/annotate/queueentry/{left.pk}/change/", {"state": "done"})
    assert page.status_code == 403 and QueueEntry.objects.get(pk=left.pk).state == "pending"


def test_the_responses_read_the_kept_count_not_the_table(queued):
    project, a, _b, _c = queued
    queue_lease(project=project, user=a, n=2)
    QueueCounts.objects.filter(project=project).update(pending=1234)  # proof that no request counts the queue
    assert selectors.progress_counts(project=project, user=a)["pending"] == 1234
    assert selectors.progress_and_round(project=project, user=a)[0]["pending"] == 1234
    assert selectors.pending_count(project=project) == 1234
    assert project_stats(project=project)["totals"]["pending"] == 1234
    # without a kept row (a project no service has queued for), the table is counted
    QueueCounts.objects.filter(project=project).delete()
    assert selectors.progress_counts(project=project, user=a)["pending"] == 10
    assert selectors.pending_count(project=project) == 10
    queue_lease(project=project, user=a, n=3)  # the first transition makes the row, counted
    assert exact(project) == 9


def test_drift_is_logged_and_repaired_by_the_check_the_sweep_and_the_command(queued, caplog, settings, capsys):
    project, a, _b, _c = queued
    pks = list(QueueEntry.objects.filter(project=project, state="pending").values_list("pk", flat=True)[:3])
    QueueEntry.objects.filter(pk__in=pks).update(state="done")  # a raw write past the services
    assert kept(project) == 12 and counted(project) == 9
    assert queue_counts_check(repair=False) == {project.pk: (12, 9)}
    assert kept(project) == 12
    with caplog.at_level(logging.WARNING, logger="annotate.services.queue_counts"):
        assert queue_counts_check() == {project.pk: (12, 9)}
    assert "kept 12, counted 9" in caplog.text
    assert exact(project) == 9 and queue_counts_check() == {}

    QueueEntry.objects.filter(pk__in=pks).update(state="pending")
    with pytest.raises(SystemExit):
        call_command("loupe_recount", "--check")
    call_command("loupe_recount")
    assert "kept 9, counted 12 (repaired)" in capsys.readouterr().out
    assert exact(project) == 12

    QueueEntry.objects.filter(pk__in=pks).update(state="done")
    settings.LOUPE_RECOUNT_SECONDS = 300
    liveness._last_recount = None  # this process's first sweep checks the counts
    assert liveness.sweep().recounted == [f"project {project.pk}"]
    assert exact(project) == 9
    QueueEntry.objects.filter(pk__in=pks).update(state="pending")
    assert liveness.sweep().recounted == []  # not due again for LOUPE_RECOUNT_SECONDS
    assert kept(project) == 9
    settings.LOUPE_RECOUNT_SECONDS = 0
    liveness._last_recount = None
    assert liveness.sweep().recounted == []  # 0: never


def test_recount_of_a_project_without_a_row_creates_it(queued):
    project, *_ = queued
    QueueCounts.objects.filter(project=project).delete()
    assert queue_pending_recount(project_id=project.pk) == (None, 12)
    assert queue_pending_recount(project_id=project.pk) == (12, 12)
    assert exact(project) == 12


@pytest.mark.django_db(transaction=True)
def test_the_migration_counts_the_pending_entries_of_existing_projects(make_project, make_round):
    from django.db.migrations.executor import MigrationExecutor

    project = make_project(n_items=30, batch_size=8)
    make_round(project)
    empty = make_project(n_items=5)
    QueueEntry.objects.filter(pk=QueueEntry.objects.filter(project=project).order_by("pk")[0].pk).update(
        state="leased")
    executor = MigrationExecutor(connection)
    executor.migrate([("annotate", "0007_audit_rate_help")])
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())  # forward again, to the latest
    assert dict(QueueCounts.objects.values_list("project_id", "pending")) == {project.pk: 7, empty.pk: 0}


# ------------------------------------------------------------------------- concurrency (PostgreSQL)
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_leases_submits_releases_and_recounts_keep_the_count_exact(make_user, make_project,
                                                                             make_round):
    need(db_is_postgres(), "the test database is not PostgreSQL: run with DATABASE_URL=postgres://... "
                           "(.ci/run does)")
    users = [make_user(f"ann{i}") for i in range(8)]
    project = make_project(n_items=160, batch_size=60, overlap_rate=0.5, overlap_k=2, refill_threshold=1,
                           members=[(u, Membership.Role.ANNOTATOR) for u in users])
    make_round(project)
    start = exact(project)
    barrier = threading.Barrier(len(users) + 1)
    steps, half = [0], len(users) * 6 // 2
    errors: list[BaseException] = []
    finished = threading.Event()

    def annotate(k, user):
        barrier.wait()
        try:
            for step in range(6):
                steps[0] += 1  # (a GIL-atomic enough count: it only tells the recounts when to stop)
                got = queue_lease(project=project, user=user, n=3)
                for j, e in enumerate(got):
                    if (k + j + step) % 4 == 0:
                        queue_release(project=project, user=user, item_ids=[e.item_id])
                    else:
                        annotation_submit(project=project, user=user, item_id=e.item_id, skip=(j % 3 == 2),
                                          label=None if j % 3 == 2 else e.item.ground_truth)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    def recount():
        """Recounts run among the first half of the transitions only: the second half would go
        unrepaired, so a transition that missed its change to the count fails the test."""
        barrier.wait()
        try:
            while steps[0] < half and not finished.is_set():
                queue_pending_recount(project_id=project.pk)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    with ThreadPoolExecutor(len(users) + 1) as pool:
        side = pool.submit(recount)
        done = [pool.submit(annotate, k, u) for k, u in enumerate(users)]
        for f in done:
            f.result()
        finished.set()
        side.result()
    assert not errors, errors
    assert Project.objects.get(pk=project.pk).queue.filter(state__in=("done", "skipped")).count() >= 8
    assert exact(project) != start  # it moved, and it is exact
    assert queue_counts_check(repair=False) == {}


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_removing_two_members_in_one_admin_save_never_waits_for_a_lease_while_holding_the_count(
        make_user, make_project, make_round, monkeypatch):
    """The project form's save removes several members in ONE transaction: their leases are returned
    and the kept count grows once, after all of them - not once per member, which would hold the
    counter while the next member's leases are locked.  Then a concurrent lease that returned the
    second member's expired leases (and waits for the counter) would close a cycle of waits."""
    need(db_is_postgres(), "the test database is not PostgreSQL: run with DATABASE_URL=postgres://... "
                           "(.ci/run does)")
    from django.contrib import admin as django_admin
    from django.db import transaction

    from annotate import admin as loupe_admin
    from annotate.services import queue as queue_module

    u1, u2, x = make_user("u1"), make_user("u2"), make_user("x")
    project = make_project(n_items=40, batch_size=18, members=[(u, Membership.Role.ANNOTATOR) for u in (u1, u2, x)])
    make_round(project)
    queue_lease(project=project, user=u1, n=3)
    queue_lease(project=project, user=u2, n=3)
    QueueEntry.objects.filter(leased_by=u2).update(lease_expires_at=timezone.now() - timedelta(seconds=1))
    assert exact(project) == 12

    counted_once = threading.Event()
    real_add = queue_module.queue_pending_add

    def add_then_pause(**kw):
        real_add(**kw)
        if threading.current_thread().name == "admin" and not counted_once.is_set():
            counted_once.set()
            threading.Event().wait(1.5)  # the lease below reaches the counter meanwhile

    monkeypatch.setattr(queue_module, "queue_pending_add", add_then_pause)

    class Form:  # what the change form's membership inline does: delete the two memberships
        instance = project

        @staticmethod
        def save_m2m():
            Membership.objects.filter(project=project, user__in=[u1, u2]).delete()

    errors: list[BaseException] = []

    def save():
        try:
            with transaction.atomic():  # the admin's change view
                loupe_admin.ProjectAdmin(Project, django_admin.site).save_related(None, Form, [], True)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    def lease():
        try:
            counted_once.wait(5)
            queue_lease(project=project, user=x, n=2)  # returns u2's expired leases, takes 2
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=save, name="admin"), threading.Thread(target=lease, name="lease")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert not QueueEntry.objects.filter(leased_by__in=[u1, u2], state="leased").exists()
    assert exact(project) == 16  # 18 - 2 taken by x


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_leases_do_not_wait_for_an_import_behind_an_overlapped_submit(make_user, make_project, make_round):
    """An import (and a re-embed) holds the project's row lock for its whole transaction.  A submit
    that adds an overlap copy references the project, and PostgreSQL checks that reference at
    COMMIT (Django's foreign keys are deferred), so that submit waits for the import: it must not
    hold the kept count meanwhile, or every lease of the project waits for the import too."""
    need(db_is_postgres(), "the test database is not PostgreSQL: run with DATABASE_URL=postgres://... "
                           "(.ci/run does)")
    import time

    from django.db import transaction

    a, b = make_user("a"), make_user("b")
    project = make_project(n_items=40, batch_size=12, overlap_rate=1.0, overlap_k=2,
                           members=[(a, Membership.Role.ANNOTATOR), (b, Membership.Role.ANNOTATOR)])
    make_round(project)
    mine = queue_lease(project=project, user=a, n=1)[0]
    assert mine.overlap_k == 2
    locked, times, errors = threading.Event(), {}, []

    def importing():  # services/imports.py: the project's row, locked for the import's transaction
        try:
            with transaction.atomic():
                Project.objects.select_for_update().get(pk=project.pk)
                locked.set()
                time.sleep(3)
                times["import done"] = time.monotonic()
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    def submitting():
        try:
            locked.wait(5)
            _label(project, a, mine)  # adds the copy for b; its commit waits for the import
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    def leasing():
        try:
            locked.wait(5)
            time.sleep(0.8)  # the submit is waiting at its commit by now
            queue_lease(project=project, user=b, n=3)
            times["lease done"] = time.monotonic()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=f) for f in (importing, submitting, leasing)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert times["lease done"] < times["import done"], "the lease waited for the import"
    exact(project)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_undo_and_the_submit_of_the_items_overlap_copy_do_not_deadlock(make_user, make_project, make_round,
                                                                         monkeypatch):
    """b labeled an overlapped item, a holds its copy.  a's submit of the copy and b's undo of the item
    meet: the undo locks b's label and then waits for the copy's row, which a's submit holds; a's
    COMMIT checks its label's reference to the item (a deferred foreign key, ``FOR KEY SHARE``).  The
    undo must not lock the item's row (``FOR UPDATE`` of the joined item), or the two wait for each other."""
    need(db_is_postgres(), "the test database is not PostgreSQL: run with DATABASE_URL=postgres://... "
                           "(.ci/run does)")
    import time

    from annotate.services import annotations as annotations_module

    a, b = make_user("a"), make_user("b")
    project = make_project(n_items=40, batch_size=6, overlap_rate=1.0, overlap_k=2,
                           members=[(a, Membership.Role.ANNOTATOR), (b, Membership.Role.ANNOTATOR)])
    make_round(project)
    first = queue_lease(project=project, user=b, n=1)[0]
    _label(project, b, first)
    copy = [e for e in queue_lease(project=project, user=a, n=6) if e.item_id == first.item_id]
    assert copy, "a got the copy"
    paused, errors = threading.Event(), []
    real = annotations_module._overlap_copy

    def copy_then_pause(entry):
        made = real(entry)
        if threading.current_thread().name == "a":
            paused.set()
            time.sleep(1.5)  # b's undo starts and waits for the copy's row meanwhile
        return made

    monkeypatch.setattr(annotations_module, "_overlap_copy", copy_then_pause)

    def submit():
        try:
            _label(project, a, copy[0])
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    def undo():
        try:
            paused.wait(5)
            annotation_undo(project=project, user=b, item_id=first.item_id)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=submit, name="a"), threading.Thread(target=undo, name="b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors, errors
    assert QueueEntry.objects.get(item_id=first.item_id, state="leased").leased_by == b
    exact(project)
