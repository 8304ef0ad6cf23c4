"""Quality task: consensus, agreement and annotator accuracies after each round (queue ``cpu``)."""
from __future__ import annotations

from celery import shared_task
from django.db import close_old_connections


@shared_task(name="annotate.tasks.quality_refresh", acks_late=True, reject_on_worker_lost=True, ignore_result=True)
def quality_refresh_task(project_id: int) -> None:
    """Recompute project ``project_id``'s quality report.  Not retried: the next round refreshes it."""
    from ..models import Project  # noqa: PLC0415
    from ..services.quality import quality_refresh  # noqa: PLC0415

    close_old_connections()
    try:
        if Project.objects.filter(pk=project_id).exists():
            quality_refresh(project_id=project_id)
    finally:
        close_old_connections()
