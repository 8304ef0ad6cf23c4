"""Dashboard statistics (reads only).

Learning curve (DESIGN.md, "audit"): every round serves a random audit share of its batch
(``QueueEntry.is_audit``) together with the prediction of the model current at that moment
(``predicted_label``).  Once an audit item has a label, comparing the two is a prequential test of
that model (Dawid 1984): the item was never in its training set and was drawn at random from the
pool.  Points are grouped by the round whose model made the prediction and plotted against the
number of labels that model was trained on (``Round.labeled_count``).  A round that drew uniformly
plots the share of agreements with a 95 % Wilson score interval (Wilson 1927); a round that drew
with unequal recorded probabilities (``audit_probability``, higher where the model was unsure:
selectors_quality) plots its weighted active-inference estimate and interval instead.  Actively
chosen items never count: they are biased towards hard cases by design and have no known probability.
"""
from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from django.db.models import Case, Count, IntegerField, OuterRef, Q, Subquery, Value, When
from django.utils import timezone

from .models import Annotation, Item, Job, Project, QueueEntry, Round
from .payloads import job_payload, round_payload
from .selectors import item_totals, pending_count
from .selectors_labels import LABEL_ACTIONS, final_labels
from .selectors_quality import accuracy_estimate, audit_rate_plan, audit_strata, quality_report, stratum_interval

HOURS = 24
ROUNDS_SHOWN = 30


def wilson_interval(correct: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval of a binomial proportion (Wilson 1927, eq. for p±)."""
    if n == 0:
        return 0.0, 1.0
    p = correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def learning_curve(*, project: Project) -> list[dict[str, Any]]:
    """One point per round that served audit items which have been labeled since."""
    entries = list(
        QueueEntry.objects.filter(project=project, is_audit=True, state=QueueEntry.State.DONE, round__isnull=False)
        .exclude(predicted_label="")
        .values_list("item_id", "predicted_label", "round_id")
    )
    if not entries:
        return []
    labels = final_labels({e[0] for e in entries})
    per_round: dict[int, list[int]] = {}
    for item_id, predicted, round_id in entries:
        fl = labels.get(item_id)
        if fl is None:
            continue  # undone or skipped since: no label to compare with
        acc = per_round.setdefault(round_id, [0, 0])
        acc[0] += int(fl.label == predicted)
        acc[1] += 1
    rounds = {r.pk: r for r in Round.objects.filter(pk__in=per_round)}
    # Rounds whose audit items were drawn with unequal probabilities (selectors_quality): the point is
    # that round's active-inference estimate, since their plain share would lean towards the hard items.
    weighted = {s["round"]: s for s in audit_strata(project=project) if s["poisson"]}
    points = []
    for round_id, (correct, n) in per_round.items():
        rnd = rounds[round_id]
        lo, hi = wilson_interval(correct, n)
        point = {"round": rnd.number, "labels": rnd.labeled_count, "n": n, "correct": correct,
                 "accuracy": correct / n, "lo": lo, "hi": hi}
        if rnd.number in weighted:
            est = stratum_interval(weighted[rnd.number])
            point.update(accuracy=est.value, lo=est.low, hi=est.high, estimator="active_inference")
        points.append(point)
    points.sort(key=lambda p: (p["labels"], p["round"]))
    return points


def label_distribution(*, project: Project) -> list[dict[str, Any]]:
    """Items per final label, in the project's class order (then any label no longer a class).

    One grouped query: each item's final label (``selectors_labels``: a current correction first,
    else the latest current label) is a correlated subquery over the (item, is_current) index.
    """
    final = (
        Annotation.objects.filter(item=OuterRef("pk"), is_current=True, action__in=LABEL_ACTIONS)
        .exclude(label="")
        .annotate(corr=Case(When(action=Annotation.Action.CORRECT, then=Value(1)), default=Value(0),
                            output_field=IntegerField()))
        .order_by("-corr", "-id")
        .values("label")[:1]
    )
    # Only items with a current label row can have a final label: restricting to them first keeps
    # the correlated subquery off the unlabeled items (a million-item project with a few thousand
    # labels: docs/million-items.md).
    labeled = (Annotation.objects.filter(item__project=project, is_current=True, action__in=LABEL_ACTIONS)
               .exclude(label="").values("item_id"))
    rows = (Item.objects.filter(project=project, pk__in=labeled).annotate(final=Subquery(final))
            .exclude(final=None).values("final").annotate(n=Count("id")).order_by())
    counts = {r["final"]: r["n"] for r in rows}
    order = list(project.classes) + sorted(set(counts) - set(project.classes))
    return [{"label": c, "count": counts.get(c, 0)} for c in order]


def labels_per_annotator(*, project: Project) -> list[dict[str, Any]]:
    """Current labels (and corrections) per person, most first."""
    rows = (
        Annotation.objects.filter(item__project=project, is_current=True, action__in=LABEL_ACTIONS)
        .values("annotator__username").annotate(n=Count("id")).order_by("-n", "annotator__username")
    )
    return [{"annotator": r["annotator__username"], "labels": r["n"]} for r in rows]


def labels_per_hour(*, project: Project, hours: int = HOURS, now=None) -> list[dict[str, Any]]:
    """Label events (labels and corrections, including ones undone later) per hour, last ``hours`` hours.

    One query with a filtered count per hour: plain range comparisons, so no per-row date function
    (SQLite evaluates ``TruncHour`` in Python, row by row).
    """
    now = now or timezone.now()
    end = now.replace(minute=0, second=0, microsecond=0)
    start = end - timedelta(hours=hours - 1)
    edges = [start + timedelta(hours=h) for h in range(hours + 1)]
    counts = Annotation.objects.filter(
        item__project=project, action__in=LABEL_ACTIONS, created_at__gte=start, created_at__lt=edges[-1],
    ).aggregate(**{f"h{h}": Count("id", filter=Q(created_at__gte=edges[h], created_at__lt=edges[h + 1]))
                   for h in range(hours)})
    return [{"hour": edges[h].isoformat(), "labels": counts[f"h{h}"]} for h in range(hours)]


def project_stats(*, project: Project) -> dict[str, Any]:
    """Everything the dashboard shows, as one JSON-able dict (also the ``stats.updated`` payload)."""
    curve = learning_curve(project=project)
    accuracy = accuracy_estimate(project=project)
    n_audit = sum(p["n"] for p in curve)
    correct = sum(p["correct"] for p in curve)
    distribution = label_distribution(project=project)
    jobs = Job.objects.filter(project=project).order_by("-created_at")[:5]
    rounds = [round_payload(r) for r in Round.objects.filter(project=project).order_by("-number")[:ROUNDS_SHOWN]]
    items = item_totals(project=project)  # kept counts, not a scan of the items
    return {
        "project": project.pk,
        "generated_at": timezone.now().isoformat(),
        "classes": list(project.classes),
        "totals": {
            "items": items["items"],
            "embedded": items["embedded"],
            "labeled": sum(d["count"] for d in distribution),
            "pending": pending_count(project=project),  # kept (services/queue_counts.py)
            "leased": QueueEntry.objects.filter(project=project, state=QueueEntry.State.LEASED).count(),
        },
        # accuracy: the audit estimate (the plain share, or its 1/probability-weighted form once the draws
        # were unequal: selectors_quality)
        "audit": {"n": n_audit, "correct": correct, "accuracy": (accuracy["audit"] or {}).get("value")},
        "accuracy": accuracy,
        "audit_plan": audit_rate_plan(project=project, accuracy=accuracy),  # the next round's audit rate
        "quality": quality_report(project=project),
        "learning_curve": curve,
        "label_distribution": distribution,
        "per_annotator": labels_per_annotator(project=project),
        "per_hour": labels_per_hour(project=project),
        "rounds": rounds[::-1],  # oldest first
        "training": rounds[0] if rounds else None,  # the newest round, or None before the first
        "jobs": [job_payload(j) for j in jobs],
    }
