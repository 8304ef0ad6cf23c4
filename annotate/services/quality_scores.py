"""Suspect scores and the confidence calibration: fitted after a round, applied by the next one.

The expensive part (5 out-of-fold refits of the head on the labeled set) is off the round's
critical path (train -> select -> write):

- :func:`quality_label_scores` runs in the follow-up quality task (``annotate.tasks.quality_refresh``,
  queue ``cpu``, sent after the round's queue is committed).  From out-of-fold probabilities of the
  labeled set it writes each labeled item's ``suspect_score`` and fits the correctness model (Platt
  scaling of the head's confidence, and ``selection.quality.correctness``'s model with the labeled
  neighbours' agreement); it returns their parameters, stored in ``QualityReport.data["calibration"]``.
- :func:`quality_round_confidence` runs inside the next round, before its audit draw: it applies the
  stored parameters to the pool (no head fit) and gives ``pool_correct`` (each audit entry's
  ``correct_probability``) and ``pool_correct_mean``.  The parameters were fitted on labels that
  existed before this round started, none of which is in its pool, so they are fixed before its audit
  items are drawn and the difference estimate stays unbiased (docs/quality.md).  With no stored
  calibration yet the confidence is the head's max probability itself.
"""
from __future__ import annotations

import logging
from typing import Any

import numpy as np
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from .. import selectors, storage
from ..models import Item, Project, QualityReport, Round

log = logging.getLogger(__name__)

#: fewer labeled items than this: no out-of-fold scores (5 folds of a handful say nothing)
MIN_LABELS_FOR_SCORES = 30

#: largest pool x labeled x dim product for the neighbour feature in the round (on the round's critical
#: path: 0.13 s for the demo's 1,417 x 380 x 64 = 3.4e7 at load 8, 0.64-0.77 s at 5e8); beyond it the
#: round uses the Platt scaling alone (docs/bench-rounds.md)
KNN_BUDGET = 100_000_000

N_FOLDS = 5


def quality_label_scores(*, project: Project) -> dict[str, Any] | None:
    """Out-of-fold pass over the current labels: write suspect scores, return the calibration to store.

    None (nothing written) with fewer than ``MIN_LABELS_FOR_SCORES`` usable labels or one class.
    """
    from selection.head import LogisticHead  # noqa: PLC0415 - torch: only in workers
    from selection.quality import fit_confidence_calibration, label_error_scores, out_of_fold_proba  # noqa: PLC0415

    classes = list(project.classes)
    if len(classes) < 2 or not project.embedding_file:
        return None
    class_index = {c: i for i, c in enumerate(classes)}
    row_of = dict(Item.objects.filter(project=project, row__isnull=False).values_list("id", "row"))
    labels = selectors.labeled_item_labels(project=project)
    lab_items = [i for i, lab in labels.items() if i in row_of and lab in class_index]
    y = np.array([class_index[labels[i]] for i in lab_items], dtype=np.int64)
    if len(lab_items) < MIN_LABELS_FOR_SCORES or len(np.unique(y)) < 2:
        return None
    X_all = storage.load_embeddings(project)
    rows = np.array([row_of[i] for i in lab_items], dtype=np.int64)
    if rows.max() >= X_all.shape[0]:
        return None  # embeddings being replaced; the next round's task scores again
    X = np.asarray(X_all[rows], dtype=np.float32)
    last = Round.objects.filter(project=project, status=Round.Status.DONE).order_by("-number").first()
    seed = int(last.seed) % (2**32) if last is not None else 0
    c, l2 = len(classes), float(project.l2)

    def fit_predict(Xa, ya, Xb):
        return LogisticHead(c, l2=l2, device=settings.SELECTION_DEVICE, random_state=seed).fit(Xa, ya).predict_proba(Xb)

    probs_lab = fit_predict(X, y, X)  # the head trained on everything (learnability's learner)
    P_oof = out_of_fold_proba(X, y, c, n_folds=N_FOLDS, random_state=seed, fit_predict=fit_predict)
    scores = label_error_scores(P_oof, y, probs_lab)
    right = (P_oof.argmax(1) == y).astype(float)
    ab = fit_confidence_calibration(P_oof.max(1), right)
    w = _neighbour_weights(X, y, P_oof, c, seed)
    with transaction.atomic():
        Item.objects.filter(project=project, suspect_score__isnull=False).update(suspect_score=None)
        objs = [Item(pk=i, suspect_score=float(s)) for i, s in zip(lab_items, scores)]
        Item.objects.bulk_update(objs, ["suspect_score"], batch_size=1000)
    return {
        "platt": [float(ab[0]), float(ab[1])], "neighbours": [float(v) for v in w], "k": 7,
        "classes": classes, "dim": int(X.shape[1]), "labels": len(lab_items),
        "after_round": last.number if last is not None else None, "fitted_at": timezone.now().isoformat(),
        "oof_accuracy": float(right.mean()),
        "suspects_flagged": int((scores > scores.max(initial=0) / 2).sum()) if len(scores) else 0,
    }


def _neighbour_weights(X, y, P_oof, n_classes: int, seed: int) -> np.ndarray:
    """``CorrectnessModel`` weights from the out-of-fold probabilities already computed (same folds)."""
    from selection.quality.correctness import correctness_features, fit_logistic, knn_proba  # noqa: PLC0415
    from selection.quality.errors import stratified_folds  # noqa: PLC0415

    folds = stratified_folds(y, N_FOLDS, random_state=seed)  # the folds out_of_fold_proba used
    F = np.zeros((len(y), 2))
    for k in range(N_FOLDS):
        te = folds == k
        F[te] = correctness_features(P_oof[te], knn_proba(X[~te], y[~te], X[te], n_classes))
    return fit_logistic(F, (P_oof.argmax(1) == y).astype(float), ridge=1.0)


def stored_calibration(*, project: Project) -> dict[str, Any] | None:
    """The calibration the last quality task stored, if it still fits the project's classes."""
    data = QualityReport.objects.filter(project=project).values_list("data", flat=True).first() or {}
    cal = data.get("calibration")
    if not cal or cal.get("classes") != list(project.classes):
        return None
    return cal


def quality_round_confidence(*, project: Project, probs_pool, X_pool, X_lab, y) -> dict[str, Any]:
    """Calibrated P(prediction right) on the pool from the stored calibration (cheap; no head fit).

    Returns ``{"pool_correct": (n_pool,) or None, "metrics": {...}}``.  With the neighbour model when
    a calibration is stored and pool x labeled x dim fits ``KNN_BUDGET``, else Platt scaling of the
    max probability; with no stored calibration the max probability itself.
    """
    from selection.quality import apply_confidence_calibration  # noqa: PLC0415
    from selection.quality.correctness import CorrectnessModel  # noqa: PLC0415

    metrics: dict[str, Any] = {}
    if probs_pool is None or not len(probs_pool):
        return {"pool_correct": None, "metrics": metrics}
    cal = stored_calibration(project=project)
    ab = (1.0, 0.0)
    pool_correct = None
    if cal is not None:
        ab = (float(cal["platt"][0]), float(cal["platt"][1]))
        metrics["calibration_from"] = {"after_round": cal.get("after_round"), "labels": cal.get("labels")}
        if (X_pool is not None and X_lab is not None and cal.get("dim") == X_pool.shape[1]
                and len(X_pool) * len(y) * X_pool.shape[1] <= KNN_BUDGET):
            model = CorrectnessModel(np.asarray(cal["neighbours"], dtype=np.float64), int(cal.get("k", 7)))
            pool_correct = model.predict(probs_pool, X_pool, X_lab, y)
            metrics["confidence_model"] = "neighbours"
    if pool_correct is None:
        pool_correct = apply_confidence_calibration(np.asarray(probs_pool).max(1), ab)
    metrics["calibration"] = [round(ab[0], 4), round(ab[1], 4)]
    metrics["pool_correct_mean"] = float(pool_correct.mean())
    return {"pool_correct": pool_correct, "metrics": metrics}


#: the uniform share of the audit probabilities (selection.quality.inclusion_probabilities): no audit weight
#: exceeds pool / (AUDIT_FLOOR * expected audit items)
AUDIT_FLOOR = 0.2


def quality_audit_design(*, pool_correct, expected: float) -> dict[str, Any]:
    """The round's audit probabilities: pi proportional to sqrt(f (1 - f)) with a uniform floor, sum(pi) = expected.

    pool_correct : (n,) the calibrated P(model right) f the round computed before its draw.  Returns
    ``{"pi": (n,), "metrics": {...}}``; the metrics are the pool sums the estimator needs later
    (``selectors_quality.accuracy_estimate``): sum f, sum f (1 - f) / pi and sum f (1 - f), all fixed
    before the draw.  ``pi`` is None (the uniform draw) when ``expected`` is 0 or the pool is empty.
    """
    from selection.quality import inclusion_probabilities  # noqa: PLC0415

    f = np.asarray(pool_correct, dtype=np.float64)
    if not len(f) or expected <= 0:
        return {"pi": None, "metrics": {}}
    spread = f * (1 - f)
    pi = inclusion_probabilities(np.sqrt(spread), float(expected), floor=AUDIT_FLOOR)
    return {"pi": pi, "metrics": {
        "audit_design": "poisson", "audit_expected": float(pi.sum()), "audit_floor": AUDIT_FLOOR,
        "pool_conf_sum": float(f.sum()), "spread_over_pi": float(np.sum(spread / pi)), "spread": float(spread.sum()),
    }}
