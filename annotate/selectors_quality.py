"""Quality reads for the dashboard: the accuracy estimate and the worker's agreement report.

Accuracy (docs/quality.md): the audit items (drawn uniformly from the pool, selectors_stats) are
compared with the prediction of the model that served them.  The plain estimate is their share
of agreements (Wilson interval).  The prediction-powered one (a difference estimator, Angelopoulos
et al. 2023) adds the model's own calibrated confidence: for audit item i of round r,
z_i = pool_mean_r + Y_i - f_i, where f_i is the calibrated probability that the model is right on
the item and pool_mean_r the mean of it over the round's whole pool, both fixed when the round
ran (services/quality_scores.py).  It estimates the same quantity with a variance Var(Y - f) / n in
place of Var(Y) / n.  Both are cheap (one query over the audit entries), so they are computed
per request; the heavier agreement model runs in a worker and is read from ``QualityReport``.
"""
from __future__ import annotations

from typing import Any

from .models import Project, QualityReport, QueueEntry, Round
from .selectors_labels import final_labels

#: fewer audit labels than this: the prediction-powered interval is not shown (its variance estimate is too rough)
MIN_PPI_LABELS = 10

ESTIMATOR_NAMES = {"audit": "audit share (Wilson interval)",
                   "ppi": "prediction-powered (audit labels correct the model's calibrated confidence)"}


def accuracy_estimate(*, project: Project) -> dict[str, Any]:
    """{"best": the estimate the dashboard leads with, "audit": ..., "ppi": ... or None}; each with its interval.

    "best" is the prediction-powered estimate once it rests on ``MIN_PPI_LABELS`` audit labels.
    """
    from selection.quality import audit_accuracy, difference_accuracy  # noqa: PLC0415

    entries = list(
        QueueEntry.objects.filter(project=project, is_audit=True, state=QueueEntry.State.DONE, round__isnull=False)
        .exclude(predicted_label="")
        .values_list("item_id", "predicted_label", "round_id", "correct_probability")
    )
    labels = final_labels({e[0] for e in entries})
    pool_mean = {pk: (m.get("quality") or {}).get("pool_correct_mean")
                 for pk, m in Round.objects.filter(pk__in={e[2] for e in entries}).values_list("pk", "metrics")}
    y, f, m = [], [], []
    y_all = []
    for item_id, predicted, round_id, prob in entries:
        fl = labels.get(item_id)
        if fl is None:
            continue
        y_all.append(float(fl.label == predicted))
        if prob is not None and pool_mean.get(round_id) is not None:
            y.append(y_all[-1])
            f.append(prob)
            m.append(pool_mean[round_id])
    audit = _as_dict(audit_accuracy(y_all), "audit") if y_all else None
    ppi = _as_dict(difference_accuracy(y, f, m), "ppi") if len(y) >= MIN_PPI_LABELS else None
    # The shown estimator is fixed by a rule, not by which interval came out narrower (choosing the
    # narrower of two after seeing them would undercut the coverage of both).
    return {"best": ppi if ppi is not None else audit, "audit": audit, "ppi": ppi}


def _as_dict(est, key: str) -> dict[str, Any]:
    d = est.as_dict()
    return {"key": key, "name": ESTIMATOR_NAMES[key], "value": d["value"], "low": d["low"], "high": d["high"],
            "half_width": d["half_width"], "n_labels": d["n_labels"]}


def quality_report(*, project: Project) -> dict[str, Any] | None:
    """The worker's latest agreement / annotator report, or None before the first one."""
    rep = QualityReport.objects.filter(project=project).first()
    if rep is None:
        return None
    return {**rep.data, "computed_at": rep.computed_at.isoformat()}
