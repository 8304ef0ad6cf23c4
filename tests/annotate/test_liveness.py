"""Heartbeats, claims and the sweeper (annotate/services/liveness.py): rows whose worker is gone are
re-run or failed, live ones are left alone, and sweepers running at once act once per row."""
from __future__ import annotations

import subprocess
import sys
import threading
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from annotate.models import Job, Round
from annotate.services import liveness
from annotate.services.jobs import job_create
from annotate.services.rounds import round_request


@pytest.fixture
def sent(monkeypatch):
    """Record what is published (round and job tasks) instead of sending it to a broker."""
    from annotate.tasks import jobs as job_tasks
    from annotate.tasks import rounds as round_tasks

    calls: list = []
    lock = threading.Lock()

    def record(name):
        def apply_async(args, **kw):
            with lock:
                calls.append((name, args[0]))
        return apply_async

    monkeypatch.setattr(round_tasks.round_run, "apply_async", record("round"))
    for task in (job_tasks.export_run, job_tasks.import_run, job_tasks.embedding_compute):
        monkeypatch.setattr(task, "apply_async", record("job"))
    return calls


def _running(rnd_or_job, *, silent_s: float, attempts: int = 1, worker: str = "elsewhere:123"):
    type(rnd_or_job).objects.filter(pk=rnd_or_job.pk).update(
        status="running", heartbeat_at=timezone.now() - timedelta(seconds=silent_s), attempts=attempts, worker=worker)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid  # exited and reaped: no process has this id now (reuse within a test is unlikely)


def test_a_round_whose_worker_went_silent_is_sent_again(make_project, sent, settings,
                                                       django_capture_on_commit_callbacks):
    project = make_project()
    rnd = round_request(project=project, reason="t")
    _running(rnd, silent_s=settings.LOUPE_LOST_AFTER_SECONDS + 5)
    with django_capture_on_commit_callbacks(execute=True):
        report = liveness.sweep()
    rnd.refresh_from_db()
    assert report.requeued == [f"round {rnd.pk}"]
    assert rnd.status == "queued" and rnd.worker == "" and "worker lost" in rnd.progress_message
    assert timezone.now() - rnd.heartbeat_at < timedelta(seconds=5)
    assert sent == [("round", rnd.pk)]
    # The next sweep sees a fresh row and does nothing.
    with django_capture_on_commit_callbacks(execute=True):
        assert not liveness.sweep()
    assert sent == [("round", rnd.pk)]


def test_a_live_round_is_left_alone(make_project, sent, settings, django_capture_on_commit_callbacks):
    rnd = round_request(project=make_project(), reason="t")
    _running(rnd, silent_s=settings.LOUPE_LOST_AFTER_SECONDS - 10)
    with django_capture_on_commit_callbacks(execute=True):
        assert not liveness.sweep()
    rnd.refresh_from_db()
    assert rnd.status == "running" and sent == []


def test_a_round_lost_on_every_attempt_is_failed_and_the_project_gets_its_next_round(
        make_project, sent, settings, django_capture_on_commit_callbacks):
    settings.LOUPE_RETRY_AFTER_FAILURE_SECONDS = 0
    project = make_project()
    rnd = round_request(project=project, reason="t")
    _running(rnd, silent_s=settings.LOUPE_LOST_AFTER_SECONDS + 1, attempts=settings.LOUPE_MAX_ATTEMPTS)
    with django_capture_on_commit_callbacks(execute=True):
        report = liveness.sweep()
    rnd.refresh_from_db()
    assert report.failed == [f"round {rnd.pk}"] and sent == []
    assert rnd.status == "failed" and rnd.failure.startswith("lost:") and "elsewhere:123" in rnd.failure
    nxt = round_request(project=project, reason="t")
    assert nxt is not None and nxt.number == rnd.number + 1


def test_a_job_still_queued_long_after_it_was_sent_is_sent_again(make_project, sent, settings,
                                                               django_capture_on_commit_callbacks):
    project = make_project()
    job = job_create(project=project, kind=Job.Kind.EXPORT, params={"format": "csv"})
    fresh = job_create(project=project, kind=Job.Kind.EXPORT, params={"format": "csv"})
    Job.objects.filter(pk=job.pk).update(
        created_at=timezone.now() - timedelta(seconds=settings.LOUPE_QUEUED_STALE_SECONDS + 1))
    with django_capture_on_commit_callbacks(execute=True):
        report = liveness.sweep()
    assert report.resent == [f"job {job.pk}"] and sent == [("job", str(job.pk))]
    assert Job.objects.get(pk=fresh.pk).status == "queued"


def test_claim_refuses_a_live_run_and_takes_over_a_lost_one(make_project, settings):
    rnd = round_request(project=make_project(), reason="t")
    _running(rnd, silent_s=1, worker="another-host:42")
    assert liveness.claim(Round, rnd.pk) is False  # alive elsewhere: a duplicate message does nothing
    _running(rnd, silent_s=1, worker=f"{liveness._HOST}:{_dead_pid()}")
    assert liveness.claim(Round, rnd.pk) is True  # its pool process on this host is gone: take over at once
    rnd.refresh_from_db()
    assert rnd.worker == liveness.worker_id() and rnd.attempts == 2
    _running(rnd, silent_s=settings.LOUPE_LOST_AFTER_SECONDS + 1, worker="another-host:42")
    assert liveness.claim(Round, rnd.pk) is True  # silent past the limit
    Round.objects.filter(pk=rnd.pk).update(status="done")
    assert liveness.claim(Round, rnd.pk) is False


@pytest.mark.django_db(transaction=True)
def test_the_heartbeat_thread_stamps_the_running_row(make_project, settings):
    settings.LOUPE_HEARTBEAT_SECONDS = 0.2
    rnd = round_request(project=make_project(), reason="t")
    assert liveness.claim(Round, rnd.pk)
    Round.objects.filter(pk=rnd.pk).update(heartbeat_at=timezone.now() - timedelta(hours=1))
    with liveness.Heartbeat(Round, rnd.pk):
        time.sleep(1.0)
    beat = Round.objects.get(pk=rnd.pk).heartbeat_at
    assert timezone.now() - beat < timedelta(seconds=1)


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_sweepers_running_at_once_send_a_lost_round_once(make_project, sent, settings):
    from tests.support import db_is_postgres, need

    need(db_is_postgres(), "concurrent sweepers need PostgreSQL (DATABASE_URL=postgres://...)")
    rnd = round_request(project=make_project(), reason="t")
    sent.clear()
    _running(rnd, silent_s=settings.LOUPE_LOST_AFTER_SECONDS + 5)
    barrier = threading.Barrier(6)
    reports = []

    def run():
        from django.db import connection

        barrier.wait()
        try:
            reports.append(liveness.sweep())
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sum(len(r.requeued) for r in reports) == 1
    assert sent == [("round", rnd.pk)]
    assert Round.objects.get(pk=rnd.pk).status == "queued"
