"""The export formats: one writer per format, appending a chunk of rows at a time (``exports.py``
reads the chunks and says which writer runs).  Formats and their fields: see ``exports.py``.
"""
from __future__ import annotations

import csv
import io
import json
import re
import shutil
import tempfile
import zipfile
from datetime import datetime
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from django.utils import timezone

from .. import storage

LS_LOCAL_PREFIX = "/data/local-files/?d="


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
                    "loupe_origin": r.origin,
                    "result": [_ls_choice(r.label, _LS_ORIGIN.get(r.origin, "manual"))],
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


#: Label Studio's result origins: "prediction" is a model's answer kept as it was (an imported pre-label,
#: an accepted suggestion); the exact Loupe origin is in each annotation's "loupe_origin".
_LS_ORIGIN = {"manual": "manual", "candidate": "manual", "suggestion": "prediction", "prelabel": "prediction"}


def _ls_choice(label: str, origin: str = "manual") -> dict[str, Any]:
    return {"from_name": "choice", "to_name": "image", "type": "choices", "origin": origin,
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
                obj.update({"choice": r.label, "annotator": r.annotator, "origin": r.origin,
                            "annotation_id": r.annotation_id,
                            "created_at": _iso(r.labeled_at), "updated_at": _iso(r.labeled_at)})
            else:
                obj.update({"prediction": r.prediction, "confidence": r.confidence})
            fh.write(("\n" if n == 0 else ",\n") + json.dumps(obj))
            n += 1
    fh.write("\n]\n")
    return n


CSV_FIELDS = ["image", "label", "annotator", "labeled_at", "item_id", "ground_truth", "width", "height", "created_at",
              "origin"]


def _write_csv(project, chunks, fh, predictions: bool) -> int:
    fields = CSV_FIELDS + (["prediction", "confidence"] if predictions else [])
    w = csv.writer(fh)
    w.writerow(fields)
    n = 0
    for rows in chunks:
        for r in rows:
            vals = [r.image, r.label, r.annotator, _iso(r.labeled_at) or "", r.item_id, r.ground_truth,
                    r.width, r.height, _iso(r.created_at) or "", r.origin]
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
                           "annotator": r.annotator, "origin": r.origin, "created_at": _iso(r.labeled_at)}
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


ORIGINS_FILE = "loupe-origins.csv"


def _write_imagefolder(project, chunks, path: Path, predictions: bool) -> int:
    n = 0
    used: set[str] = set()
    origins: list[tuple[str, str, str, str]] = []
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
                origins.append((arc, r.label, r.origin, r.annotator))
                n += 1
        # Where each label came from (a pre-label is not a person's label): one CSV beside the class folders,
        # which ImageFolder-style loaders ignore (they read sub-folders only).
        if origins:
            buf = io.StringIO()
            w = csv.writer(buf)
            w.writerow(["path", "label", "origin", "annotator"])
            w.writerows(origins)
            zf.writestr(ORIGINS_FILE, buf.getvalue())
    return n


def _write_parquet(project, chunks, path: Path, predictions: bool) -> int:
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    ts = pa.timestamp("us", tz="UTC")
    fields = [
        ("image", pa.string()), ("label", pa.string()), ("annotator", pa.string()), ("labeled_at", ts),
        ("item_id", pa.int64()), ("ground_truth", pa.string()), ("width", pa.int32()), ("height", pa.int32()),
        ("created_at", ts), ("origin", pa.string()),
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
                "origin": [r.origin or None for r in rows],
            }
            if predictions:
                cols["prediction"] = [r.prediction or None for r in rows]
                cols["confidence"] = [r.confidence for r in rows]
            writer.write_table(pa.Table.from_pydict(cols, schema=schema))
            n += len(rows)
    return n


TEXT_WRITERS = {"label_studio": _write_label_studio, "json_min": _write_json_min, "csv": _write_csv,
                 "coco": _write_coco}
BINARY_WRITERS = {"imagefolder": _write_imagefolder, "parquet": _write_parquet}
