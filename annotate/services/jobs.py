"""Background jobs (import, embedding, export): create, enqueue, and run them.

:func:`job_run` owns the life of a job: it marks the job started, hands the work a progress
callback, and finishes the job with the work's :class:`JobOutcome` or fails it with the reason.
The services only say what the work is (``import_execute``, ``export_execute``,
``embedding_execute``).

Progress is written to the Job row and pushed to the project's group through
``annotate.realtime.send_job_progress`` (the only module that talks to browsers).  Progress
writes are throttled so a job over 100k items does not turn into 100k UPDATEs.

Tasks import services, never the other way round: a job's task is sent by its registered name
(:data:`JOB_TASKS`) through the Celery app's registry.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from django.db import transaction
from django.utils import timezone

from ..models import Job, Project
from . import dispatch, liveness
from .failures import internal_error

log = logging.getLogger(__name__)

_MIN_INTERVAL_S = 0.5


def _push(job: Job) -> None:
    from .. import realtime  # noqa: PLC0415  (lazy: realtime imports channels)

    realtime.send_job_progress(job)


def job_create(*, project: Project | None, kind: str, params: dict[str, Any], user=None) -> Job:
    if kind not in Job.Kind.values:
        raise ValueError(f"job kind {kind!r} is not one of {Job.Kind.values}")
    return Job.objects.create(project=project, kind=kind, params=params, created_by=user)


#: The Celery task (by its registered name, ``annotate/tasks/jobs.py``) that runs each kind of job.
JOB_TASKS = {
    Job.Kind.IMPORT: "annotate.tasks.import_run",
    Job.Kind.EXPORT: "annotate.tasks.export_run",
    Job.Kind.EMBED: "annotate.tasks.embedding_compute",
    Job.Kind.ALIGN: "annotate.tasks.alignment_run",
    Job.Kind.FINAL: "annotate.tasks.final_model_run",
}


def job_enqueue(*, job: Job) -> None:
    """Send the job's Celery task after the surrounding transaction commits.

    An unreachable broker fails the job with the reason and raises ``dispatch.BrokerUnavailable``
    (503): no job stays queued for a task that was never sent.
    """
    job_id = str(job.pk)

    def failed(reason: str) -> None:
        Job.objects.filter(pk=job_id, status=Job.Status.QUEUED).update(
            status=Job.Status.FAILED, error=reason, message=reason, finished_at=timezone.now())
        job.refresh_from_db()
        _push(job)

    dispatch.enqueue_after_commit(task=JOB_TASKS[job.kind], args=[job_id], what=f"the {job.kind} job",
                                  on_failure=failed)


class JobNotClaimed(Exception):
    """This copy of the job's task must not run it: the job is done, failed, or running on a live worker."""


Progress = Callable[[float, str], None]


@dataclass
class JobOutcome:
    """What a job's work hands back to :func:`job_run`."""

    result: dict[str, Any]
    message: str
    result_file: str = ""  # relative to MEDIA_ROOT (exports)
    stats_changed: bool = False  # push fresh dashboard statistics once the job is done


def job_run(*, job_id: str, work: Callable[[Job, Progress], JobOutcome],
            expected: tuple[type[Exception], ...] = (ValueError,)) -> Job:
    """Run job ``job_id``: claim and start it, call ``work(job, progress)`` under a heartbeat
    (``liveness.Heartbeat``), finish it with the outcome.  A copy of the task that may not claim the
    job (done, failed, or running on a live worker) does nothing and returns the job as it is.

    An ``expected`` error is the input's fault (a bad file, a missing model): the job fails with its
    message, which names the problem, and the call returns.  Any other error is unexpected: its text
    may carry anything (a path, bytes a hostile model read), so the job shows a generic message with
    a reference (``failures.internal_error``), the log gets the traceback, and the error is raised again.
    """
    job = Job.objects.select_related("project", "created_by").get(pk=job_id)
    try:
        job_start(job=job)
    except JobNotClaimed:
        return job  # liveness.claim logged why
    try:
        with liveness.Heartbeat(Job, job.pk):
            outcome = work(job, progress_reporter(job))
    except expected as exc:
        return job_fail(job=job, error=str(exc))
    except Exception as exc:
        job_fail(job=job, error=internal_error(what=f"{job.get_kind_display().lower()} job {job.pk}", exc=exc,
                                               logger=log))
        raise
    job = job_finish(job=job, result=outcome.result, result_file=outcome.result_file, message=outcome.message)
    if outcome.stats_changed and job.project_id is not None:
        stats_push(project_id=job.project_id)
    return job


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


def progress_reporter(job: Job, *, start: float = 0.0, end: float = 1.0) -> Progress:
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
