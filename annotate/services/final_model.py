"""The final model: fine-tune the project's pretrained backbone on the labels and export it with its
accuracy measured on the audit items.

**Which training method.**  ASVP (arXiv 2403.01101) chooses between LP-FT and FT for the final model;
its authors summarise the finding as "with few labels LP-FT mitigates the gap, with more labels
fine-tuning is needed" (their TMLR page), and the issue describes the rule as looking at where the
proxy and the fine-tuned model disagree.  The paper's exact rule is in none of the stored sources (its
stored copies stop in the introduction; the authors' code has both training modes but no rule), so
Loupe does not claim to implement it.  ``method="auto"`` (the default) is Loupe's own, measurable stand-in: train
both LP-FT and FT on the same labels with the same held-out share, and keep the one with the higher
held-out accuracy (LP-FT on a tie, as it keeps more of the pretrained features).  ``lpft`` or ``ft``
trains only that one.

**Accuracy.**  Audit items (drawn at random with a recorded probability: ``QueueEntry.is_audit``,
``audit_probability``) that carry a label are kept out of training and the exported model's accuracy
is measured on them, each weighted by 1/probability (a ratio estimate of its accuracy on the pool;
with uniform draws the plain share and its binomial standard error).

**Export** (``projects/<id>/exports/final-<job>.zip``, the job's result file): ``backbone/`` (an ``hf``
model folder: config.json, model.safetensors, preprocessor_config.json), ``head.safetensors``
(``weight`` (c, d), ``bias`` (c,) float32: logits = backbone(x) @ weightᵀ + bias) and ``config.json``
(classes, method, pooling, base model, accuracies, counts), and ``predictions.csv`` (item_id, file, label,
confidence) for every unlabeled item, from this model.
"""
from __future__ import annotations

import csv
import json
import math
import shutil
import zipfile

import numpy as np

from selection.extractors import ExtractorError

from .. import storage
from ..models import Item, Job, Project, QueueEntry
from . import jobs as job_services
from .transfer_common import finetune_config, hf_model_of, labeled_set, pretrained_of

METHODS = ("auto", "lpft", "ft")


def final_model_request(*, project: Project, user=None, method: str = "auto") -> Job:
    if method not in METHODS:
        raise ValueError(f"method={method!r} is not one of {METHODS}")
    hf_model_of(project)
    finetune_config(project.finetune_params)
    job = job_services.job_create(project=project, kind=Job.Kind.FINAL, params={"method": method}, user=user)
    job_services.job_enqueue(job=job)
    return job


def _final(job: Job, progress: job_services.Progress) -> job_services.JobOutcome:
    from safetensors.numpy import save_file  # noqa: PLC0415

    from selection.transfer.finetune import embed, finetune  # noqa: PLC0415
    from selection.transfer.hf_backbone import image_loader, load_backbone, save_backbone  # noqa: PLC0415

    project = Project.objects.get(pk=job.project_id)
    current, pooling = hf_model_of(project)
    base = pretrained_of(current)
    data = labeled_set(project)
    # audit item -> the probability its draw chose it with (None: a uniform draw, weight 1)
    audit_pi = dict(QueueEntry.objects.filter(project=project, is_audit=True)
                    .values_list("item_id", "audit_probability"))
    is_audit = np.array([i in audit_pi for i in data.item_ids], dtype=bool)
    train = np.flatnonzero(~is_audit)
    audit = np.flatnonzero(is_audit)
    if len(train) < 4 or len(set(data.y[train].tolist())) < 2:
        raise ValueError(f"the final model needs at least 4 non-audit labels of two or more classes; project "
                         f"{project.pk} has {len(train)}")
    method = job.params.get("method", "auto")
    methods = ("lpft", "ft") if method == "auto" else (method,)
    params = dict(project.finetune_params or {})
    params.pop("method", None)
    results = {}
    span = 0.85 / len(methods)
    for k, m in enumerate(methods):
        cfg = finetune_config({**params, "method": m}, seed=int(project.seed))
        backbone = load_backbone(base, pooling=pooling)
        source_load = image_loader(backbone.source, data.image)

        def load(idx, _load=source_load):
            return _load(train[idx])

        res = finetune(backbone, load, data.y[train], len(data.classes), config=cfg,
                       progress=lambda f, msg, k=k: progress(span * (k + f), msg))
        results[m] = (res, backbone, source_load)
    # Higher held-out accuracy wins; LP-FT on a tie (and when there is no held-out set).
    chosen = max(methods, key=lambda m: (results[m][0].val_accuracy or 0.0, m == "lpft"))
    res, backbone, source_load = results[chosen]
    accuracy = stderr = None
    if len(audit):
        progress(0.9, f"measuring on {len(audit)} audit items")
        F = embed(backbone, lambda idx: source_load(audit[idx]), len(audit), device=res.device)
        pred = (F @ res.head_weight.T + res.head_bias).argmax(1)
        # 1/pi-weighted (Hajek) share: audit items drawn where the round's model was unsure are
        # over-represented (docs/quality.md); with equal probabilities this is the plain share and stderr
        w = np.array([1 / (audit_pi[data.item_ids[i]] or 1.0) for i in audit])
        right = (np.asarray(pred) == data.y[audit]).astype(float)
        accuracy = float(np.sum(w * right) / w.sum())
        stderr = math.sqrt(float(np.sum(w * w * (right - accuracy) ** 2))) / float(w.sum())
    config = {
        "classes": data.classes, "method": chosen, "method_asked": method, "base_model": base, "pooling": pooling,
        "audit_accuracy": accuracy, "audit_accuracy_stderr": stderr, "n_audit": int(len(audit)),
        "n_train": int(res.n_train), "n_heldout": int(res.n_val),
        "heldout_accuracy": {m: results[m][0].val_accuracy for m in methods}, "best_epoch": res.best_epoch,
        "head": "logits = backbone(pixel_values) @ weight.T + bias",
    }
    out_dir = storage.exports_dir(project) / f"final-{job.pk}"
    shutil.rmtree(out_dir, ignore_errors=True)
    save_backbone(backbone, out_dir / "backbone", meta={"base_model": base, "method": chosen})
    save_file({"weight": np.ascontiguousarray(res.head_weight), "bias": np.ascontiguousarray(res.head_bias)},
              str(out_dir / "head.safetensors"))
    (out_dir / "config.json").write_text(json.dumps(config, indent=2))
    if job.params.get("predict_unlabeled", True):
        progress(0.93, "predicting the unlabeled items")
        _write_predictions(project, data, backbone, res, out_dir / "predictions.csv")
    zip_path = out_dir.with_suffix(".zip")
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as z:
        for f in sorted(out_dir.rglob("*")):
            if f.is_file():
                z.write(f, f.relative_to(out_dir).as_posix())
    msg = f"final model ({chosen}) trained on {res.n_train} labels"
    msg += f"; audit accuracy {accuracy:.3f} ± {stderr:.3f} on {len(audit)} items" if accuracy is not None else \
        "; no labeled audit items to measure it on"
    return job_services.JobOutcome(result={**config, "folder": out_dir.relative_to(storage.media_path("")).as_posix()},
                                   result_file=zip_path.relative_to(storage.media_path("")).as_posix(), message=msg)


def _write_predictions(project: Project, data, backbone, res, path) -> int:
    """``predictions.csv`` (item_id, file, label, confidence) for every item without a label; returns the count."""
    from PIL import Image  # noqa: PLC0415

    from selection.transfer.finetune import embed  # noqa: PLC0415
    from selection.transfer.hf_backbone import image_loader  # noqa: PLC0415

    rows = list(Item.objects.filter(project=project).exclude(pk__in=data.item_ids).order_by("pk")
                .values_list("pk", "original_name", "file"))

    def image(i: int):
        with Image.open(storage.media_path(rows[i][2])) as im:
            im.load()
            return im.copy()

    with open(path, "w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(["item_id", "file", "label", "confidence"])
        load = image_loader(backbone.source, image)
        for s in range(0, len(rows), 1024):  # bounded memory on a large pool
            idx = np.arange(s, min(s + 1024, len(rows)))
            F = embed(backbone, lambda k, idx=idx: load(idx[k]), len(idx), device=res.device)
            logits = F @ res.head_weight.T + res.head_bias
            p = np.exp(logits - logits.max(1, keepdims=True))
            p /= p.sum(1, keepdims=True)
            for j, i in enumerate(idx):
                k = int(p[j].argmax())
                out.writerow([rows[i][0], rows[i][1] or rows[i][2], data.classes[k], f"{p[j, k]:.6f}"])
    return len(rows)


def final_model_execute(*, job_id: str) -> Job:
    return job_services.job_run(job_id=job_id, work=_final, expected=(ExtractorError, ValueError))

