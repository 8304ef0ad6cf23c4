"""Background job bookkeeping (import, embedding, export): create, progress, finish, fail.

Progress is written to the Job row and pushed to the project's group through
``annotate.realtime.send_job_progress`` (the only module that talks to browsers).  Progress
writes are throttled so a job over 100k items does not turn into 100k UPDATEs.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from django.db import transaction
from django.utils import timezone

from ..models import Job, Project
from . import dispatch, liveness

log = logging.getLogger(__name__)

_MIN_INTERVAL_S = 0.5


def _push(job: Job) -> None:
    from .. import realtime  # noqa: PLC0415  (lazy: realtime imports channels)

    realtime.send_job_progress(job)


def job_create(*, project: Project | None, kind: str, params: dict[str, Any], user=None) -> Job:
    if kind not in Job.Kind.values:
        raise ValueError(f"job kind {kind!r} is not one of {Job.Kind.values}")
    return Job.objects.create(project=project, kind=kind, params=params, created_by=user)


def job_enqueue(*, job: Job) -> None:
    """Send the job's Celery task after the surrounding transaction commits.

    An unreachable broker fails the job with the reason and raises ``dispatch.BrokerUnavailable``
    (503): no job stays queued for a task that was never sent.
    """
    from ..tasks import jobs as tasks  # noqa: PLC0415

    task = {Job.Kind.IMPORT: tasks.import_run, Job.Kind.EXPORT: tasks.export_run,
            Job.Kind.EMBED: tasks.embedding_compute}[job.kind]
    job_id = str(job.pk)

    def failed(reason: str) -> None:
        Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(
            status=Job.Status.FAILED, error=reason, message=reason, finished_at=timezone.now())
        job.refresh_from_db()
        _push(job)

    dispatch.enqueue_after_commit(task=task, args=[job_id], what=f"the {job.kind} job", on_failure=failed)


class JobNotClaimed(Exception):
    """This copy of the job's task must not run it: the job is done, failed, or running on a live worker."""


def job_start(*, job: Job) -> Job:
    """Claim the job for this worker (``liveness.claim``) and mark it started; ``JobNotClaimed`` if not ours."""
    if not liveness.claim(Job, job.pk):
        raise JobNotClaimed(str(job.pk))
    job.refresh_from_db(fields=["status", "attempts", "heartbeat_at", "worker"])
    job.progress = 0.0
    job.error = ""
    job.message = "started"
    job.save(update_fields=["progress", "error", "message"])
    _push(job)
    return job


def progress_reporter(job: Job, *, start: float = 0.0, end: float = 1.0) -> Callable[[float, str], None]:
    """A ``progress(fraction, message)`` callback mapping [0, 1] onto [start, end] of the job.

    Writes go through ``Job.objects.filter(...).update`` (not ``save``) so they are safe to make
    from inside a transaction the job will roll back: the row update is rolled back too, but the
    push has reached the browser, which is all progress is for.
    """
    last = [0.0]

    def report(fraction: float, message: str = "") -> None:
        now = time.monotonic()
        value = start + (end - start) * min(max(float(fraction), 0.0), 1.0)
        if fraction < 1.0 and now - last[0] < _MIN_INTERVAL_S:
            return
        last[0] = now
        job.progress = value
        job.message = message[:500]
        Job.objects.filter(pk=job.pk).update(progress=value, message=job.message)
        _push(job)

    return report


def job_finish(*, job: Job, result: dict[str, Any], result_file: str = "", message: str = "done") -> Job:
    job.status = Job.Status.DONE
    job.progress = 1.0
    job.result = result
    job.result_file = result_file
    job.message = message[:500]
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "progress", "result", "result_file", "message", "finished_at"])
    _push(job)
    return job


def job_fail(*, job: Job, error: str, result: dict[str, Any] | None = None) -> Job:
    job.status = Job.Status.FAILED
    job.error = error
    job.message = error.splitlines()[0][:500] if error else "failed"
    if result is not None:
        job.result = result
    job.finished_at = timezone.now()
    job.save(update_fields=["status", "error", "message", "result", "finished_at"])
    _push(job)
    return job


def job_payload(job: Job) -> dict[str, Any]:
    """JSON view of a job for the status API."""
    return {
        "id": str(job.pk),
        "project": job.project_id,
        "kind": job.kind,
        "status": job.status,
        "progress": job.progress,
        "message": job.message,
        "error": job.error,
        "result": job.result,
        "download": f"/jobs/{job.pk}/download" if job.result_file and job.status == Job.Status.DONE else None,
        "created_at": job.created_at.isoformat() if job.created_at else None,
        "finished_at": job.finished_at.isoformat() if job.finished_at else None,
    }


def stats_push(*, project_id: int) -> None:
    """Push fresh dashboard statistics (``stats.updated``) to the project's group."""
    from .. import realtime  # noqa: PLC0415
    from ..selectors_stats import project_stats  # noqa: PLC0415

    project = Project.objects.get(pk=project_id)
    realtime.send_stats_updated(project_id, project_stats(project=project))


def jobs_resume_orphans() -> list[str]:
    """Re-enqueue jobs left queued or running by a previous process.

    For the embedded mode only (the memory broker loses its tasks when the process stops); with a
    real broker the tasks are still there (``acks_late``).  Every job kind is safe to run again: an
    import skips what already landed (checksums), an export writes a new file, an embedding a new
    version.
    """
    ids = []
    for job in Job.objects.filter(status__in=[Job.Status.QUEUED, Job.Status.RUNNING]):
        Job.objects.filter(pk=job.pk).update(status=Job.Status.QUEUED, progress=0.0, message="resumed",
                                             heartbeat_at=timezone.now(), worker="")
        try:
            with transaction.atomic():
                job_enqueue(job=job)
        except dispatch.BrokerUnavailable:
            continue  # failed with the reason
        ids.append(str(job.pk))
    return ids
