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

import csv
import json
import logging
import re
import shutil
import tempfile
import zipfile
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any, Callable, Iterator
from urllib.parse import quote

import numpy as np
from django.utils import timezone

from .. import storage
from ..models import Item, Job, Project, QueueEntry, Round
from ..selectors_labels import final_labels
from . import jobs as job_services

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
LS_LOCAL_PREFIX = "/data/local-files/?d="

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
                r.label, r.annotator = fl.label, fl.annotator
                r.annotation_id, r.labeled_at = fl.annotation_id, fl.created_at
            rows.append(r)
            row_of[pk] = row
        if predictor is not None:
            predictor(rows, row_of)
        yield rows


def _iso(t: datetime | None) -> str | None:
    return t.isoformat() if t else None


# ----------------------------------------------------------------------------- writers
def _write_label_studio(project, chunks, fh, predictions: bool) -> int:
    n = 0
    fh.write("[")
    for rows in chunks:
        for r in rows:
            task: dict[str, Any] = {
                "id": r.item_id,
                "data": {"image": LS_LOCAL_PREFIX + quote(r.image), "loupe_item_id": r.item_id},
                "annotations": [],
                "predictions": [],
            }
            if r.label:
                task["annotations"].append({
                    "id": r.annotation_id,
                    "loupe_annotator": r.annotator,
                    "result": [_ls_choice(r.label)],
                    "created_at": _iso(r.labeled_at),
                    "updated_at": _iso(r.labeled_at),
                    "was_cancelled": False,
                    "ground_truth": False,
                })
            elif predictions and r.prediction:
                task["predictions"].append({
                    "model_version": "loupe", "score": r.confidence,
                    "result": [{**_ls_choice(r.prediction), "score": r.confidence}],
                })
            fh.write(("\n" if n == 0 else ",\n") + json.dumps(task))
            n += 1
    fh.write("\n]\n")
    return n


def _ls_choice(label: str) -> dict[str, Any]:
    return {"from_name": "choice", "to_name": "image", "type": "choices", "origin": "manual",
            "value": {"choices": [label]}}


def _write_json_min(project, chunks, fh, predictions: bool) -> int:
    n = 0
    fh.write("[")
    for rows in chunks:
        for r in rows:
            if not r.label and not (predictions and r.prediction):
                continue
            obj: dict[str, Any] = {"image": LS_LOCAL_PREFIX + quote(r.image), "id": r.item_id}
            if r.label:
                obj.update({"choice": r.label, "annotator": r.annotator, "annotation_id": r.annotation_id,
                            "created_at": _iso(r.labeled_at), "updated_at": _iso(r.labeled_at)})
            else:
                obj.update({"prediction": r.prediction, "confidence": r.confidence})
            fh.write(("\n" if n == 0 else ",\n") + json.dumps(obj))
            n += 1
    fh.write("\n]\n")
    return n


CSV_FIELDS = ["image", "label", "annotator", "labeled_at", "item_id", "ground_truth", "width", "height", "created_at"]


def _write_csv(project, chunks, fh, predictions: bool) -> int:
    fields = CSV_FIELDS + (["prediction", "confidence"] if predictions else [])
    w = csv.writer(fh)
    w.writerow(fields)
    n = 0
    for rows in chunks:
        for r in rows:
            vals = [r.image, r.label, r.annotator, _iso(r.labeled_at) or "", r.item_id, r.ground_truth,
                    r.width, r.height, _iso(r.created_at) or ""]
            if predictions:
                vals += [r.prediction, "" if r.confidence is None else f"{r.confidence:.6g}"]
            w.writerow(vals)
            n += 1
    return n


def _write_coco(project, chunks, fh, predictions: bool) -> int:
    classes = list(project.classes)
    cat_id = {c: i + 1 for i, c in enumerate(classes)}
    n = 0
    # Images are written as they stream; annotations are spooled to a temporary file and appended.
    with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
        fh.write('{"info": ' + json.dumps({
            "description": f"Loupe export of {project.name}", "date_created": timezone.now().isoformat(),
        }) + ', "licenses": [], "categories": ' + json.dumps(
            [{"id": cat_id[c], "name": c, "supercategory": ""} for c in classes]) + ', "images": [')
        n_ann = 0
        for rows in chunks:
            for r in rows:
                fh.write(("\n" if n == 0 else ",\n") + json.dumps(
                    {"id": r.item_id, "file_name": r.image, "width": r.width, "height": r.height}))
                n += 1
                ann = None
                if r.label in cat_id:
                    ann = {"id": r.annotation_id, "image_id": r.item_id, "category_id": cat_id[r.label],
                           "annotator": r.annotator, "created_at": _iso(r.labeled_at)}
                elif predictions and r.prediction in cat_id:
                    ann = {"id": -r.item_id, "image_id": r.item_id, "category_id": cat_id[r.prediction],
                           "score": r.confidence, "is_prediction": True}
                if ann is not None:
                    spool.write(("\n" if n_ann == 0 else ",\n") + json.dumps(ann))
                    n_ann += 1
        fh.write('\n], "annotations": [')
        spool.seek(0)
        shutil.copyfileobj(spool, fh)
        fh.write("\n]}\n")
    return n


_UNSAFE = re.compile(r"[\\/\x00]")


def _write_imagefolder(project, chunks, path: Path, predictions: bool) -> int:
    n = 0
    used: set[str] = set()
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for rows in chunks:
            for r in rows:
                if not r.label:
                    continue
                folder = _UNSAFE.sub("_", r.label).strip(".") or "_"
                base = PurePosixPath(r.image).name or f"{r.item_id}"
                arc = f"{folder}/{base}"
                if arc in used:
                    stem, suffix = PurePosixPath(base).stem, PurePosixPath(base).suffix
                    arc = f"{folder}/{stem}-{r.item_id}{suffix or PurePosixPath(r.file).suffix}"
                used.add(arc)
                zf.write(storage.media_path(r.file), arcname=arc)
                n += 1
    return n


def _write_parquet(project, chunks, path: Path, predictions: bool) -> int:
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    ts = pa.timestamp("us", tz="UTC")
    fields = [
        ("image", pa.string()), ("label", pa.string()), ("annotator", pa.string()), ("labeled_at", ts),
        ("item_id", pa.int64()), ("ground_truth", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
        ("created_at", ts),
    ]
    if predictions:
        fields += [("prediction", pa.string()), ("confidence", pa.float64())]
    schema = pa.schema(fields)
    n = 0
    with pq.ParquetWriter(path, schema) as writer:
        for rows in chunks:
            cols: dict[str, list] = {
                "image": [r.image for r in rows],
                "label": [r.label or None for r in rows],
                "annotator": [r.annotator or None for r in rows],
                "labeled_at": [r.labeled_at for r in rows],
                "item_id": [r.item_id for r in rows],
                "ground_truth": [r.ground_truth or None for r in rows],
                "width": [r.width for r in rows],
                "height": [r.height for r in rows],
                "created_at": [r.created_at for r in rows],
            }
            if predictions:
                cols["prediction"] = [r.prediction or None for r in rows]
                cols["confidence"] = [r.confidence for r in rows]
            writer.write_table(pa.Table.from_pydict(cols, schema=schema))
            n += len(rows)
    return n


_TEXT_WRITERS = {"label_studio": _write_label_studio, "json_min": _write_json_min, "csv": _write_csv,
                 "coco": _write_coco}
_BINARY_WRITERS = {"imagefolder": _write_imagefolder, "parquet": _write_parquet}


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

    if fmt in _TEXT_WRITERS:
        with open(path, "w", encoding="utf-8", newline="") as fh:
            n = _TEXT_WRITERS[fmt](project, chunks(), fh, predictions)
    else:
        n = _BINARY_WRITERS[fmt](project, chunks(), path, predictions)
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


__all__ = ["FORMATS", "export_chunks", "export_write", "export_request", "export_execute"]
