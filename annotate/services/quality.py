"""Label and model quality, computed in workers (the library: ``selection.quality``, docs/quality.md).

- :func:`quality_refresh` (task ``annotate.tasks.quality_refresh``, queue ``cpu``, after every
  round): the annotators' label matrix, Dawid-Skene, agreement, per-annotator confusion against
  the consensus; writes ``Item.consensus_label`` for items with two or more labels (the training
  label and exports use it unless a reviewer corrected the item) and the project's
  :class:`~annotate.models.QualityReport`; then the out-of-fold pass of ``services/quality_scores.py``
  (suspect scores, and the confidence calibration the next round applies, stored in the report's
  ``calibration``).  It runs after the round's queue is committed, so the round never waits for it.
"""
from __future__ import annotations

from typing import Any

import logging

import numpy as np
from celery import current_app
from django.db import transaction
from kombu.exceptions import OperationalError

from ..models import Annotation, Item, Project, QualityReport
from . import dispatch

log = logging.getLogger(__name__)


def label_matrix(*, project: Project) -> tuple[list[int], list[int], np.ndarray]:
    """(item ids, annotator ids, labels (n_items, n_annotators) with -1 where missing).

    Annotators' own current labels only; a reviewer's correction is not a vote (it overrides).
    """
    class_index = {name: k for k, name in enumerate(project.classes)}
    rows = list(Annotation.objects.filter(item__project=project, is_current=True, action=Annotation.Action.LABEL)
                .exclude(label="").values_list("item_id", "annotator_id", "label"))
    rows = [r for r in rows if r[2] in class_index]
    items = sorted({r[0] for r in rows})
    users = sorted({r[1] for r in rows})
    L = np.full((len(items), len(users)), -1, dtype=np.int64)
    ii = {v: k for k, v in enumerate(items)}
    uu = {v: k for k, v in enumerate(users)}
    for item_id, user_id, label in rows:
        L[ii[item_id], uu[user_id]] = class_index[label]
    return items, users, L


def _num(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else round(float(x), 4)


def quality_refresh(*, project_id: int) -> dict[str, Any]:
    """Recompute consensus, annotator accuracies and agreement; store and return the report."""
    from django.contrib.auth import get_user_model  # noqa: PLC0415

    from selection.quality import (  # noqa: PLC0415
        confusion_vs_reference,
        dawid_skene,
        krippendorff_alpha,
        pairwise_cohen_kappa,
    )

    project = Project.objects.get(pk=project_id)
    classes = list(project.classes)
    items, users, L = label_matrix(project=project)
    names = dict(get_user_model().objects.filter(pk__in=users).values_list("pk", "username"))
    n_per_item = (L != -1).sum(1) if len(items) else np.zeros(0, dtype=int)
    multi = n_per_item >= 2
    report: dict[str, Any] = {"items_labeled": len(items), "items_overlapped": int(multi.sum()),
                              "annotators": [], "alpha": None, "pairs": []}
    consensus: dict[int, tuple[str, float]] = {}
    if len(items) and len(classes) >= 2 and multi.any():
        # Fitted on the overlapped items only: single labels say nothing about who is right, and this
        # keeps the EM's (annotators x items x classes) work bounded by the overlap, not the project.
        Lm = L[multi]
        ds = dawid_skene(Lm, len(classes))
        report["alpha"] = _num(krippendorff_alpha(Lm, len(classes)))
        kappa, common = pairwise_cohen_kappa(Lm, len(classes))
        conf = confusion_vs_reference(Lm, ds.labels, len(classes))
        for a, uid in enumerate(users):
            n_over = int((Lm[:, a] != -1).sum())
            agree = np.trace(conf[a]) / conf[a].sum() if conf[a].sum() else float("nan")
            report["annotators"].append({
                "user": names.get(uid, str(uid)), "labels": int((L[:, a] != -1).sum()), "overlapped": n_over,
                "ds_accuracy": _num(ds.accuracy[a]) if n_over else None, "agreement_with_consensus": _num(agree),
                "confusion": conf[a].tolist(),
            })
        for a in range(len(users)):
            for b in range(a + 1, len(users)):
                if common[a, b] >= 2:
                    report["pairs"].append({"a": names.get(users[a]), "b": names.get(users[b]),
                                            "items": int(common[a, b]), "kappa": _num(kappa[a, b])})
        for j, k in enumerate(np.flatnonzero(multi)):
            consensus[items[k]] = (classes[int(ds.labels[j])], float(ds.posterior[j].max()))
        report["ds_iterations"] = ds.n_iter
    report["classes"] = classes
    from .quality_scores import quality_label_scores, stored_calibration  # noqa: PLC0415

    report["calibration"] = stored_calibration(project=project)  # until the pass below replaces it
    with transaction.atomic():
        Item.objects.filter(project=project).exclude(consensus_label="").exclude(pk__in=list(consensus)).update(
            consensus_label="", consensus_probability=None)
        objs = [Item(pk=i, consensus_label=lab, consensus_probability=p) for i, (lab, p) in consensus.items()]
        Item.objects.bulk_update(objs, ["consensus_label", "consensus_probability"], batch_size=1000)
        QualityReport.objects.update_or_create(project=project, defaults={"data": report})
    # After the consensus is written: the out-of-fold pass trains on the final labels it changes.
    fresh = quality_label_scores(project=project)  # None with too few labels: the stored one stays
    if fresh is not None:
        report["calibration"] = fresh
        QualityReport.objects.filter(project=project).update(data=report)
    return report


def quality_enqueue(*, project_id: int) -> None:
    """Send ``annotate.tasks.quality_refresh`` by name once the current transaction commits.

    The report is a cache that the next round refreshes, so an unreachable broker is logged and
    not raised: the round that asked has committed its queue already and must not look failed.
    """
    def send() -> None:
        try:
            current_app.tasks["annotate.tasks.quality_refresh"].apply_async(
                args=[project_id], retry=True, retry_policy=dispatch.PUBLISH_RETRY)
        except (OperationalError, OSError) as exc:
            log.error("quality refresh of project %s: %s", project_id, dispatch.broker_failure_reason(exc))

    transaction.on_commit(send)
