"""Label and model quality, computed in workers (the library: ``selection.quality``, docs/quality.md).

- :func:`quality_round_scores` runs inside a round (services/rounds.py), where the head, the
  labeled embeddings and the pool probabilities are already loaded.  From out-of-fold
  probabilities of the labeled set (5 refits of the head) it writes each labeled item's
  ``suspect_score`` (confident learning + learnability; the review page sorts by it) and fits a
  Platt calibration of the head's confidence, whose value on the pool gives the round's
  ``pool_correct_mean`` and each audit entry's ``correct_probability``: the inputs of the
  prediction-powered (difference) accuracy estimate in ``selectors_stats``.
- :func:`quality_refresh` (task ``annotate.tasks.quality_refresh``, queue ``cpu``, after every
  round): the annotators' label matrix, Dawid-Skene, agreement, per-annotator confusion against
  the consensus; writes ``Item.consensus_label`` for items with two or more labels (the training
  label and exports use it unless a reviewer corrected the item) and the project's
  :class:`~annotate.models.QualityReport`.
"""
from __future__ import annotations

from typing import Any

import logging

import numpy as np
from celery import current_app
from django.conf import settings
from django.db import transaction
from kombu.exceptions import OperationalError

from ..models import Annotation, Item, Project, QualityReport
from . import dispatch

log = logging.getLogger(__name__)

#: fewer labeled items than this: no out-of-fold scores (5 folds of a handful say nothing)
MIN_LABELS_FOR_SCORES = 30


#: largest pool x labeled x dim product for the neighbour feature of the correctness model (about a
#: second of BLAS); beyond it the confidence is Platt-scaled max probability alone
KNN_BUDGET = 5_000_000_000


def quality_round_scores(*, project: Project, lab_items: list[int], X_lab, y, probs_lab, probs_pool,
                         seed: int, X_pool=None) -> dict[str, Any]:
    """Suspect scores for the labeled items (written) and calibrated pool confidences (returned).

    Returns ``{"pool_correct": (n_pool,) float or None, "metrics": {...}}``.  The confidence is
    ``selection.quality.correctness``'s model (head confidence + agreement of the labeled
    neighbours, fitted on the out-of-fold predictions) when the pool fits ``KNN_BUDGET``, else Platt
    scaling of the max probability; with too few labels it is the max probability itself.  The
    difference estimate stays unbiased for any confidence fixed before the audit draw; a better
    one only makes it tighter.
    """
    from selection.head import LogisticHead  # noqa: PLC0415
    from selection.quality import (  # noqa: PLC0415
        apply_confidence_calibration,
        fit_confidence_calibration,
        label_error_scores,
        out_of_fold_proba,
    )

    metrics: dict[str, Any] = {}
    ab = (1.0, 0.0)
    model = None
    c = len(project.classes)
    if len(lab_items) >= MIN_LABELS_FOR_SCORES and len(np.unique(y)) >= 2:
        def fit_predict(Xa, ya, Xb):
            return LogisticHead(c, l2=float(project.l2), device=settings.SELECTION_DEVICE).fit(Xa, ya).predict_proba(Xb)

        P_oof = out_of_fold_proba(X_lab, y, c, n_folds=5, random_state=seed, fit_predict=fit_predict)
        scores = label_error_scores(P_oof, y, probs_lab)
        ab = fit_confidence_calibration(P_oof.max(1), (P_oof.argmax(1) == y).astype(float))
        if X_pool is not None and len(X_pool) * len(y) * X_lab.shape[1] <= KNN_BUDGET:
            model = _correctness_model(X_lab, y, P_oof, c, seed)
            metrics["confidence_model"] = "neighbours"
        with transaction.atomic():
            Item.objects.filter(project=project, suspect_score__isnull=False).update(suspect_score=None)
            objs = [Item(pk=i, suspect_score=float(s)) for i, s in zip(lab_items, scores)]
            Item.objects.bulk_update(objs, ["suspect_score"], batch_size=1000)
        metrics["oof_accuracy"] = float((P_oof.argmax(1) == y).mean())
        metrics["suspects_flagged"] = int((scores > scores.max(initial=0) / 2).sum()) if len(scores) else 0
    metrics["calibration"] = [round(ab[0], 4), round(ab[1], 4)]
    pool_correct = None
    if probs_pool is not None and len(probs_pool):
        if model is not None:
            pool_correct = model.predict(probs_pool, X_pool, X_lab, y)
        else:
            pool_correct = apply_confidence_calibration(np.asarray(probs_pool).max(1), ab)
        metrics["pool_correct_mean"] = float(pool_correct.mean())
    return {"pool_correct": pool_correct, "metrics": metrics}


def _correctness_model(X_lab, y, P_oof, n_classes: int, seed: int):
    """``CorrectnessModel`` from the out-of-fold probabilities already computed (same folds)."""
    from selection.quality.correctness import (  # noqa: PLC0415
        CorrectnessModel,
        correctness_features,
        fit_logistic,
        knn_proba,
    )
    from selection.quality.errors import stratified_folds  # noqa: PLC0415

    folds = stratified_folds(y, 5, random_state=seed)  # the folds out_of_fold_proba used
    F = np.zeros((len(y), 2))
    for k in range(5):
        te = folds == k
        F[te] = correctness_features(P_oof[te], knn_proba(X_lab[~te], y[~te], X_lab[te], n_classes))
    return CorrectnessModel(fit_logistic(F, (P_oof.argmax(1) == y).astype(float), ridge=1.0))


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
    with transaction.atomic():
        Item.objects.filter(project=project).exclude(consensus_label="").exclude(pk__in=list(consensus)).update(
            consensus_label="", consensus_probability=None)
        objs = [Item(pk=i, consensus_label=lab, consensus_probability=p) for i, (lab, p) in consensus.items()]
        Item.objects.bulk_update(objs, ["consensus_label", "consensus_probability"], batch_size=1000)
        QualityReport.objects.update_or_create(project=project, defaults={"data": report})
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
