"""Round bookkeeping and what a round writes."""
import numpy as np
import pytest
from django.db import transaction

from annotate.models import Membership, QueueEntry, Round
from annotate.services import round_pipeline
from annotate.services.annotations import annotation_submit
from annotate.services.queue import queue_lease
from annotate.services.rounds import round_execute, round_maybe_request, round_request
from selection import make_strategy
from selection.plan import plan_batch

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(make_user):
    return make_user("ann")


@pytest.fixture
def sent(monkeypatch):
    """Record round_run sends instead of sending them to a broker."""
    calls = []
    from annotate.tasks import rounds as task_module

    monkeypatch.setattr(task_module.round_run, "apply_async", lambda args, **kw: calls.append(args[0]))
    return calls


def label_leased(project, user, n, truth=True):
    """Lease n items and label them with their ground truth."""
    got = queue_lease(project=project, user=user, n=n)
    for e in got:
        annotation_submit(project=project, user=user, item_id=e.item_id, label=e.item.ground_truth)
    return got


def test_round_request_is_deduplicated_and_enqueued_after_commit(make_project, sent,
                                                                  django_capture_on_commit_callbacks):
    project = make_project()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        first = round_request(project=project, reason="test")
        second = round_request(project=project, reason="test")
        assert sent == []  # nothing is sent before the commit
    assert first is not None and second is None
    assert sent == [first.pk]
    assert len(callbacks) == 2  # the task and the queued status push
    assert Round.objects.filter(project=project, status__in=Round.ACTIVE).count() == 1


def test_one_active_round_per_project_is_enforced_by_the_database(make_project):
    from django.db import IntegrityError

    project = make_project()
    round_request(project=project, reason="a")
    with pytest.raises(IntegrityError), transaction.atomic():
        Round.objects.create(project=project, number=99, status=Round.Status.RUNNING, strategy="margin")


def test_rounds_of_different_projects_run_side_by_side(make_project):
    a, b = make_project(), make_project()
    assert round_request(project=a, reason="x") is not None
    assert round_request(project=b, reason="x") is not None


def test_a_cold_start_round_writes_a_full_batch_of_distinct_unlabeled_items(make_project, make_round):
    project = make_project(n_items=40, batch_size=8)
    rnd = make_round(project)
    entries = list(rnd.entries.all())
    assert rnd.status == Round.Status.DONE and rnd.number == 1
    assert len(entries) == 8 and len({e.item_id for e in entries}) == 8
    assert sorted(e.rank for e in entries) == list(range(8))
    assert all(e.state == QueueEntry.State.PENDING and e.predicted_label == "" for e in entries)
    assert rnd.metrics["labeled"] == 0 and rnd.metrics["pool"] == 40
    assert rnd.progress == 1.0 and rnd.finished_at is not None


def test_a_round_with_labels_predicts_like_an_independent_logistic_regression(make_project, make_round, user):
    from sklearn.linear_model import LogisticRegression

    project = make_project(n_items=60, batch_size=12, members=[(user, Membership.Role.ANNOTATOR)], l2=1.0)
    make_round(project)
    labeled = label_leased(project, user, 12)
    rnd = make_round(project)
    X, y = project.test_X, project.test_y
    rows = [e.item.row for e in labeled]
    ref = LogisticRegression(C=1.0 / project.l2, max_iter=5000, tol=1e-10).fit(X[rows], y[rows])
    entries = list(rnd.entries.select_related("item"))
    assert len(entries) == 12
    want = [project.classes[k] for k in ref.predict(X[[e.item.row for e in entries]])]
    got = [e.predicted_label for e in entries]
    agree = np.mean([a == b for a, b in zip(want, got)])
    assert agree >= 0.9, (want, got)
    ref_conf = ref.predict_proba(X[[e.item.row for e in entries]]).max(1)
    np.testing.assert_allclose([e.predicted_confidence for e in entries], ref_conf, atol=0.05)
    assert rnd.metrics["labeled"] == 12 and rnd.labeled_count == 12
    assert rnd.model_file.endswith(".npz")


def test_the_pool_excludes_labeled_and_leased_items_and_leased_entries_stay(make_project, make_round, user):
    project = make_project(n_items=30, batch_size=10, members=[(user, Membership.Role.ANNOTATOR)])
    make_round(project)
    labeled = label_leased(project, user, 4)
    held = queue_lease(project=project, user=user, n=3)
    held_state = [(e.pk, e.leased_by_id, e.lease_expires_at) for e in QueueEntry.objects.filter(
        pk__in=[e.pk for e in held]).order_by("pk")]
    old_pending = set(QueueEntry.objects.filter(state=QueueEntry.State.PENDING).values_list("pk", flat=True))
    rnd = make_round(project)
    new_items = set(rnd.entries.values_list("item_id", flat=True))
    assert not new_items & {e.item_id for e in labeled}
    assert not new_items & {e.item_id for e in held}
    # leased entries are untouched; the old round's pending rest is superseded
    assert held_state == [(e.pk, e.leased_by_id, e.lease_expires_at) for e in QueueEntry.objects.filter(
        pk__in=[e.pk for e in held]).order_by("pk")]
    assert set(QueueEntry.objects.filter(pk__in=old_pending).values_list("state", flat=True)) == {"expired"}
    assert rnd.metrics["superseded"] == len(old_pending)
    # the superseded items were in this round's pool (re-scored by the new model)
    assert rnd.metrics["pool"] == 30 - 4 - 3


def test_a_rerun_of_the_same_round_writes_nothing_twice(make_project, make_round):
    project = make_project(batch_size=5)
    rnd = make_round(project)
    assert round_execute(round_id=rnd.pk).entries.count() == 5  # done: returns at once
    # A redelivered task for a round whose worker died after the commit but before the ack:
    Round.objects.filter(pk=rnd.pk).update(status=Round.Status.RUNNING)
    round_execute(round_id=rnd.pk)
    assert QueueEntry.objects.filter(round=rnd).count() == 5
    assert QueueEntry.objects.count() == 5


def test_the_second_round_warm_starts_from_the_first_model(make_project, make_round, user):
    project = make_project(n_items=40, batch_size=6, members=[(user, Membership.Role.ANNOTATOR)])
    make_round(project)
    label_leased(project, user, 6)
    r2 = make_round(project)
    label_leased(project, user, 6)
    r3 = make_round(project)
    assert r2.metrics["warm_start"] is False
    assert r3.metrics["warm_start"] is True


@pytest.mark.parametrize("rate, expected", [(0.0, 0), (0.5, 5), (1.0, 10)])
def test_the_audit_share_follows_the_audit_rate(make_project, make_round, rate, expected):
    project = make_project(n_items=40, batch_size=10, audit_rate=rate)
    rnd = make_round(project)
    assert rnd.entries.filter(is_audit=True).count() == expected
    assert rnd.metrics["audit"] == expected


def test_the_refill_policy_starts_a_round_when_the_queue_runs_low(make_project, make_round, user, sent,
                                                                  django_capture_on_commit_callbacks):
    project = make_project(n_items=30, batch_size=6, refill_threshold=3, members=[(user, Membership.Role.ANNOTATOR)])
    make_round(project)
    queue_lease(project=project, user=user, n=3)  # 3 pending left: not below the threshold
    assert round_maybe_request(project=project) is None
    queue_lease(project=project, user=user, n=4)  # 2 pending left
    with django_capture_on_commit_callbacks(execute=True):
        rnd = round_maybe_request(project=project)
    assert rnd is not None and rnd.reason == "low_water" and sent == [rnd.pk]
    assert round_maybe_request(project=project) is None  # one at a time


def test_every_n_policy_counts_labels_since_the_last_round(make_project, make_round, user, sent,
                                                           django_capture_on_commit_callbacks):
    project = make_project(n_items=40, batch_size=20, refill_threshold=1, refill_policy="every_n", retrain_every=3,
                           members=[(user, Membership.Role.ANNOTATOR)])
    make_round(project)
    label_leased(project, user, 2)
    assert round_maybe_request(project=project) is None
    with django_capture_on_commit_callbacks(execute=True):
        label_leased(project, user, 1)  # the label service applies the policy after each label
    rnd = Round.objects.get(project=project, status=Round.Status.QUEUED)
    assert rnd.reason == "every_n" and sent == [rnd.pk]


def test_a_failing_round_is_marked_failed_with_the_reason(make_project):
    project = make_project(strategy="no-such-strategy")
    rnd = round_request(project=project, reason="t")
    with pytest.raises(ValueError):
        round_execute(round_id=rnd.pk)
    rnd.refresh_from_db()
    assert rnd.status == Round.Status.FAILED and "no-such-strategy" in rnd.failure
    assert "Traceback" not in rnd.failure and 'File "' not in rnd.failure  # the traceback is logged only
    assert "(reference " in rnd.failure
    assert not QueueEntry.objects.exists()
    assert round_maybe_request(project=project) is None  # no immediate retry after a failure


def test_an_item_labeled_while_the_round_trains_is_not_queued_again(make_project, user):
    """The pool is read before training; an item leased and labeled in the meantime must not be queued.
    The round's steps run one by one here (load -> train -> plan -> write), with the label in between."""
    project = make_project(n_items=12, batch_size=12, members=[(user, Membership.Role.ANNOTATOR)],
                           strategy="random")
    first = round_request(project=project, reason="t")
    round_execute(round_id=first.pk)
    label_leased(project, user, 2)  # labels exist, so the next round trains a head
    rnd = round_request(project=project, reason="t")
    Round.objects.filter(pk=rnd.pk).update(status=Round.Status.RUNNING)  # what the worker's claim does
    rnd.refresh_from_db()
    data = round_pipeline.round_load(rnd)
    trained = round_pipeline.round_train(data, l2=1.0, seed=0)
    plan = plan_batch(strategy=make_strategy("random"), X_pool=data.X_pool, probs_pool=trained.probs_pool,
                      X_labeled=data.X_labeled, probs_labeled=trained.probs_labeled, y_labeled=data.y,
                      batch_size=rnd.batch_size, audit_rate=0.0, rng=np.random.default_rng(0))
    assert len(plan.picks) == 12 - 2
    labeled_meanwhile = label_leased(project, user, 1)  # someone leases a pending item and labels it
    added = round_pipeline.round_write(rnd, data=data, trained=trained, plan=plan, timings={})
    assert added == 12 - 2 - 1
    item = labeled_meanwhile[0].item_id
    assert not QueueEntry.objects.filter(round=rnd, item_id=item).exists()
    assert QueueEntry.objects.filter(round=rnd).count() == 12 - 2 - 1
    assert not QueueEntry.objects.filter(item_id=item, state__in=QueueEntry.OPEN).exists()


def test_a_reviewers_correction_applies_the_refill_policy_too(make_project, make_round, make_user, user, sent,
                                                              django_capture_on_commit_callbacks):
    """The policy lives in the services, so a correction from the review page (or the shell) starts a
    round as a label does, with no view involved."""
    from annotate.services.review import annotation_correct

    reviewer = make_user("rev")
    project = make_project(n_items=40, batch_size=20, refill_threshold=1, refill_policy="every_n", retrain_every=2,
                           members=[(user, Membership.Role.ANNOTATOR), (reviewer, Membership.Role.REVIEWER)])
    first = make_round(project)
    assert first.labeled_count == 0
    got = queue_lease(project=project, user=user, n=2)
    annotation_submit(project=project, user=user, item_id=got[0].item_id, label=got[0].item.ground_truth)
    assert not Round.objects.filter(project=project, status=Round.Status.QUEUED).exists()
    with transaction.atomic():  # a second label, written as a bulk script would, without the policy
        QueueEntry.objects.filter(pk=got[1].pk).update(state=QueueEntry.State.DONE)
        from annotate.models import Annotation
        Annotation.objects.create(item_id=got[1].item_id, annotator=user, label=got[1].item.ground_truth)
    assert sent == []
    with django_capture_on_commit_callbacks(execute=True):
        annotation_correct(project=project, reviewer=reviewer, item_id=got[0].item_id, label=project.classes[0])
    rnd = Round.objects.get(project=project, status=Round.Status.QUEUED)
    assert rnd.reason == "every_n" and sent == [rnd.pk]


def test_a_lease_that_comes_back_short_starts_a_round(make_project, make_round, user, sent,
                                                      django_capture_on_commit_callbacks):
    project = make_project(n_items=30, batch_size=4, refill_threshold=1, members=[(user, Membership.Role.ANNOTATOR)])
    make_round(project)
    assert len(queue_lease(project=project, user=user, n=4)) == 4 and sent == []
    with django_capture_on_commit_callbacks(execute=True):
        other = queue_lease(project=project, user=user, n=6)  # renews the 4 held, none left to take
    assert len(other) == 4
    rnd = Round.objects.get(project=project, status=Round.Status.QUEUED)
    assert rnd.reason == "low_water" and sent == [rnd.pk]
