"""The labeling hot path: what one submit costs in SQL, and that the cheap reads agree with plain ones.

The per-submit query count is pinned as an upper bound (docs/bench-load.md: the submit's
cost under load was mostly queries for the response), so a change that adds queries to
``POST /label`` fails here instead of silently slowing every label.
"""
import json
from datetime import timedelta
import uuid

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone
from django.test.utils import CaptureQueriesContext

from annotate import selectors
from annotate.models import Annotation, Item, Membership, QueueEntry, Round
from annotate.services.annotations import annotation_submit
from annotate.services.queue import queue_lease
from annotate.services.queue_counts import queue_pending_recount
from annotate.services.rounds import round_maybe_request

pytestmark = pytest.mark.django_db

#: SQL statements one ``POST /label`` may run, transaction control (BEGIN/COMMIT, SAVEPOINT/RELEASE)
#: aside: the project with the caller's role (1), closing the lease (1), retiring the previous
#: current row (1), the label (1), the kept label counts (1; on PostgreSQL 4: the label's deferred
#: reference checks are run first (2) and the counts' project row locked (1), services/label_counts.py),
#: the progress counts with the current round (1).  The session
#: and the user come from the cache (annotate/cached_auth.py).  It was 23, then 13 (2 of them
#: SAVEPOINT/RELEASE), then 5 (counting the labels in the progress statement: ~10 ms at 1M items).
MAX_QUERIES_PER_SUBMIT = 6 + 3 * (connection.vendor == "postgresql")
TRANSACTION_CONTROL = ("BEGIN", "COMMIT", "SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK")


def work(ctx) -> list[str]:
    """The captured statements that read or write data (transaction control left out)."""
    return [q["sql"] for q in ctx.captured_queries if not q["sql"].lstrip().upper().startswith(TRANSACTION_CONTROL)]


@pytest.fixture
def labeling(make_user, make_project, make_round):
    user = make_user("ann")
    other = make_user("bob")
    project = make_project(members=[(user, Membership.Role.ANNOTATOR), (other, Membership.Role.ANNOTATOR)],
                           n_items=40, batch_size=20, refill_threshold=3)
    make_round(project)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get(f"/projects/{project.pk}/label/")  # the csrftoken cookie, as the page gets it
    return project, user, other, client


def post(client, url, body):
    return client.post(url, data=json.dumps(body), content_type="application/json",
                       HTTP_X_CSRFTOKEN=client.cookies["csrftoken"].value)


def reference_progress(project, user):
    """The progress counts, each by its own plain query (the independent reference)."""
    labels = Annotation.objects.filter(item__project=project, is_current=True,
                                       action__in=[Annotation.Action.LABEL, Annotation.Action.CORRECT])
    rounds = Round.objects.filter(project=project)
    active = rounds.filter(status__in=[Round.Status.QUEUED, Round.Status.RUNNING]).order_by("-number").first()
    rnd = active or rounds.order_by("-number").first()
    return {
        "total": Item.objects.filter(project=project).count(),
        "labeled": len(set(labels.values_list("item_id", flat=True))),
        "pending": QueueEntry.objects.filter(project=project, state="pending").count(),
        "leased": QueueEntry.objects.filter(project=project, state="leased").count(),
        "mine": labels.filter(annotator=user).count(),
        "round_number": rnd.number if rnd else None,
    }


def first_label(client, base, item) -> None:
    """A person's first label in a project makes their row of the kept label counts (and the project's
    first label the project's row; services/label_counts.py): once, not the steady state pinned here."""
    r = post(client, base + "label", {"item_id": item["item_id"], "label": "dog", "client_id": str(uuid.uuid4())})
    assert r.status_code == 201, r.content


def test_a_submit_runs_at_most_the_pinned_number_of_queries(labeling):
    project, user, _other, client = labeling
    base = f"/api/projects/{project.pk}/"
    items = post(client, base + "lease", {"n": 5}).json()["items"]
    first_label(client, base, items.pop())
    counts = []
    for it in items[:3]:
        with CaptureQueriesContext(connection) as ctx:
            r = post(client, base + "label", {"item_id": it["item_id"], "label": "cat",
                                             "client_id": str(uuid.uuid4())})
        assert r.status_code == 201, r.content
        counts.append(len(work(ctx)))
    sql = "\n".join(work(ctx))
    assert max(counts) <= MAX_QUERIES_PER_SUBMIT, f"{counts} queries per submit; the last one ran:\n{sql}"
    assert len(ctx.captured_queries) <= MAX_QUERIES_PER_SUBMIT + 2  # + the label's SAVEPOINT/RELEASE here
    # A replay (same client_id) is no dearer than a first submit.
    with CaptureQueriesContext(connection) as ctx:
        r = post(client, base + "label", {"item_id": items[3]["item_id"], "label": "dog", "client_id": "0" * 32})
        again = post(client, base + "label", {"item_id": items[3]["item_id"], "label": "dog", "client_id": "0" * 32})
    assert r.status_code == 201 and again.status_code == 200 and again.json()["created"] is False
    assert len(work(ctx)) <= 2 * MAX_QUERIES_PER_SUBMIT


@pytest.mark.django_db(transaction=True)
def test_a_committed_submit_runs_the_pinned_statements_and_its_transaction(make_user, make_project, make_round):
    """Outside the test's wrapping transaction, as in production: the label commits in its own
    transaction (SQLite shows its BEGIN and COMMIT; psycopg sends them outside Django's cursor)."""
    user = make_user("ann")
    project = make_project(members=[(user, Membership.Role.ANNOTATOR)], n_items=40, batch_size=20, refill_threshold=3)
    make_round(project)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    client.get(f"/projects/{project.pk}/label/")
    base = f"/api/projects/{project.pk}/"
    items = post(client, base + "lease", {"n": 3}).json()["items"]
    first_label(client, base, items.pop())
    for it in items:
        with CaptureQueriesContext(connection) as ctx:
            r = post(client, base + "label", {"item_id": it["item_id"], "label": "cat", "client_id": str(uuid.uuid4())})
        assert r.status_code == 201, r.content
        assert len(work(ctx)) <= MAX_QUERIES_PER_SUBMIT, work(ctx)
        control = [q["sql"] for q in ctx.captured_queries if q["sql"] not in work(ctx)]
        assert len(control) <= 2 and all(c.upper().startswith(("BEGIN", "COMMIT")) for c in control), control
    # Every label is durably stored, once, and the leases are closed.
    assert Annotation.objects.filter(annotator=user, action="label", is_current=True).count() == 3
    assert not QueueEntry.objects.filter(project=project, leased_by=user, state="leased").exists()


def test_a_request_reads_no_session_or_user_row_once_they_are_cached(labeling):
    project, _user, _other, client = labeling
    with CaptureQueriesContext(connection) as ctx:
        r = client.get(f"/api/projects/{project.pk}/status")
    assert r.status_code == 200
    tables = " ".join(work(ctx))
    assert "django_session" not in tables and "auth_user" not in tables and len(work(ctx)) == 2, work(ctx)


def test_the_label_response_progress_matches_plain_counts(labeling):
    project, user, other, client = labeling
    base = f"/api/projects/{project.pk}/"
    for e in queue_lease(project=project, user=other, n=3)[:2]:  # someone else's labels and leases
        annotation_submit(project=project, user=other, item_id=e.item_id, label="fox")
    items = post(client, base + "lease", {"n": 5}).json()["items"]
    for k, it in enumerate(items[:4]):
        body = {"item_id": it["item_id"], "client_id": str(uuid.uuid4())}
        r = post(client, base + ("skip" if k == 1 else "label"), body if k == 1 else {**body, "label": "dog"})
        assert r.status_code == 201, r.content
        got = r.json()["progress"]
        ref = reference_progress(project, user)
        assert {k: got[k] for k in ("total", "labeled", "pending", "leased", "mine")} == {
            k: ref[k] for k in ("total", "labeled", "pending", "leased", "mine")}
        assert got["round"]["number"] == ref["round_number"]
    ref = reference_progress(project, user)
    assert ref["mine"] == 3 and ref["labeled"] == 5 and ref["leased"] == 1 + 1  # bob's third lease + my fifth
    status = client.get(base + "status").json()["progress"]
    assert {k: status[k] for k in ("total", "labeled", "pending", "leased", "mine")} == {
        k: ref[k] for k in ("total", "labeled", "pending", "leased", "mine")}


def test_progress_of_an_empty_project_counts_zero(make_project, make_user):
    project = make_project(n_items=0)
    progress = selectors.project_progress(project=project, user=make_user("x"))
    assert progress == {"total": 0, "labeled": 0, "pending": 0, "leased": 0, "mine": 0, "round": None}


def test_current_round_prefers_an_active_round_over_a_newer_finished_one(make_project):
    project = make_project()
    Round.objects.create(project=project, number=1, status=Round.Status.RUNNING, strategy="margin")
    Round.objects.create(project=project, number=2, status=Round.Status.DONE, strategy="margin")
    assert selectors.current_round(project=project).number == 1
    Round.objects.filter(project=project, number=1).update(status=Round.Status.FAILED)
    assert selectors.current_round(project=project).number == 2


def test_a_label_that_empties_the_queue_starts_a_round_and_the_response_shows_it(labeling, monkeypatch):
    project, user, _other, client = labeling
    from annotate.tasks import rounds as task_module

    monkeypatch.setattr(task_module.round_run, "apply_async", lambda args, **kw: None)
    base = f"/api/projects/{project.pk}/"
    items = post(client, base + "lease", {"n": 1}).json()["items"]
    # Other annotators hold all but 2 of the rest (no one annotator may take the whole queue): threshold 3.
    rest = list(QueueEntry.objects.filter(project=project, state="pending").values_list("pk", flat=True))[2:]
    QueueEntry.objects.filter(pk__in=rest).update(state="leased", leased_by=_other, leased_at=timezone.now(),
                                                  lease_expires_at=timezone.now() + timedelta(minutes=10))
    queue_pending_recount(project_id=project.pk)  # a write past the queue services: recount the kept count
    r = post(client, base + "label", {"item_id": items[0]["item_id"], "label": "cat"})
    assert r.status_code == 201
    assert r.json()["progress"]["round"]["number"] == 2 and r.json()["progress"]["round"]["status"] == "queued"
    assert Round.objects.filter(project=project, status="queued").count() == 1


def test_the_refill_policy_is_unchanged_by_passing_the_pending_count(make_project, make_round, make_user):
    user = make_user("ann")
    project = make_project(n_items=30, batch_size=6, refill_threshold=3, members=[(user, Membership.Role.ANNOTATOR)])
    make_round(project)
    queue_lease(project=project, user=user, n=4)  # 2 pending: below the threshold
    # A caller's stale, high pending count wins (it is the caller's read); the real one starts a round.
    assert round_maybe_request(project=project, pending=5) is None
    assert round_maybe_request(project=project, pending=2) is not None


def test_training_labels_let_a_reviewers_correction_win(make_project, make_user):
    """``labeled_item_labels`` (what rounds train on) follows ``selectors_labels.final_labels``:
    a reviewer's correction wins even over a later plain label, as in exports and statistics."""
    ann, rev, late = make_user("ann"), make_user("rev"), make_user("late")
    project = make_project(n_items=6)
    items = list(Item.objects.filter(project=project).order_by("id"))

    def row(item, user, action, label):
        return Annotation.objects.create(item=item, annotator=user, action=action, label=label, is_current=True)

    row(items[0], ann, "label", "cat")
    row(items[0], rev, "correct", "dog")  # correction after the label
    row(items[0], late, "label", "fox")  # a later plain label does not beat the correction
    row(items[1], ann, "label", "cat")
    row(items[1], late, "label", "fox")  # two plain labels: the latest wins
    row(items[2], ann, "skip", "")  # a skip is no label
    row(items[3], ann, "undo", "")  # an undone label is no label
    got = selectors.labeled_item_labels(project=project)
    assert got == {items[0].pk: "dog", items[1].pk: "fox"}


# --------------------------------------------------------------------------- connection settings
def test_database_url_options_are_typed_and_bad_ones_named():
    from django.core.exceptions import ImproperlyConfigured

    from config.env import database_from_url

    db = database_from_url("DATABASE_URL", "postgres://u:p@h:5433/d?connect_timeout=5&sslmode=require"
                                           "&server_side_binding=true")
    assert db["OPTIONS"] == {"connect_timeout": 5, "sslmode": "require", "server_side_binding": True}
    assert db["CONN_MAX_AGE"] == 0 and db["PORT"] == "5433"
    with pytest.raises(ImproperlyConfigured, match="connect_timeout='soon' is not an integer"):
        database_from_url("DATABASE_URL", "postgres://h/d?connect_timeout=soon")
    with pytest.raises(ImproperlyConfigured, match="DB_POOL"):
        database_from_url("DATABASE_URL", "postgres://h/d?pool=1")


def test_pool_and_persistent_connections_come_from_the_environment(monkeypatch):
    from django.core.exceptions import ImproperlyConfigured

    from config.env import database_settings

    monkeypatch.delenv("DATABASE_URL", raising=False)  # .ci/run sets it; these checks pass the URL as the default
    url = "postgres://h/d"
    monkeypatch.setenv("DB_CONN_MAX_AGE", "60")
    db = database_settings("DATABASE_URL", url)
    assert db["CONN_MAX_AGE"] == 60 and db["CONN_HEALTH_CHECKS"] is True and "pool" not in db["OPTIONS"]
    monkeypatch.setenv("DB_POOL", "1")
    with pytest.raises(ImproperlyConfigured, match="DB_CONN_MAX_AGE=60 cannot be combined with DB_POOL"):
        database_settings("DATABASE_URL", url)
    monkeypatch.setenv("DB_CONN_MAX_AGE", "0")
    monkeypatch.setenv("DB_POOL_MAX_SIZE", "5")
    db = database_settings("DATABASE_URL", url)
    assert db["OPTIONS"]["pool"] == {"min_size": 2, "max_size": 5, "timeout": 10.0} and db["CONN_MAX_AGE"] == 0
    monkeypatch.setenv("DB_POOL_MIN_SIZE", "6")
    with pytest.raises(ImproperlyConfigured, match="DB_POOL_MAX_SIZE=5 must be at least DB_POOL_MIN_SIZE=6"):
        database_settings("DATABASE_URL", url)
    with pytest.raises(ImproperlyConfigured, match="DB_POOL=1 needs a PostgreSQL"):
        database_settings("DATABASE_URL", "sqlite:///x.db")
    monkeypatch.setenv("DB_POOL", "maybe")
    with pytest.raises(ImproperlyConfigured, match="DB_POOL='maybe' is not a boolean"):
        database_settings("DATABASE_URL", url)


def test_a_label_pushes_nothing_by_itself(labeling, monkeypatch, django_capture_on_commit_callbacks):
    """Pushes go once per event to the project's group (a round's queue and status, a job, stats), never
    per label: the labels' progress reaches the page in the label response."""
    from annotate import realtime

    project, _user, _other, client = labeling
    sent: list[str] = []
    monkeypatch.setattr(realtime, "_send", lambda pid, message, group=None: sent.append(message["type"]))
    base = f"/api/projects/{project.pk}/"
    with django_capture_on_commit_callbacks(execute=True):
        for it in post(client, base + "lease", {"n": 3}).json()["items"]:
            assert post(client, base + "label", {"item_id": it["item_id"], "label": "cat"}).status_code == 201
    assert sent == []
