"""Round task: train the head and write the next batch (queue ``gpu``)."""
from __future__ import annotations

from celery import shared_task
from django.db import close_old_connections

from ..services.rounds import round_execute


@shared_task(name="annotate.tasks.round_run", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def round_run(round_id: int) -> None:
    """Run round ``round_id``.  A failure marks the round failed (with the reason) and is not retried
    automatically: the next label after ``LOUPE_RETRY_AFTER_FAILURE_SECONDS`` starts a fresh round instead."""
    close_old_connections()
    try:
        round_execute(round_id=round_id)
    finally:
        close_old_connections()
