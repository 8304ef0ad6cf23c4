"""Heartbeats and the sweeper: no round or job is left waiting for a worker that is gone.

A round or job row carries ``heartbeat_at`` (its last sign of life) and ``worker`` ("host:pid" of the
process running it):

- **claim** (:func:`claim`): a task starts work only by moving the row to ``running`` under a row lock,
  stamping itself as the worker.  A row that is done or failed, or running on another live worker, is
  not claimed (the task returns without doing anything), so a duplicate message (sent again by the
  sweeper, or redelivered by the broker after its visibility timeout) never runs a job twice at once.
  A running row is claimable again when its heartbeat is older than ``LOUPE_LOST_AFTER_SECONDS``, or
  at once when its worker was a process on this host that no longer exists (a killed pool process
  whose message comes back through ``reject_on_worker_lost``).
- **heartbeat** (:class:`Heartbeat`): while the task runs, a thread stamps ``heartbeat_at`` every
  ``LOUPE_HEARTBEAT_SECONDS`` (long strategy steps report no progress, so beats cannot ride on it).
  If the whole worker is killed, the beats stop.
- **sweep** (:func:`sweep`): a running row silent for ``LOUPE_LOST_AFTER_SECONDS`` is lost: it is
  put back to ``queued`` and sent again, or failed once it has had ``LOUPE_MAX_ATTEMPTS`` runs (a task
  that kills its worker every time must not loop).  A row still queued after
  ``LOUPE_QUEUED_STALE_SECONDS`` (its message lost with a broker's data) is sent again.  Every change
  is a compare-and-set on (status, heartbeat_at), so sweepers in several processes at once never act
  twice on one row.  The sweep runs at worker start-up and every ``LOUPE_SWEEP_SECONDS`` in each worker
  and in ``loupe_serve`` (:func:`start_sweeper`): Celery beat is not needed.  Every
  ``LOUPE_RECOUNT_SECONDS`` it also checks the kept pending-queue and label counts and repairs any that
  drifted (``services/queue_counts.py``, ``services/label_counts.py``).
"""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta

from django.conf import settings
from django.db import DatabaseError, close_old_connections, connection, transaction
from django.db.models import F
from django.db.models.functions import Coalesce
from django.utils import timezone

from ..models import Job, Round
from .label_counts import label_counts_check
from .queue_counts import queue_counts_check

log = logging.getLogger(__name__)

_HOST = socket.gethostname()


def worker_id() -> str:
    return f"{_HOST}:{os.getpid()}"[:200]


def _gone_here(worker: str) -> bool:
    """True when ``worker`` was a process on this host that no longer exists."""
    host, _, pid = worker.rpartition(":")
    if host != _HOST or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _lost_before():
    return timezone.now() - timedelta(seconds=settings.LOUPE_LOST_AFTER_SECONDS)


# --------------------------------------------------------------------------- claim + heartbeat
def claim(model, pk) -> bool:
    """Move row ``pk`` of ``model`` (Round or Job) to running for this process; False: leave it alone."""
    now = timezone.now()
    with transaction.atomic():
        row = model.objects.select_for_update().filter(pk=pk).first()
        if row is None or row.status not in (model.Status.QUEUED, model.Status.RUNNING):
            return False
        if row.status == model.Status.RUNNING and row.worker and row.worker != worker_id():
            alive = row.heartbeat_at is not None and row.heartbeat_at > _lost_before()
            if alive and not _gone_here(row.worker):
                log.info("%s %s is running on %s; this copy of the task does nothing", model.__name__, pk, row.worker)
                return False
        fields = {"status": model.Status.RUNNING, "heartbeat_at": now, "worker": worker_id(),
                  "attempts": F("attempts") + 1}
        if model is Round:
            fields["started_at"] = now
        model.objects.filter(pk=pk).update(**fields)
    return True


class Heartbeat:
    """``with Heartbeat(Round, pk): ...`` stamps the row every ``LOUPE_HEARTBEAT_SECONDS`` from a thread.

    Only beats a row this process claimed and that is still running.  Inside a transaction (tests that
    run a round in the test's transaction) the row is invisible to the thread's own connection, so no
    thread is started.
    """

    def __init__(self, model, pk) -> None:
        self.model, self.pk = model, pk
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def beat(self) -> int:
        return self.model.objects.filter(pk=self.pk, worker=worker_id(), status=self.model.Status.RUNNING).update(
            heartbeat_at=timezone.now())

    def _run(self) -> None:
        try:
            while not self._stop.wait(settings.LOUPE_HEARTBEAT_SECONDS):
                try:
                    self.beat()
                except DatabaseError as exc:  # a database blip: the next beat tries again
                    log.warning("heartbeat of %s %s failed: %s", self.model.__name__, self.pk, exc)
        finally:
            connection.close()

    def __enter__(self) -> "Heartbeat":
        if not connection.in_atomic_block:
            self._thread = threading.Thread(target=self._run, name=f"loupe-heartbeat-{self.pk}", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)


# --------------------------------------------------------------------------- sweep
@dataclass
class SweepReport:
    requeued: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    resent: list[str] = field(default_factory=list)
    recounted: list[str] = field(default_factory=list)  # projects whose kept pending count had drifted

    def __bool__(self) -> bool:
        return bool(self.requeued or self.failed or self.resent or self.recounted)


def _enqueue(model, row) -> None:
    from .jobs import job_enqueue  # noqa: PLC0415
    from .rounds import round_enqueue  # noqa: PLC0415

    if model is Round:
        round_enqueue(row)
    else:
        job_enqueue(job=row)


def _fail(model, row, reason: str) -> bool:
    now = timezone.now()
    fields = {"status": model.Status.FAILED, "finished_at": now}
    if model is Round:
        fields.update(failure=reason, progress_message=reason[:200])
    else:
        fields.update(error=reason, message=reason[:500])
    done = model.objects.filter(pk=row.pk, status=row.status, heartbeat_at=row.heartbeat_at).update(**fields)
    if done:
        _push(model, row.pk)
    return bool(done)


def _push(model, pk) -> None:
    from .. import realtime  # noqa: PLC0415

    row = model.objects.filter(pk=pk).first()
    if row is not None:
        (realtime.send_round_status if model is Round else realtime.send_job_progress)(row)


def _resend(model, row, message: str) -> bool:
    """Back to queued with a fresh timestamp (compare-and-set), then sent again after commit."""
    from .dispatch import BrokerUnavailable  # noqa: PLC0415

    fields = {"status": model.Status.QUEUED, "heartbeat_at": timezone.now(), "worker": "", "progress": 0.0}
    fields["progress_message" if model is Round else "message"] = message
    try:
        with transaction.atomic():
            if not model.objects.filter(pk=row.pk, status=row.status, heartbeat_at=row.heartbeat_at).update(**fields):
                return False  # another sweeper (or the worker) got there first
            _enqueue(model, model.objects.get(pk=row.pk))
    except BrokerUnavailable:
        pass  # the enqueue helper failed the row with the reason
    return True


def sweep() -> SweepReport:
    """One pass over active rounds and jobs (see the module docstring).  Safe to run concurrently."""
    report = SweepReport()
    lost_before = _lost_before()
    stale_before = timezone.now() - timedelta(seconds=settings.LOUPE_QUEUED_STALE_SECONDS)
    for model in (Round, Job):
        seen = model.objects.annotate(seen=Coalesce("heartbeat_at", "created_at"))
        for row in seen.filter(status=model.Status.RUNNING, seen__lt=lost_before):
            silent = int((timezone.now() - row.seen).total_seconds())
            name = f"{model.__name__.lower()} {row.pk}"
            if row.attempts >= settings.LOUPE_MAX_ATTEMPTS:
                reason = (f"lost: its worker ({row.worker or 'unknown'}) stopped answering {silent} s ago, "
                          f"after {row.attempts} attempt(s); not retried again")
                if _fail(model, row, reason):
                    log.error("%s %s", name, reason)
                    report.failed.append(name)
            elif _resend(model, row, f"re-run: worker lost (silent {silent} s)"):
                log.warning("%s: worker %s silent for %d s; sent again", name, row.worker, silent)
                report.requeued.append(name)
        for row in seen.filter(status=model.Status.QUEUED, seen__lt=stale_before):
            if _resend(model, row, "sent again: still queued"):
                log.warning("%s %s: still queued after %d s; sent again", model.__name__.lower(), row.pk,
                            settings.LOUPE_QUEUED_STALE_SECONDS)
                report.resent.append(f"{model.__name__.lower()} {row.pk}")
    if _recount_due():
        report.recounted = sorted({f"project {pk}" for pk in [*queue_counts_check(), *label_counts_check()]})
    return report


_last_recount: float | None = None


def _recount_due() -> bool:
    """The kept pending and label counts are checked at a process's first sweep and then every
    ``LOUPE_RECOUNT_SECONDS`` (0: never) - grouped counts of every pending entry and current label, too
    dear for each sweep."""
    global _last_recount
    every = settings.LOUPE_RECOUNT_SECONDS
    now = time.monotonic()
    if every <= 0 or (_last_recount is not None and now - _last_recount < every):
        return False
    _last_recount = now
    return True


def sweep_safely() -> SweepReport | None:
    """:func:`sweep` for background threads: a database outage is logged, never raised."""
    close_old_connections()
    try:
        return sweep()
    except DatabaseError as exc:
        log.warning("sweep skipped: %s", exc)
        return None
    finally:
        connection.close()  # hold no connection between sweeps (nor across a prefork pool's fork)


_sweeper_started = threading.Lock()
_sweeper: threading.Thread | None = None


def start_sweeper(*, interval: float | None = None) -> threading.Thread | None:
    """Start the periodic sweep in a daemon thread of this process (once per process)."""
    global _sweeper
    every = settings.LOUPE_SWEEP_SECONDS if interval is None else interval
    if every <= 0:
        return None
    with _sweeper_started:
        if _sweeper is not None and _sweeper.is_alive():
            return _sweeper

        def run() -> None:
            pause = threading.Event()
            while True:
                try:
                    sweep_safely()
                except Exception:
                    log.exception("sweep failed")
                pause.wait(every)

        _sweeper = threading.Thread(target=run, name="loupe-sweeper", daemon=True)
        _sweeper.start()
        return _sweeper
