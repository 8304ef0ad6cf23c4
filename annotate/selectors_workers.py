"""Why a job is still queued: which queue it waits on and what the workers are busy with (issue 12, row 13).

A job sent to a worker that serves both queues (``-Q gpu,cpu``, the single-worker set-up) waits
behind a long round; the dashboard says so instead of showing a job that seems stuck.  Production
runs the ``cpu`` queue on its own worker (docker/compose.yaml, README "Production mode").
"""
from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.utils import timezone

from .models import Job, Round

#: A job queued for less than this is simply about to start; say nothing yet.
WAIT_NOTICE_AFTER = timedelta(seconds=5)


def task_queue(task_name: str) -> str:
    return settings.CELERY_TASK_ROUTES.get(task_name, {}).get("queue", settings.CELERY_TASK_DEFAULT_QUEUE)


def _age(since) -> str:
    s = int((timezone.now() - since).total_seconds()) if since else 0
    return f"{s // 60} min" if s >= 120 else f"{s} s"


def job_waiting(job: Job) -> str | None:
    """A sentence for a job queued longer than WAIT_NOTICE_AFTER, naming its queue and what runs meanwhile."""
    if job.status != Job.Status.QUEUED or job.created_at is None or \
            timezone.now() - job.created_at < WAIT_NOTICE_AFTER:
        return None
    from .services.jobs import JOB_TASKS  # noqa: PLC0415 - services import payloads, which use this

    queue = task_queue(JOB_TASKS[job.kind])
    busy = []
    for rnd in Round.objects.filter(status=Round.Status.RUNNING).order_by("started_at")[:3]:
        where = "this project" if rnd.project_id == job.project_id else "another project"
        busy.append(f"round {rnd.number} of {where} (running {_age(rnd.started_at)})")
    for other in Job.objects.filter(status=Job.Status.RUNNING).exclude(pk=job.pk).order_by("created_at")[:3]:
        where = "this project" if other.project_id == job.project_id else "another project"
        busy.append(f"{other.kind} job of {where} (running {_age(other.heartbeat_at or other.created_at)})")
    text = f"waiting for a free worker on the '{queue}' queue"
    if busy:
        return f"{text}; workers are busy with {', '.join(busy)}"
    return f"{text}; no worker has taken it yet (is one running for '{queue}'?)"
