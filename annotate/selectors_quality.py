"""Quality reads for the dashboard: the accuracy estimate and the worker's agreement report.

Accuracy (docs/quality.md).  Each round audits every pool item independently with a probability
pi_i it recorded (``QueueEntry.audit_probability``), proportional to how unsure its model was of
being right there (``services.quality_scores.quality_audit_design``; rounds before that drew
``n_audit`` uniformly, pi = n_audit / pool).  An audit item is compared with the prediction of the
model that served it.  Per round, the active-inference estimate (Zrnic & Candes 2024;
``selection.quality.active_inference_stratum``) of that model's accuracy on its pool is

    (sum_pool f + sum_audited (Y - f) / pi) / pool,

f the calibrated P(right) fixed before the draw (``correct_probability``; the pool sums are in
``Round.metrics["quality"]``).  Audit items still open or superseded before anyone took them are
missing labels; they are missing at random (audit items sit at random ranks in the batch), so pi is
scaled by the round's share of labeled audit items.  Rounds combine with weights fixed before their
draws (the expected audit count), as the plain audit share weights rounds by their audit items.
"audit" is the same without f: the plain audit share (Wilson) when every draw was uniform, else its
1/pi-weighted (Horvitz-Thompson) form.  Both are cheap (one query over the audit entries), so they
are computed per request; the heavier agreement model runs in a worker and is read from
``QualityReport``.
"""
from __future__ import annotations

from typing import Any

from .models import Project, QualityReport, QueueEntry, Round
from .selectors_labels import final_labels

#: fewer audit labels than this: the active-inference interval is not shown (its variance estimate is too rough)
MIN_ACTIVE_LABELS = 10

ESTIMATOR_NAMES = {
    "audit": "audit share (Wilson interval)",
    "audit_weighted": "audit share weighted by 1/probability (Horvitz-Thompson)",
    "active_inference": ("active inference (audit items drawn where the model is unsure, weighted by "
                         "1/probability, correcting its calibrated confidence on the whole pool)"),
}


def audit_strata(*, project: Project) -> list[dict[str, Any]]:
    """Per round with labeled audit items: its arrays and pool sums (what the estimators take).

    Each: {"round", "labels", "y", "f" (None without a stored confidence), "pi" (rescaled by the labeled
    share), "n_pool", "conf_sum", "spread" (None for rounds before the design was recorded),
    "weight", "poisson"}.
    """
    entries = list(
        QueueEntry.objects.filter(project=project, is_audit=True, state=QueueEntry.State.DONE, round__isnull=False)
        .exclude(predicted_label="")
        .values_list("item_id", "predicted_label", "round_id", "correct_probability", "audit_probability")
    )
    labels = final_labels({e[0] for e in entries})
    per_round: dict[int, list[tuple[float, float | None, float | None]]] = {}
    for item_id, predicted, round_id, prob, pi in entries:
        fl = labels.get(item_id)
        if fl is not None:  # undone or skipped since: no label to compare with
            per_round.setdefault(round_id, []).append((float(fl.label == predicted), prob, pi))
    # A Poisson round whose draw chose no item is a stratum too: its estimate is the exact sum of f over
    # its pool (the correction term is an empty sum).  Leaving it out would condition the other rounds on
    # "at least one item drawn", which inflates their correction term by 1 / P(n >= 1) -- about 1.16 at
    # the default 2 expected audit items per round, a bias whenever f is miscalibrated.
    empty = Round.objects.filter(project=project, status=Round.Status.DONE, metrics__audit=0,
                                 metrics__quality__audit_design="poisson").values_list("pk", flat=True)
    for round_id in empty:
        per_round.setdefault(round_id, [])
    rounds = {r.pk: r for r in Round.objects.filter(pk__in=per_round).only("pk", "number", "metrics",
                                                                             "labeled_count")}
    out = []
    for round_id, rows in per_round.items():
        rnd = rounds[round_id]
        m = rnd.metrics or {}
        q = m.get("quality") or {}
        n_pool = int(m.get("pool") or 0)
        drawn = int(m.get("audit") or 0)
        if drawn == 0 and not rows and n_pool > 0 and "pool_conf_sum" in q:
            drawn = 1  # the empty draw: rho = 1 below, no audit term
        if n_pool < len(rows) or drawn <= 0:
            continue  # a round without its pool size: nothing to weight by
        rho = min(1.0, len(rows) / drawn) if rows else 1.0  # labeled share of the audit items drawn
        poisson = q.get("audit_design") == "poisson" and all(r[2] is not None for r in rows)
        pi = [(r[2] if poisson else drawn / n_pool) * rho for r in rows]
        has_f = all(r[1] is not None for r in rows) and (
            "pool_conf_sum" in q if poisson else q.get("pool_correct_mean") is not None)
        conf_sum = (float(q["pool_conf_sum"]) if poisson else float(q["pool_correct_mean"]) * n_pool) if has_f else 0.0
        spread = (float(q["spread_over_pi"]) / rho - float(q["spread"])) if poisson and has_f else None
        out.append({"round": rnd.number, "labels": rnd.labeled_count, "y": [r[0] for r in rows],
                    "f": [float(r[1]) for r in rows] if has_f else None, "pi": pi, "n_pool": n_pool,
                    "conf_sum": conf_sum, "spread": spread, "poisson": poisson,
                    "weight": float(q["audit_expected"]) if poisson else float(drawn)})
    out.sort(key=lambda s: s["round"])
    return out


def stratum_estimates(s: dict[str, Any]):
    """(active inference, audit without f) :class:`~selection.quality.StratumEstimate` for one round."""
    from selection.quality import active_inference_stratum  # noqa: PLC0415

    n = len(s["y"])
    active = active_inference_stratum(s["y"], s["f"] if s["f"] is not None else [0.0] * n, s["pi"],
                                      pool_conf_sum=s["conf_sum"], n_pool=s["n_pool"],
                                      pool_expected_spread=s["spread"])
    plain = active_inference_stratum(s["y"], [0.0] * n, s["pi"], pool_conf_sum=0.0, n_pool=s["n_pool"])
    return active, plain


def stratum_interval(s: dict[str, Any]):
    """One round's active-inference estimate as an :class:`~selection.quality.AccuracyEstimate` (95%)."""
    from selection.quality import combine_strata  # noqa: PLC0415

    return combine_strata([stratum_estimates(s)[0]], [1.0])


def accuracy_estimate(*, project: Project) -> dict[str, Any]:
    """{"best": the estimate the dashboard leads with, "audit": ..., "active_inference": ... or None, "scope"}.

    Each with its 95% interval, the number of audit labels behind it and the estimator's name.  "best"
    is active inference once it rests on ``MIN_ACTIVE_LABELS`` audit labels, else the audit share.
    What they estimate ("scope": {"rounds": [first, last], "labels": [fewest, most]}): not the newest
    model's accuracy but the weighted mean, over those rounds, of each round's model's accuracy on the
    items still unlabeled when it served them (its pool); the models were trained on "labels" labels.
    """
    from selection.quality import audit_accuracy, combine_strata  # noqa: PLC0415

    strata = audit_strata(project=project)
    if not any(s["y"] for s in strata):
        return {"best": None, "audit": None, "active_inference": None, "scope": None}
    scope = {"rounds": [strata[0]["round"], strata[-1]["round"]],
             "labels": [min(s["labels"] for s in strata), max(s["labels"] for s in strata)]}
    pairs = [stratum_estimates(s) for s in strata]
    weights = [s["weight"] for s in strata]
    y_all = [y for s in strata for y in s["y"]]
    if any(s["poisson"] for s in strata):
        audit = _as_dict(combine_strata([p[1] for p in pairs], weights, name="audit_weighted"), "audit_weighted")
    else:
        audit = _as_dict(audit_accuracy(y_all), "audit")
    active = (_as_dict(combine_strata([p[0] for p in pairs], weights), "active_inference")
              if len(y_all) >= MIN_ACTIVE_LABELS else None)
    # The shown estimator is fixed by a rule, not by which interval came out narrower (choosing the
    # narrower of two after seeing them would undercut the coverage of both).
    return {"best": active if active is not None else audit, "audit": audit, "active_inference": active,
            "scope": scope}


#: the adaptive audit rate's rate once the interval is at or under the project's target (capped at audit_rate)
AUDIT_MAINTENANCE_RATE = 0.1


def audit_rate_plan(*, project: Project, accuracy: dict[str, Any] | None = None) -> dict[str, Any]:
    """The audit rate of the project's next round: {"rate", "base_rate", "target", "maintenance", "half_width"}.

    ``project.audit_rate`` while the dashboard's accuracy interval (``accuracy``, the result of
    :func:`accuracy_estimate`, computed when not given) is wider than ``project.audit_target_halfwidth``
    or there is none yet; ``min(audit_rate, AUDIT_MAINTENANCE_RATE)`` once it is at or under it
    (:func:`selection.quality.adaptive_audit_rate`; target 0 = off, always ``audit_rate``).  The rate
    depends only on labels collected before the round's draw, so each draw's probabilities are still
    fixed before it and the estimate stays unbiased (docs/quality.md, "Adaptive audit rate").
    """
    from selection.quality import adaptive_audit_rate  # noqa: PLC0415

    base = min(max(float(project.audit_rate), 0.0), 1.0)
    target = float(project.audit_target_halfwidth or 0.0)
    half_width = None
    if target > 0:
        best = (accuracy if accuracy is not None else accuracy_estimate(project=project))["best"]
        half_width = None if best is None else float(best["half_width"])
    rate = adaptive_audit_rate(base, target_half_width=target if target > 0 else None, last_half_width=half_width,
                               maintenance_rate=AUDIT_MAINTENANCE_RATE)
    return {"rate": rate, "base_rate": base, "target": target if target > 0 else None,
            "maintenance": min(base, AUDIT_MAINTENANCE_RATE), "half_width": half_width}


#: the tile's one-line names (the full ones above go in its tooltip)
SHORT_NAMES = {"audit": "audit share (Wilson)", "audit_weighted": "audit share, 1/π-weighted",
               "active_inference": "active inference (Zrnic & Candès 2024)"}


def _as_dict(est, key: str) -> dict[str, Any]:
    d = est.as_dict()
    return {"key": key, "name": ESTIMATOR_NAMES[key], "short_name": SHORT_NAMES[key], "value": d["value"],
            "low": d["low"], "high": d["high"],
            "half_width": d["half_width"], "n_labels": d["n_labels"]}


def quality_report(*, project: Project) -> dict[str, Any] | None:
    """The worker's latest agreement / annotator report, or None before the first one."""
    rep = QualityReport.objects.filter(project=project).first()
    if rep is None:
        return None
    return {**rep.data, "computed_at": rep.computed_at.isoformat()}
