"""Dashboard statistics: the prequential learning curve from audit entries, distributions, per-hour counts."""
from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from tests.factories import make_user
from django.utils import timezone

from annotate.models import Annotation, QueueEntry, Round
from annotate.selectors_stats import labels_per_hour, project_stats, wilson_interval
from annotate.services.review import annotation_correct

pytestmark = pytest.mark.django_db


def test_wilson_interval_values_and_symmetry():
    # Values of the closed form (z = 1.96) worked out separately for 8/10 and 0/5.
    lo, hi = wilson_interval(8, 10)
    assert lo == pytest.approx(0.4901624, abs=1e-6) and hi == pytest.approx(0.9433178, abs=1e-6)
    lo, hi = wilson_interval(0, 5)
    assert lo == 0.0 and hi == pytest.approx(0.4344825, abs=1e-6)
    assert wilson_interval(0, 0) == (0.0, 1.0)
    for c, n in [(3, 7), (10, 40), (1, 1)]:  # swapping successes and failures mirrors the interval
        lo, hi = wilson_interval(c, n)
        lo2, hi2 = wilson_interval(n - c, n)
        assert lo == pytest.approx(1 - hi2) and hi == pytest.approx(1 - lo2)
        assert lo <= c / n <= hi


def test_learning_curve_counts_only_labeled_audit_items_with_a_prediction(make_project):
    project = make_project(classes=("cat", "dog", "fox"), n_items=30)
    ann, rev = make_user("ann"), make_user("rev")
    from tests.factories import add_member

    add_member(project, rev, "reviewer")
    items = list(project.items.order_by("pk"))
    r1 = Round.objects.create(project=project, number=1, status="done", strategy="margin", labeled_count=0)
    r2 = Round.objects.create(project=project, number=2, status="done", strategy="margin", labeled_count=12)
    r3 = Round.objects.create(project=project, number=3, status="done", strategy="margin", labeled_count=25)
    rng = np.random.default_rng(0)
    expected = {}  # round -> [correct, n], computed independently below
    plan = []
    for k, item in enumerate(items[:24]):
        rnd = (r1, r2, r3)[k % 3]
        is_audit = k % 4 != 0
        predicted = "" if rnd is r1 else str(rng.choice(project.classes))
        given = str(rng.choice(project.classes))
        state = QueueEntry.State.DONE if k % 7 else QueueEntry.State.PENDING
        QueueEntry.objects.create(project=project, round=rnd, item=item, rank=k, is_audit=is_audit,
                                  predicted_label=predicted, state=state)
        if state == QueueEntry.State.DONE:
            Annotation.objects.create(item=item, annotator=ann, label=given)
        plan.append((rnd, is_audit, predicted, given, state, item))
    # A reviewer corrects one audited label: the corrected label is the one compared.
    corrected = next(p for p in plan if p[1] and p[2] and p[4] == QueueEntry.State.DONE)
    new = next(c for c in project.classes if c != corrected[3])
    annotation_correct(project=project, reviewer=rev, item_id=corrected[5].pk, label=new)
    for rnd, is_audit, predicted, given, state, item in plan:
        if not is_audit or not predicted or state != QueueEntry.State.DONE:
            continue
        if item.pk == corrected[5].pk:
            given = new
        acc = expected.setdefault(rnd.number, [0, 0])
        acc[0] += predicted == given
        acc[1] += 1
    stats = project_stats(project=project)
    curve = {p["round"]: p for p in stats["learning_curve"]}
    assert set(curve) == set(expected) == {2, 3}
    for number, (correct, n) in expected.items():
        p = curve[number]
        assert (p["correct"], p["n"]) == (correct, n)
        assert p["accuracy"] == pytest.approx(correct / n)
        assert p["labels"] == {2: 12, 3: 25}[number]
        assert p["lo"] <= p["accuracy"] <= p["hi"]
    assert stats["audit"]["n"] == sum(n for _, n in expected.values())
    dist = {d["label"]: d["count"] for d in stats["label_distribution"]}
    from collections import Counter

    from annotate.selectors_labels import final_labels

    reference = Counter(f.label for f in final_labels([i.pk for i in items]).values())
    assert {k: v for k, v in dist.items() if v} == dict(reference)  # SQL grouping == the Python rule
    assert sum(dist.values()) == stats["totals"]["labeled"] == Annotation.objects.filter(
        action="label", item__project=project).values("item").distinct().count()
    per = {d["annotator"]: d["labels"] for d in stats["per_annotator"]}
    assert per == {"ann": stats["totals"]["labeled"], "rev": 1}


def test_labels_per_hour_bins_the_last_day(make_project):
    project = make_project(n_items=5)
    ann = make_user("ann")
    now = timezone.now().replace(minute=30)
    items = list(project.items.all())
    for k, hours_ago in enumerate([0, 0, 2, 30]):
        a = Annotation.objects.create(item=items[k], annotator=ann, label="cat")
        Annotation.objects.filter(pk=a.pk).update(created_at=now - timedelta(hours=hours_ago))
    bins = labels_per_hour(project=project, now=now)
    assert len(bins) == 24 and sum(b["labels"] for b in bins) == 3  # 30 h ago is outside the window
    assert bins[-1]["labels"] == 2 and bins[-3]["labels"] == 1
