"""Background jobs: import and export (queue ``cpu``), embeddings (queue ``gpu``).

Thin wrappers: each task takes a job id and calls one service, whose job runner
(``services.jobs.job_run``) claims the job, keeps its heartbeat, and records progress, the result
or the failure on the Job row.  They are
not retried automatically: a failed import or export fails for a reason the admin has to fix (the
reason is on the job), and re-running it is safe.
"""
from __future__ import annotations

from celery import shared_task
from django.db import close_old_connections

from ..services.alignment import alignment_execute
from ..services.embeddings import embedding_execute
from ..services.exports import export_execute
from ..services.final_model import final_model_execute
from ..services.imports import import_execute


def _run(execute, job_id: str) -> None:
    close_old_connections()
    try:
        execute(job_id=job_id)
    finally:
        close_old_connections()


@shared_task(name="annotate.tasks.import_run", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def import_run(job_id: str) -> None:
    _run(import_execute, job_id)


@shared_task(name="annotate.tasks.export_run", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def export_run(job_id: str) -> None:
    _run(export_execute, job_id)


@shared_task(name="annotate.tasks.embedding_compute", acks_late=True, reject_on_worker_lost=True,
             ignore_result=True)
def embedding_compute(job_id: str) -> None:
    _run(embedding_execute, job_id)


@shared_task(name="annotate.tasks.alignment_run", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def alignment_run(job_id: str) -> None:
    _run(alignment_execute, job_id)


@shared_task(name="annotate.tasks.final_model_run", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def final_model_run(job_id: str) -> None:
    _run(final_model_execute, job_id)
