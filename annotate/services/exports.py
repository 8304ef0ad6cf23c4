"""Exporting a project's labels, streamed so memory stays bounded however many items there are.

Items are read in keyset-paginated chunks (``id > last`` ordered by id, ``CHUNK`` at a time) with
their final labels (``selectors_labels.final_labels``) and, optionally, the latest model's
prediction; each writer appends a chunk at a time to the output file.  Formats:

- ``label_studio``: Label Studio JSON tasks (``data.image``, ``annotations[].result`` of type
  ``choices``, ``predictions`` for unlabeled items when asked), for a labeling config of
  ``<Image name="image" value="$image"/><Choices name="choice" toName="image">...</Choices>``.
  ``completed_by`` is left out (Label Studio wants one of its own user ids there and assigns the
  importing user); the Loupe annotator travels as ``loupe_annotator``.
- ``json_min``: Label Studio JSON_MIN (one flat object per labeled item).
- ``csv``: one row per item: image, label, annotator, timestamps, (prediction, confidence).
- ``coco``: COCO-style classification (``images``, ``categories``, ``annotations`` with ``category_id``).
- ``imagefolder``: a zip of ``<class>/<file>`` for the labeled items.
- ``parquet``: columns image, label, annotator, labeled_at, ... (pyarrow, one row group per chunk).

Image references are the item's original relative path (Label Studio: a local-files URL of it),
so a manifest export re-imports against the same image folder.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Callable, Iterator

import numpy as np
from django.utils import timezone

from .. import storage
from ..models import Item, Job, Project, QueueEntry, Round
from ..selectors_labels import final_labels
from . import jobs as job_services
from .export_writers import BINARY_WRITERS, LS_LOCAL_PREFIX, ORIGINS_FILE, TEXT_WRITERS

log = logging.getLogger(__name__)

CHUNK = 2000
EXPORTS_KEPT = 20  # finished export files kept per project; older ones are deleted
FORMATS = {
    "label_studio": ("json", "Label Studio JSON"),
    "json_min": ("json", "Label Studio JSON_MIN"),
    "csv": ("csv", "CSV"),
    "coco": ("json", "COCO-style classification JSON"),
    "imagefolder": ("zip", "ImageFolder zip (<class>/<file>)"),
    "parquet": ("parquet", "Parquet"),
}

Progress = Callable[[float, str], None]


@dataclass
class Row:
    item_id: int
    image: str  # original relative path
    file: str  # storage path relative to MEDIA_ROOT
    width: int
    height: int
    ground_truth: str
    label: str = ""
    annotator: str = ""
    origin: str = ""  # how the label came: manual, suggestion, candidate, prelabel (Annotation.Origin)
    annotation_id: int | None = None
    labeled_at: datetime | None = None
    created_at: datetime | None = None
    prediction: str = ""
    confidence: float | None = None


class _Predictor:
    """Predictions of the latest trained head (``Round.model_file``: npz with coef/intercept)."""

    def __init__(self, project: Project):
        self.ok = False
        rnd = (Round.objects.filter(project=project, status=Round.Status.DONE).exclude(model_file="")
               .order_by("-number").first())
        self.round = rnd
        if rnd is None or not project.embedding_file:
            return
        try:
            with np.load(storage.media_path(rnd.model_file)) as z:
                self.coef = np.asarray(z["coef"], dtype=np.float64)
                self.intercept = np.asarray(z["intercept"], dtype=np.float64) if "intercept" in z.files else 0.0
            self.X = storage.load_embeddings(project)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("export: latest model of project %s unusable (%s); using queue predictions", project.pk, exc)
            return
        self.classes = list(project.classes)
        self.ok = self.coef.shape == (len(self.classes), self.X.shape[1])

    def __call__(self, rows: list[Row], row_of: dict[int, int]) -> None:
        """Fill prediction/confidence of unlabeled rows in place."""
        todo = [r for r in rows if not r.label]
        if not todo:
            return
        with_row = [r for r in todo if row_of.get(r.item_id) is not None]
        if self.ok and with_row:
            Xc = np.asarray(self.X[np.array([row_of[r.item_id] for r in with_row])], dtype=np.float64)
            logits = Xc @ self.coef.T + self.intercept
            logits -= logits.max(axis=1, keepdims=True)
            p = np.exp(logits)
            p /= p.sum(axis=1, keepdims=True)
            k = p.argmax(axis=1)
            for r, kk, pp in zip(with_row, k, p[np.arange(len(k)), k]):
                r.prediction, r.confidence = self.classes[int(kk)], float(pp)
            return
        # No usable head: fall back to the prediction stored with the latest queue entry.
        preds = {}
        for item_id, lab, conf in (QueueEntry.objects.filter(item_id__in=[r.item_id for r in todo])
                                   .exclude(predicted_label="").order_by("id")
                                   .values_list("item_id", "predicted_label", "predicted_confidence")):
            preds[item_id] = (lab, conf)
        for r in todo:
            if r.item_id in preds:
                r.prediction, r.confidence = preds[r.item_id]


def export_chunks(project: Project, *, predictions: bool = False, chunk: int = CHUNK) -> Iterator[list[Row]]:
    """Every item of the project in id order, ``chunk`` at a time, with its final label."""
    predictor = _Predictor(project) if predictions else None
    last = 0
    while True:
        items = list(
            Item.objects.filter(project=project, pk__gt=last).order_by("pk")
            .values_list("pk", "original_name", "file", "width", "height", "ground_truth", "row", "created_at")[:chunk]
        )
        if not items:
            return
        last = items[-1][0]
        labels = final_labels([i[0] for i in items])
        rows = []
        row_of = {}
        for pk, name, file, w, h, gt, row, created in items:
            r = Row(pk, name or PurePosixPath(file).name, file, w, h, gt, created_at=created)
            fl = labels.get(pk)
            if fl is not None:
                r.label, r.annotator, r.origin = fl.label, fl.annotator, fl.origin
                r.annotation_id, r.labeled_at = fl.annotation_id, fl.created_at
            rows.append(r)
            row_of[pk] = row
        if predictor is not None:
            predictor(rows, row_of)
        yield rows


def export_write(*, project: Project, fmt: str, path: Path, predictions: bool = False,
                 progress: Progress | None = None, chunk: int = CHUNK) -> int:
    """Write the export to ``path``; returns the number of records written."""
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r} is not one of {sorted(FORMATS)}")
    progress = progress or (lambda f, m: None)
    total = max(Item.objects.filter(project=project).count(), 1)

    def chunks():
        done = 0
        for rows in export_chunks(project, predictions=predictions, chunk=chunk):
            yield rows
            done += len(rows)
            progress(min(done / total, 0.99), f"exported {done}/{total} items")

    if fmt in TEXT_WRITERS:
        with open(path, "w", encoding="utf-8", newline="") as fh:
            n = TEXT_WRITERS[fmt](project, chunks(), fh, predictions)
    else:
        n = BINARY_WRITERS[fmt](project, chunks(), path, predictions)
    progress(1.0, f"wrote {n} records")
    return n


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-").lower() or "project"


def _prune(project: Project, *, keep: int) -> None:
    """Delete the files of all but the newest ``keep`` finished exports of the project."""
    old = (Job.objects.filter(project=project, kind=Job.Kind.EXPORT, status=Job.Status.DONE)
           .exclude(result_file="").order_by("-created_at")[keep:])
    for job in old:
        try:
            storage.media_path(job.result_file).unlink(missing_ok=True)
        except ValueError:
            pass  # a path outside MEDIA_ROOT was never ours to delete
        message = f"{job.message} (file removed: newer exports)"[:500]
        Job.objects.filter(pk=job.pk).update(result_file="", message=message)


def export_request(*, project: Project, fmt: str, predictions: bool = False, user=None) -> Job:
    if fmt not in FORMATS:
        raise ValueError(f"export format {fmt!r} is not one of {sorted(FORMATS)}")
    job = job_services.job_create(project=project, kind=Job.Kind.EXPORT,
                                  params={"format": fmt, "predictions": bool(predictions)}, user=user)
    job_services.job_enqueue(job=job)
    return job


def _export(job: Job, progress: job_services.Progress) -> job_services.JobOutcome:
    project = job.project
    fmt = job.params["format"]
    ext = FORMATS[fmt][0]
    out_dir = storage.exports_dir(project)
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp = timezone.now().strftime("%Y%m%d-%H%M%S")
    path = out_dir / f"{_slug(project.name)}-{fmt}-{stamp}-{str(job.pk)[:8]}.{ext}"
    tmp = path.with_name(path.name + ".part")
    try:
        n = export_write(project=project, fmt=fmt, path=tmp, predictions=bool(job.params.get("predictions")),
                         progress=progress)
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)  # gone already when the export succeeded
    rel = str(path.relative_to(Path(storage.media_path("."))))
    _prune(project, keep=EXPORTS_KEPT - 1)
    return job_services.JobOutcome(
        result={"records": n, "format": fmt, "filename": path.name, "bytes": path.stat().st_size},
        result_file=rel, message=f"{FORMATS[fmt][1]}: {n} records",
    )


def export_execute(*, job_id: str) -> Job:
    """Run an export job (called by its Celery task).  The request was validated when the job was made,
    so any failure here is a fault, raised again after the job records it."""
    return job_services.job_run(job_id=job_id, work=_export, expected=())


__all__ = ["FORMATS", "LS_LOCAL_PREFIX", "ORIGINS_FILE", "export_chunks", "export_write", "export_request",
           "export_execute"]
