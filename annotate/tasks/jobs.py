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


def _job_task(name: str, execute):
    """The Celery task ``annotate.tasks.<name>``: takes a job id and runs ``execute`` on it, with the
    database connections closed before and after (a worker process outlives many tasks)."""

    def run(job_id: str) -> None:
        close_old_connections()
        try:
            execute(job_id=job_id)
        finally:
            close_old_connections()

    run.__name__ = run.__qualname__ = name
    return shared_task(name=f"annotate.tasks.{name}", acks_late=True, reject_on_worker_lost=True,
                       ignore_result=True)(run)


import_run = _job_task("import_run", import_execute)
export_run = _job_task("export_run", export_execute)
embedding_compute = _job_task("embedding_compute", embedding_execute)
alignment_run = _job_task("alignment_run", alignment_execute)
final_model_run = _job_task("final_model_run", final_model_execute)
