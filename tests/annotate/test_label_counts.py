"""The kept label counts (``LabelCounts``, services/label_counts.py, issue 17): labeled items and each
person's labels stay equal to fresh counts through labels, skips, relabels, undos, corrections,
imports with pre-labels and admin deletes, on SQLite and (concurrently) on PostgreSQL; the labeling
responses read them; drift is found and repaired."""
import logging
import random
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.management import call_command
from django.db import OperationalError, connection, transaction
from django.test import Client
from tests.annotate.datakit import class_tree, write_zip
from tests.factories import empty_project

from annotate import selectors
from annotate.models import Annotation, LabelCounts, Membership, QueueEntry
from annotate.services import liveness
from annotate.services.annotations import annotation_submit, annotation_undo
from annotate.services.imports import ImportOptions, import_images
from annotate.services.label_counts import label_counts_check
from annotate.services.errors import BadInput, Conflict
from annotate.services.queue import queue_lease, queue_release
from annotate.services.review import annotation_correct
from tests.support import db_is_postgres, need

pytestmark = pytest.mark.django_db


def counted(project) -> dict:
    """{None: labeled items, annotator id: their labels} from the annotation table (zeros left out)."""
    cur = Annotation.objects.filter(item__project=project, is_current=True, action__in=("label", "correct"))
    out = {None: cur.values("item_id").distinct().count()}
    for uid in set(cur.values_list("annotator_id", flat=True)):
        out[uid] = cur.filter(annotator_id=uid).count()
    return out


def kept(project) -> dict:
    rows = dict(LabelCounts.objects.filter(project=project).values_list("annotator_id", "labels"))
    return {k: v for k, v in rows.items() if v or k is None}


def exact(project) -> dict:
    k, n = kept(project), counted(project)
    assert k == n, f"kept {k}, counted {n}"
    return k


@pytest.fixture
def overlapped(make_project, make_round, make_user):
    """Two annotators and a reviewer; every item is served to both annotators (overlap k = 2)."""
    a, b, r = make_user("a"), make_user("b"), make_user("rev")
    project = make_project(n_items=40, batch_size=8, overlap_rate=1.0, overlap_k=2, refill_threshold=1,
                           members=[(a, Membership.Role.ANNOTATOR), (b, Membership.Role.ANNOTATOR),
                                    (r, Membership.Role.REVIEWER)])
    make_round(project)
    return project, a, b, r


def _take(project, user, item_id):
    """Lease until ``user`` holds ``item_id`` (the overlap copy goes to the next annotator)."""
    got = {e.item_id: e for e in queue_lease(project=project, user=user, n=8)}
    assert item_id in got, "the item is not served to this person"
    return got[item_id]


def test_labels_skips_relabels_undos_and_corrections_keep_the_counts(overlapped):
    project, a, b, r = overlapped
    first, second, third = (e.item for e in queue_lease(project=project, user=a, n=3))

    def label(user, item, skip=False):
        annotation_submit(project=project, user=user, item_id=item.pk, label=None if skip else "cat", skip=skip)

    label(a, first)
    assert exact(project) == {None: 1, a.pk: 1}
    label(a, second, skip=True)                       # a skip is no label
    assert exact(project) == {None: 1, a.pk: 1}
    _take(project, b, first.pk)
    label(b, first)                                   # a second label of a labeled item: still one item
    assert exact(project) == {None: 1, a.pk: 1, b.pk: 1}
    annotation_undo(project=project, user=a, item_id=first.pk)   # b's label keeps it labeled
    assert exact(project) == {None: 1, b.pk: 1}
    label(a, first)                                   # relabel after undo
    assert exact(project) == {None: 1, a.pk: 1, b.pk: 1}
    annotation_undo(project=project, user=a, item_id=first.pk)
    queue_release(project=project, user=a, item_ids=[first.pk])   # so that b may take it back
    annotation_undo(project=project, user=b, item_id=first.pk)   # nobody's label left
    assert exact(project) == {None: 0}
    label(a, third)
    annotation_correct(project=project, reviewer=r, item_id=third.pk, label="dog")
    assert exact(project) == {None: 1, a.pk: 1, r.pk: 1}
    annotation_correct(project=project, reviewer=r, item_id=third.pk, label="fox")  # a correction replaced
    assert exact(project) == {None: 1, a.pk: 1, r.pk: 1}
    annotation_undo(project=project, user=a, item_id=third.pk)   # the correction keeps it labeled
    assert exact(project) == {None: 1, r.pk: 1}
    queue_release(project=project, user=a, item_ids=[third.pk])
    annotation_undo(project=project, user=r, item_id=third.pk)
    assert exact(project) == {None: 0}
    queue_release(project=project, user=b)  # b took the skipped item's copy
    annotation_undo(project=project, user=a, item_id=second.pk)  # undoing a skip counts nothing
    label(a, second)
    assert exact(project) == {None: 1, a.pk: 1}


def test_an_import_with_prelabels_adds_its_items_and_labels(media, tmp_path, make_user):
    user = make_user("importer")
    project = empty_project(classes=("a", "b"))
    z = write_zip(tmp_path / "in.zip", class_tree(n_per_class=3, classes=("a", "b")))
    opts = ImportOptions(source=str(z), class_folders=True, labels_as="prelabels")
    assert import_images(project=project, options=opts, user=user).imported == 6
    assert exact(project) == {None: 6, user.pk: 6}
    z2 = write_zip(tmp_path / "more.zip", class_tree(n_per_class=2, classes=("a", "b"), start_seed=50))
    assert import_images(project=project, options=ImportOptions(source=str(z2), class_folders=True,
                                                                labels_as="prelabels"), user=user).imported == 4
    assert exact(project) == {None: 10, user.pk: 10}


def test_labeled_items_cannot_be_deleted_in_the_admin_and_the_counts_stand(overlapped, make_user):
    project, a, _b, _r = overlapped
    got = queue_lease(project=project, user=a, n=3)
    for e in got:
        annotation_submit(project=project, user=a, item_id=e.item_id, label="cat")
    assert exact(project) == {None: 3, a.pk: 3}
    client = Client()
    client.force_login(make_user("root", superuser=True))
    r = client.post("/admin/annotate/item/", {"action": "delete_selected", "_selected_action": [got[0].item_id],
                                             "post": "yes"})
    # deleting the item would delete its labels, and the label history is append-only
    assert r.status_code == 403 and exact(project) == {None: 3, a.pk: 3}


def test_labels_cannot_be_added_in_the_admin_past_the_label_services(overlapped, make_user):
    """An annotation row added in the admin would be a current label that no service counted."""
    project, a, _b, _r = overlapped
    e = queue_lease(project=project, user=a, n=2)
    annotation_submit(project=project, user=a, item_id=e[0].item_id, label="cat")
    client = Client()
    client.force_login(make_user("root", superuser=True))
    assert client.get("/admin/annotate/annotation/add/").status_code == 403
    r = client.post("/admin/annotate/annotation/add/", {
        "item": e[1].item_id, "annotator": a.pk, "action": "label", "label": "dog", "origin": "manual",
        "time_ms": 0, "is_current": "on", "created_at_0": "2026-01-01", "created_at_1": "00:00:00"})
    assert r.status_code == 403
    assert exact(project) == {None: 1, a.pk: 1}


def test_the_responses_read_the_kept_counts_not_the_table(overlapped):
    project, a, b, _r = overlapped
    e = queue_lease(project=project, user=a, n=1)[0]
    annotation_submit(project=project, user=a, item_id=e.item_id, label="cat")
    LabelCounts.objects.filter(project=project, annotator=None).update(labels=1234)
    LabelCounts.objects.filter(project=project, annotator=a).update(labels=77)
    counts, _ = selectors.progress_and_round(project=project, user=a)
    assert (counts["labeled"], counts["mine"]) == (1234, 77)
    assert selectors.progress_counts(project=project, user=a)["labeled"] == 1234
    # without kept rows (a person with no label here yet, a project never labeled through a service): counted
    assert selectors.progress_counts(project=project, user=b)["mine"] == 0
    LabelCounts.objects.filter(project=project).delete()
    counts, _ = selectors.progress_and_round(project=project, user=a)
    assert (counts["labeled"], counts["mine"]) == (1, 1)


def test_drift_is_logged_and_repaired_by_the_check_the_sweep_and_the_command(overlapped, caplog, settings,
                                                                              capsys):
    project, a, b, _r = overlapped
    got = queue_lease(project=project, user=a, n=2)
    annotation_submit(project=project, user=a, item_id=got[0].item_id, label="cat")
    # a raw write past the services: b's label on another item
    Annotation.objects.create(item_id=got[1].item_id, annotator=b, action="label", label="dog")
    assert kept(project) == {None: 1, a.pk: 1} and counted(project) == {None: 2, a.pk: 1, b.pk: 1}
    assert label_counts_check(repair=False) == {
        project.pk: f"labeled items: kept 1, counted 2; labels of user {b.pk}: kept None, counted 1"}
    with caplog.at_level(logging.WARNING, logger="annotate.services.label_counts"):
        assert project.pk in label_counts_check()
    assert "labeled items: kept 1, counted 2" in caplog.text
    assert exact(project) == {None: 2, a.pk: 1, b.pk: 1} and label_counts_check() == {}

    Annotation.objects.filter(annotator=b).update(is_current=False)
    with pytest.raises(SystemExit):
        call_command("loupe_recount", "--check")
    call_command("loupe_recount")
    assert "labeled items: kept 2, counted 1" in capsys.readouterr().out
    assert exact(project) == {None: 1, a.pk: 1}

    Annotation.objects.filter(annotator=a).update(is_current=False)
    settings.LOUPE_RECOUNT_SECONDS = 300
    liveness._last_recount = None
    assert liveness.sweep().recounted == [f"project {project.pk}"]
    assert exact(project) == {None: 0}


@pytest.mark.django_db(transaction=True)
def test_the_migration_counts_the_labels_of_existing_projects(make_project, make_user):
    from django.db.migrations.executor import MigrationExecutor

    a, b = make_user("a"), make_user("b")
    project, other = make_project(n_items=10), make_project(n_items=4)
    items = list(project.items.order_by("pk"))
    executor = MigrationExecutor(connection)
    executor.migrate([("annotate", "0009_audit_rate_default")])  # before the label counts
    for it in items[:4]:
        Annotation.objects.create(item=it, annotator=a, action="label", label="cat")
    for it in items[2:5]:
        Annotation.objects.create(item=it, annotator=b, action="label", label="dog")
    Annotation.objects.create(item=items[6], annotator=b, action="skip")
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    assert kept(project) == counted(project) == {None: 5, a.pk: 4, b.pk: 3}
    assert kept(other) == {None: 0}


# ------------------------------------------------------------------------- concurrency (PostgreSQL)
@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_concurrent_labels_undos_and_corrections_keep_the_counts_exact(make_user, make_project, make_round):
    need(db_is_postgres(), "the test database is not PostgreSQL: run with DATABASE_URL=postgres://... "
                           "(.ci/run does)")
    users = [make_user(f"ann{i}") for i in range(6)]
    reviewer = make_user("rev")
    project = make_project(n_items=120, batch_size=40, overlap_rate=1.0, overlap_k=3, refill_threshold=1,
                           members=[*((u, Membership.Role.ANNOTATOR) for u in users),
                                    (reviewer, Membership.Role.REVIEWER)])
    make_round(project)
    barrier = threading.Barrier(len(users) + 1)
    finished = threading.Event()
    errors: list[BaseException] = []
    deadlocks: list[OperationalError] = []

    def deadlocked(exc: OperationalError) -> None:
        """Recorded, then failed below with the others: no change of labels may deadlock (an undo
        racing the submit of its item's overlap copy did, until f0602fb; a correction holding the
        counters while its deferred checks waited for an undo would)."""
        deadlocks.append(exc)

    def annotate(k, user):
        barrier.wait()
        try:
            for step in range(5):
                for j, e in enumerate(queue_lease(project=project, user=user, n=3)):
                    try:
                        annotation_submit(project=project, user=user, item_id=e.item_id, skip=(j + k) % 4 == 3,
                                          label=None if (j + k) % 4 == 3 else "cat")
                        if (j + k + step) % 3 == 0:  # undo it, then label it again
                            annotation_undo(project=project, user=user, item_id=e.item_id)
                            if (j + step) % 2:
                                annotation_submit(project=project, user=user, item_id=e.item_id, label="dog")
                    except Conflict:
                        pass  # its overlap copy is leased to someone else now: the undo is refused, as it should be
                    except OperationalError as exc:
                        deadlocked(exc)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            connection.close()

    def review():
        rng = random.Random(0)
        barrier.wait()
        try:
            while not finished.is_set():
                ids = list(Annotation.objects.filter(item__project=project, is_current=True, action="label")
                           .values_list("item_id", flat=True)[:50])
                if not ids:
                    continue
                item_id = rng.choice(ids)
                try:
                    annotation_correct(project=project, reviewer=reviewer, item_id=item_id, label="fox")
                    if rng.random() < 0.5:
                        annotation_undo(project=project, user=reviewer, item_id=item_id)
                except (BadInput, Conflict):
                    pass  # its label was undone meanwhile, or its copy is leased: refused, as it should be
                except OperationalError as exc:
                    deadlocked(exc)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    with ThreadPoolExecutor(len(users) + 1) as pool:
        side = pool.submit(review)
        done = [pool.submit(annotate, k, u) for k, u in enumerate(users)]
        for f in done:
            f.result()
        finished.set()
        side.result()
    assert not errors, errors
    assert not deadlocks, deadlocks
    assert Annotation.objects.filter(annotator=reviewer, action="correct").exists()
    assert QueueEntry.objects.filter(project=project, state="done").count() >= 20
    assert exact(project)[None] > 0
    assert label_counts_check(repair=False) == {}


def _wait_for_a_lock_wait(seconds: float = 10.0) -> bool:
    """Whether another connection of this database waits on a lock within ``seconds`` (PostgreSQL)."""
    end = time.monotonic() + seconds
    with connection.cursor() as cur:
        while time.monotonic() < end:
            cur.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                        "AND wait_event_type = 'Lock' AND pid <> pg_backend_pid()")
            if cur.fetchone()[0]:
                return True
            time.sleep(0.05)
    return False


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_an_import_with_prelabels_does_not_deadlock_with_a_first_label(media, tmp_path, make_user, make_project,
                                                                       make_round):
    """A person's first label in a project inserts their counts row while holding the project's counts
    row; that insert's reference to the project is checked at COMMIT (a deferred foreign key: a
    key-share lock on the project's row).  An import holds the project's row for update and then waits
    for the label counts: the check must not come after the counters' lock, or the two wait for each
    other and PostgreSQL kills one."""
    need(db_is_postgres(), "the test database is not PostgreSQL: run with DATABASE_URL=postgres://... "
                           "(.ci/run does)")
    a, b, importer = make_user("a"), make_user("b"), make_user("importer")
    project = make_project(n_items=20, batch_size=8, refill_threshold=1, classes=("cat", "dog"),
                           members=[(a, Membership.Role.ANNOTATOR), (b, Membership.Role.ANNOTATOR)])
    make_round(project)
    e = queue_lease(project=project, user=b, n=1)[0]
    annotation_submit(project=project, user=b, item_id=e.item_id, label="cat")  # the project's counts row exists
    mine = queue_lease(project=project, user=a, n=1)[0]
    assert not LabelCounts.objects.filter(project=project, annotator=a).exists()
    z = write_zip(tmp_path / "in.zip", class_tree(n_per_class=2, classes=("cat", "dog")))
    held, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def submit():
        try:
            with transaction.atomic():  # the submit's transaction, kept open until the import waits
                annotation_submit(project=project, user=a, item_id=mine.item_id, label="dog")
                held.set()
                release.wait(20)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            held.set()
            connection.close()

    def import_():
        held.wait(20)
        try:
            import_images(project=project, user=importer,
                          options=ImportOptions(source=str(z), class_folders=True, labels_as="prelabels"))
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            connection.close()

    with ThreadPoolExecutor(2) as pool:
        jobs = [pool.submit(submit), pool.submit(import_)]
        held.wait(20)
        assert _wait_for_a_lock_wait(), "the import never waited for the submit"
        release.set()
        for j in jobs:
            j.result()
    assert not errors, errors
    assert exact(project) == {None: 6, a.pk: 1, b.pk: 1, importer.pk: 4}
