"""The adaptive refill policy (annotate/services/refill.py), round progress throttling, worker warm-up."""
import math
from datetime import datetime, timedelta
from datetime import timezone as dt_timezone

import numpy as np
import pytest
from django.utils import timezone

from annotate.models import Annotation, Item, Membership, QueueEntry, Round
from annotate.services import refill, rounds
from annotate.services.queue import queue_lease
from annotate.services.refill import Pace, label_rate, next_batch_size, pace_measure, refill_point
from annotate.services.rounds import round_maybe_request

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt_timezone.utc)


# --------------------------------------------------------------------------- pure rules
def test_refill_point_is_twice_the_round_time_at_the_labeling_rate_with_the_threshold_as_floor():
    # 3 labels/s, rounds of 4 s: 12 items go during a round; start at 2 x 12 = 24 pending.
    assert refill_point(threshold=10, pace=Pace(3.0, 4.0)) == 24
    assert refill_point(threshold=30, pace=Pace(3.0, 4.0)) == 30  # the configured threshold is a floor
    assert refill_point(threshold=10, pace=Pace(0.3, 1.0)) == 10  # slow team, fast rounds: the floor
    assert refill_point(threshold=0, pace=Pace(0.7, 1.1)) == 2  # ceil(1.54): never a fraction of an item
    # Without a full measurement the configured threshold applies unchanged.
    for pace in (Pace(None, 4.0), Pace(3.0, None), Pace(None, None)):
        assert refill_point(threshold=10, pace=pace) == 10


def test_a_round_slower_than_the_buffer_grows_the_next_batch_up_to_the_bound():
    # Fast rounds: 20 items (the configured batch) last far longer than a round.
    assert next_batch_size(base=20, threshold=10, pace=Pace(1.0, 0.5)) == 20
    # A 4 s round at 3/s: the refill point is 24 > 20, so a batch of 20 lands below it at once;
    # grown to the refill point plus one round of labeling (24 + 12).
    assert next_batch_size(base=20, threshold=10, pace=Pace(3.0, 4.0)) == 36
    # ... bounded by MAX_BATCH_FACTOR x the configured size.
    assert next_batch_size(base=20, threshold=10, pace=Pace(10.0, 30.0)) == refill.MAX_BATCH_FACTOR * 20
    assert next_batch_size(base=20, threshold=10, pace=Pace(None, 30.0)) == 20
    # Property: the grown batch always lasts more than a round beyond the refill point (below the bound).
    rng = np.random.default_rng(0)
    for rate, secs in rng.uniform(0.05, 5, size=(200, 2)):
        pace = Pace(float(rate), float(secs))
        b = next_batch_size(base=20, threshold=10, pace=pace)
        assert 20 <= b <= 80
        if b < 80:
            assert b - refill_point(threshold=10, pace=pace) >= rate * secs


def test_label_rate_from_timestamps_matches_the_closed_form_and_drops_when_labeling_stops():
    times = [T0 - timedelta(seconds=2 * k) for k in range(30)]  # one label every 2 s, newest at T0
    assert label_rate(times, now=T0) == pytest.approx(0.5)
    # A pause: the span runs to now, so the rate falls at once (29 gaps over 58 + 30 s).
    assert label_rate(times, now=T0 + timedelta(seconds=30)) == pytest.approx(29 / 88)
    # Only the window counts; too few inside it: no rate.
    assert label_rate(times, now=T0 + timedelta(seconds=200), window_s=120) is None
    assert label_rate(times[:2], now=T0) is None
    assert refill.round_seconds([3.0, None, 1.0, 8.0]) == 3.0 and refill.round_seconds([]) is None


def test_pace_round_trips_through_round_metrics():
    pace = Pace(1.25, 3.5)
    assert Pace.from_metrics({"pace": pace.as_dict()}) == pace
    assert Pace.from_metrics({}) == Pace(None, None)
    assert Pace.from_metrics({"pace": {"label_rate": "fast", "round_seconds": -1}}) == Pace(None, None)


# --------------------------------------------------------------------------- measured from rows
@pytest.mark.django_db
def test_pace_is_measured_from_annotation_times_and_round_durations(make_project, make_user):
    project = make_project(n_items=40)
    other = make_project(n_items=10)
    user = make_user("ann")
    now = timezone.now()
    items = list(Item.objects.filter(project=project).order_by("id"))
    for k, item in enumerate(items[:20]):  # one every 3 s, the newest 1 s ago
        a = Annotation.objects.create(item=item, annotator=user, action="label", label="cat")
        Annotation.objects.filter(pk=a.pk).update(created_at=now - timedelta(seconds=1 + 3 * (19 - k)))
    old = Annotation.objects.create(item=items[20], annotator=user, action="label", label="cat")
    Annotation.objects.filter(pk=old.pk).update(created_at=now - timedelta(seconds=600))  # outside the window
    a = Annotation.objects.create(item=Item.objects.filter(project=other).first(), annotator=user, action="label",
                                  label="cat")  # another project's label does not count
    for number, secs in ((1, 9.0), (2, 2.0), (3, 4.0), (4, 6.0)):
        r = Round.objects.create(project=project, number=number, status=Round.Status.DONE, strategy="margin",
                                 reason="low_water", finished_at=now)
        Round.objects.filter(pk=r.pk).update(created_at=now - timedelta(seconds=secs))
    Round.objects.create(project=project, number=5, status=Round.Status.FAILED, strategy="margin", finished_at=now)
    # Rounds the policy did not request do not count: the initial one waited for a worker to start.
    r = Round.objects.create(project=project, number=6, status=Round.Status.DONE, strategy="margin", reason="initial",
                             finished_at=now)
    Round.objects.filter(pk=r.pk).update(created_at=now - timedelta(seconds=60))
    pace = pace_measure(project=project, now=now)
    # 20 labels in the window, the oldest 58 s before now: 19 gaps over 58 s.
    assert pace.label_rate == pytest.approx(19 / 58, rel=1e-6)
    assert pace.round_seconds == pytest.approx(4.0)  # median of the newest three done rounds (6, 4, 2)
    # With the round being written counted in: median of (6, 4, 30).
    assert pace_measure(project=project, now=now, this_round_seconds=30.0).round_seconds == pytest.approx(6.0)


# --------------------------------------------------------------------------- the policy in the app
@pytest.fixture
def queued_project(make_project, make_round, make_user):
    user = make_user("ann")
    project = make_project(n_items=60, batch_size=20, refill_threshold=3,
                           members=[(user, Membership.Role.ANNOTATOR)])
    rnd = make_round(project)
    return project, user, rnd


def test_a_round_stores_the_pace_the_next_refill_reads(queued_project, make_round):
    project, _user, rnd = queued_project
    assert rnd.metrics["pace"] == {"label_rate": None, "round_seconds": None}  # round "test": not the policy's
    assert rnd.metrics["refill_point"] == 3  # no pace yet: the configured threshold
    nxt = make_round(project, reason="low_water")
    assert nxt.metrics["pace"]["round_seconds"] == pytest.approx(
        (nxt.finished_at - nxt.created_at).total_seconds(), abs=0.05)


def test_the_refill_point_follows_the_stored_pace(queued_project, monkeypatch):
    project, user, rnd = queued_project
    from annotate.tasks import rounds as task_module

    monkeypatch.setattr(task_module.round_run, "delay", lambda round_id: None)
    # The last round measured 2 labels/s and 4 s rounds: start below ceil(2 * 4 * 2) = 16 pending.
    Round.objects.filter(pk=rnd.pk).update(metrics={**rnd.metrics, "pace": Pace(2.0, 4.0).as_dict()})
    queue_lease(project=project, user=user, n=4)  # 16 pending: not below 16
    assert QueueEntry.objects.filter(project=project, state="pending").count() == 16
    assert round_maybe_request(project=project) is None
    queue_lease(project=project, user=user, n=5)  # 15 pending
    new = round_maybe_request(project=project)
    assert new is not None and new.reason == "low_water"
    # 20 items would land below the refill point: the batch grows to 16 + 8.
    assert new.batch_size == 24
    # One round at a time.
    assert round_maybe_request(project=project) is None


def test_without_a_pace_the_configured_threshold_and_batch_apply(queued_project, monkeypatch):
    project, user, rnd = queued_project
    from annotate.tasks import rounds as task_module

    monkeypatch.setattr(task_module.round_run, "delay", lambda round_id: None)
    Round.objects.filter(pk=rnd.pk).update(metrics={})
    queue_lease(project=project, user=user, n=17)  # 3 pending: not below 3
    assert round_maybe_request(project=project) is None
    queue_lease(project=project, user=user, n=18)  # 2 pending
    new = round_maybe_request(project=project)
    assert new is not None and new.batch_size == 20


def test_a_slow_round_grows_the_next_batch_through_real_labels_and_rounds(make_project, make_round, make_user,
                                                                        monkeypatch):
    # The whole chain: labels at 1/s -> a policy round that took 15 s (slower than the 20-item buffer
    # at threshold 3 lasts beyond the refill point) -> it stores that pace -> the next label starts the
    # next round early (below ceil(2 x 15 x 1) = 30 pending) with a grown batch, which the queue gets.
    from annotate.services.annotations import annotation_submit
    from annotate.tasks import rounds as task_module

    monkeypatch.setattr(task_module.round_run, "delay", lambda round_id: None)
    user = make_user("ann")
    project = make_project(n_items=150, batch_size=20, refill_threshold=3,
                           members=[(user, Membership.Role.ANNOTATOR)])
    make_round(project)
    truth = dict(Item.objects.filter(project=project).values_list("id", "ground_truth"))

    def label(n):
        for entry in queue_lease(project=project, user=user, n=n):
            annotation_submit(project=project, user=user, item_id=entry.item_id, label=truth[entry.item_id])

    label(18)  # 2 pending < 3: the policy asks for a round
    policy = Round.objects.get(project=project, status=Round.Status.QUEUED)
    assert policy.reason == "low_water" and policy.batch_size == 20  # no pace yet
    now = timezone.now()
    for k, a in enumerate(Annotation.objects.filter(item__project=project).order_by("-id")):
        Annotation.objects.filter(pk=a.pk).update(created_at=now - timedelta(seconds=k))  # one a second
    Round.objects.filter(pk=policy.pk).update(created_at=now - timedelta(seconds=15))  # a 15 s round
    before = (timezone.now() - now).total_seconds()
    policy = make_round(project)
    after = (timezone.now() - now).total_seconds()  # the pace is measured between before and after
    pace = Pace.from_metrics(policy.metrics)
    assert 15 + before <= pace.round_seconds <= 15 + after
    assert 17 / (17 + after) <= pace.label_rate <= 17 / (17 + before)  # 18 labels, the oldest 17 s before now
    expect_point = math.ceil(2 * pace.round_seconds * pace.label_rate)
    assert policy.metrics["refill_point"] == expect_point > 20  # a batch of 20 no longer covers it
    assert QueueEntry.objects.filter(project=project, state="pending").count() == 20
    # The first label of the new batch leaves 19 pending, below the refill point: the next round is
    # requested at once, sized to the refill point plus one round of labeling.
    label(1)
    grown = Round.objects.get(project=project, status=Round.Status.QUEUED)
    assert grown.reason == "low_water"
    assert grown.batch_size == expect_point + math.ceil(pace.round_seconds * pace.label_rate) > 20
    grown = make_round(project)
    assert grown.metrics["entries"] == grown.batch_size
    assert QueueEntry.objects.filter(round=grown, state="pending").count() == grown.batch_size


# --------------------------------------------------------------------------- progress throttling
def test_strategy_progress_reaches_the_database_and_browsers_a_few_times_per_second(queued_project, monkeypatch):
    _project, _user, rnd = queued_project
    pushes = []
    monkeypatch.setattr(rounds.realtime, "send_round_status", lambda r: pushes.append((r.progress,
                                                                                       r.progress_message)))
    clock = {"t": 100.0}
    monkeypatch.setattr(rounds.time, "monotonic", lambda: clock["t"])
    rnd._progress_at = -1e9
    for k in range(1, 201):  # 200 reports 10 ms apart (FIRAL's ROUND: one per pick) over 2 s
        clock["t"] += 0.01
        rounds._progress(rnd, k / 200, f"ROUND {k}/200", throttle=True)
    assert 2 / rounds.PROGRESS_INTERVAL_S <= len(pushes) <= 2 / rounds.PROGRESS_INTERVAL_S + 1
    stored = Round.objects.get(pk=rnd.pk)
    assert (stored.progress, stored.progress_message) == pushes[-1]  # the database holds the last one sent
    # Stage reports are never dropped.
    rounds._progress(rnd, 0.92, "writing the queue")
    assert pushes[-1] == (0.92, "writing the queue")


def test_a_firal_round_reports_progress_a_bounded_number_of_times(make_project, make_round, monkeypatch):
    project = make_project(n_items=120, dim=6, batch_size=30, strategy="firal")
    make_round(project)  # cold start
    ids = list(Item.objects.filter(project=project).values_list("id", flat=True)[:12])
    from django.contrib.auth import get_user_model

    user = get_user_model().objects.create_user("labeler")
    classes = project.classes
    Annotation.objects.bulk_create([Annotation(item_id=i, annotator=user, action="label", label=classes[k % 3])
                                    for k, i in enumerate(ids)])
    pushes = []
    real = rounds.realtime.send_round_status
    monkeypatch.setattr(rounds.realtime, "send_round_status", lambda r: (pushes.append(r.progress), real(r)))
    t = timezone.now()
    rnd = make_round(project)
    took = (timezone.now() - t).total_seconds()
    assert rnd.status == "done" and rnd.metrics["strategy_info"]["round_candidates"] > 0
    # Unthrottled, FIRAL alone reports 20 RELAX steps + 30 ROUND picks; stages add 5 (+ the final push).
    assert len(pushes) <= 6 + took / rounds.PROGRESS_INTERVAL_S + 1, (len(pushes), took)


# --------------------------------------------------------------------------- warm-up
def test_the_worker_warms_up_once_at_start_and_the_celery_signal_is_connected(settings, monkeypatch):
    import sys
    import time

    from tests.support import wait_for

    from celery.signals import worker_process_init

    import config.celery
    from annotate import warmup

    assert config.celery._warm_up_worker  # the app module connects the handler when it is imported
    monkeypatch.setattr(warmup, "_done", False)
    real = warmup.worker_warmup
    monkeypatch.setattr(warmup, "worker_warmup", lambda: (time.sleep(2.0), real())[1])  # a slow import
    t = time.monotonic()
    worker_process_init.send(sender="test@host")  # what every Celery pool process sends at start
    assert time.monotonic() - t < 1.0  # returns at once: a prefork child must report "up" within 4 s
    wait_for(lambda: warmup._done, 120, "the warm-up thread")
    assert warmup._done is True and "torch" in sys.modules and "selection.strategies.firal" in sys.modules
    assert "selection.quality.correctness" in sys.modules  # the round's quality step imports nothing new
    assert warmup.worker_warmup() is None  # once per process
    settings.LOUPE_WORKER_WARMUP = False
    monkeypatch.setattr(warmup, "_done", False)
    assert warmup.worker_warmup() is None and warmup._done is False
    monkeypatch.setattr(warmup, "_done", False)
    settings.LOUPE_WORKER_WARMUP = True
    assert warmup.worker_warmup() > 0
