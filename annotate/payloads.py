"""One JSON shape per model: what the API answers, the dashboard statistics hold and the pushes carry.

Every place that shows a round, a job, a queue entry or an annotation to a browser takes it from
here, so the keys agree everywhere (``realtime.py`` wraps these in its typed messages).  URLs come
from ``reverse()``; no template, view or script spells one out.
"""
from __future__ import annotations

from typing import Any, TypedDict

from django.urls import reverse

from . import storage
from .models import Annotation, Job, Project, QueueEntry, Round
from .selectors_workers import job_waiting


class RoundPayload(TypedDict):
    id: int
    number: int
    status: str
    reason: str
    strategy: str
    progress: float
    message: str  # what the worker is doing now (``Round.progress_message``)
    failure: str
    labeled_count: int
    batch_size: int
    timings: dict[str, float]
    wait_s: float | None  # queued -> started
    run_s: float | None  # started -> finished
    finished_at: str | None


class JobPayload(TypedDict):
    id: str
    project: int | None
    kind: str
    status: str
    progress: float
    message: str
    error: str
    result: dict[str, Any]
    download: str | None  # URL of the export file once there is one
    created_at: str | None
    finished_at: str | None
    waiting: str | None  # why a queued job has not started (selectors_workers.job_waiting)


def _iso(dt) -> str | None:
    return dt.isoformat() if dt else None


def _seconds(a, b) -> float | None:
    return (b - a).total_seconds() if a and b else None


def round_payload(rnd: Round) -> RoundPayload:
    return {
        "id": rnd.pk,
        "number": rnd.number,
        "status": rnd.status,
        "reason": rnd.reason,
        "strategy": rnd.strategy,
        "progress": float(rnd.progress),
        "message": rnd.progress_message,
        "failure": rnd.failure,
        "labeled_count": rnd.labeled_count,
        "batch_size": rnd.batch_size,
        "timings": rnd.timings,
        "wait_s": _seconds(rnd.created_at, rnd.started_at),
        "run_s": _seconds(rnd.started_at, rnd.finished_at),
        "finished_at": _iso(rnd.finished_at),
    }


def job_download_url(job: Job) -> str | None:
    if job.status != Job.Status.DONE or not job.result_file:
        return None
    return reverse("job_download", args=[job.pk])


def job_payload(job: Job) -> JobPayload:
    return {
        "id": str(job.pk),
        "project": job.project_id,
        "kind": job.kind,
        "status": job.status,
        "progress": float(job.progress),
        "message": job.message,
        "error": job.error,
        "result": job.result,
        "download": job_download_url(job),
        "created_at": _iso(job.created_at),
        "finished_at": _iso(job.finished_at),
        "waiting": job_waiting(job),
    }


def project_ws_url(project_id: int) -> str:
    """The WebSocket a page opens for the project's pushes (``routing.py``)."""
    return reverse("project_ws", urlconf="annotate.routing", args=[project_id])


def item_image_url(item_id: int) -> str:
    """The permission-checked image view (admin, review): a Django request with session and membership."""
    return reverse("item_image", args=[item_id])


def entry_image_url(entry: QueueEntry) -> str:
    """A leased item's image as a short-lived signed URL, served without a database query
    (``image_urls.py``).  ``entry.item`` should be loaded with the entry (``select_related``)."""
    from .image_urls import image_url  # noqa: PLC0415

    return image_url(entry.item_id, storage.display_relpath(entry.item.file))


def entry_payload(entry: QueueEntry, *, project: Project | None = None) -> dict[str, Any]:
    """A leased item as the labeling page shows it.  With ``project``, also the model's candidate classes
    and, once it is right often enough, its suggestion (``services.candidates.offer``; never on audit items,
    whose labels must not lean on the model they measure)."""
    from .services.candidates import offer  # noqa: PLC0415 - services import this module

    return {
        **(offer(entry, project=project) if project is not None else {}),
        "entry_id": entry.pk,
        "item_id": entry.item_id,
        "image_url": entry_image_url(entry),
        "round": entry.round.number if entry.round_id else None,
        "rank": entry.rank,
        "lease_expires_at": _iso(entry.lease_expires_at),
    }


def annotation_payload(ann: Annotation) -> dict[str, Any]:
    return {
        "id": ann.pk,
        "item_id": ann.item_id,
        "action": ann.action,
        "label": ann.label,
        "origin": ann.origin,
        "client_id": str(ann.client_id) if ann.client_id else None,
        "created_at": _iso(ann.created_at),
    }
