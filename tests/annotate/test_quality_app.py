"""Quality in the app: overlap serving, consensus labels, suspect scores, the accuracy estimate, the report."""
from __future__ import annotations

import numpy as np
import pytest

from annotate.models import Annotation, Item, QualityReport, QueueEntry, Round
from annotate.selectors import labeled_item_labels
from annotate.selectors_quality import accuracy_estimate
from annotate.services.annotations import annotation_submit, annotation_undo
from annotate.services.quality import label_matrix, quality_refresh
from annotate.services.queue import queue_lease
from annotate.services.review import annotation_correct
from selection.quality import audit_accuracy, dawid_skene

pytestmark = pytest.mark.django_db


def _label_all(project, user, label_of=lambda e: e.item.ground_truth, n=50):
    got = queue_lease(project=project, user=user, n=n)
    for e in got:
        annotation_submit(project=project, user=user, item_id=e.item_id, label=label_of(e))
    return got


def test_overlapped_items_go_to_k_different_annotators_and_never_twice_to_one(make_project, make_round, make_user):
    project = make_project(n_items=40, batch_size=10, overlap_rate=1.0, overlap_k=3)
    a, b, c = make_user("a"), make_user("b"), make_user("c")
    rnd = make_round(project)
    assert set(QueueEntry.objects.filter(round=rnd).values_list("overlap_k", flat=True)) == {3}
    first = _label_all(project, a)
    assert len(first) == 10
    # a labeled all ten: the copies wait for someone else, never for a
    assert queue_lease(project=project, user=a, n=50) == []
    second = _label_all(project, b)
    assert {e.item_id for e in second} == {e.item_id for e in first}
    assert queue_lease(project=project, user=b, n=50) == []
    _label_all(project, c)
    # three people labeled each item: no copy is left for anyone
    assert not QueueEntry.objects.filter(project=project, state__in=QueueEntry.OPEN).exists()
    for item_id in {e.item_id for e in first}:
        who = Annotation.objects.filter(item_id=item_id, is_current=True, action="label").values_list(
            "annotator__username", flat=True)
        assert sorted(who) == ["a", "b", "c"]


def test_without_overlap_an_item_is_served_once(make_project, make_round, make_user):
    project = make_project(n_items=20, batch_size=6, overlap_rate=0.0)
    a, b = make_user("a"), make_user("b")
    make_round(project)
    _label_all(project, a)
    assert queue_lease(project=project, user=b, n=50) == []


def test_overlap_copies_survive_a_new_round_and_undo_keeps_the_count(make_project, make_round, make_user):
    project = make_project(n_items=40, batch_size=6, overlap_rate=1.0, overlap_k=2)
    a, b = make_user("a"), make_user("b")
    make_round(project)
    first = _label_all(project, a)
    make_round(project)  # supersedes pending entries, but not the copies of labeled items
    copies = QueueEntry.objects.filter(project=project, state="pending", item_id__in=[e.item_id for e in first])
    assert copies.count() == len(first)
    # undo: a gets the item back (the copy), relabels it, and it still waits for b
    annotation_undo(project=project, user=a, item_id=first[0].item_id)
    annotation_submit(project=project, user=a, item_id=first[0].item_id, label=first[0].item.ground_truth)
    assert QueueEntry.objects.filter(item_id=first[0].item_id, state="pending").count() == 1
    got = {e.item_id for e in queue_lease(project=project, user=b, n=50)}
    assert {e.item_id for e in first} <= got


def test_refresh_writes_dawid_skene_consensus_used_for_training_unless_corrected(make_project, make_user):
    from tests.factories import add_member

    project = make_project(classes=("cat", "dog", "fox"), n_items=60)
    users = [make_user(n) for n in ("good", "ok", "bad")]
    rev = make_user("rev")
    add_member(project, rev, "reviewer")
    rng = np.random.default_rng(0)
    accs = [0.95, 0.7, 0.4]
    items = list(project.items.order_by("pk"))
    for item in items:
        for u, acc in zip(users, accs):
            truth = item.ground_truth
            lab = truth if rng.random() < acc else str(rng.choice([c for c in project.classes if c != truth]))
            Annotation.objects.create(item=item, annotator=u, label=lab)
    report = quality_refresh(project_id=project.pk)
    # the stored consensus is the library's Dawid-Skene on the same matrix
    ids, _, L = label_matrix(project=project)
    ds = dawid_skene(L, 3)
    stored = dict(Item.objects.filter(pk__in=ids).values_list("pk", "consensus_label"))
    assert [stored[i] for i in ids] == [project.classes[k] for k in ds.labels]
    assert [a["user"] for a in report["annotators"]] == ["good", "ok", "bad"]
    assert report["annotators"][0]["ds_accuracy"] > report["annotators"][2]["ds_accuracy"]
    assert report["items_overlapped"] == 60 and -1 <= report["alpha"] <= 1 and len(report["pairs"]) == 3
    assert QualityReport.objects.get(project=project).data["alpha"] == report["alpha"]
    # training labels follow the consensus, a reviewer's correction still wins
    train = labeled_item_labels(project=project)
    assert all(train[i] == stored[i] for i in ids)
    target = items[0]
    new = next(c for c in project.classes if c != stored[target.pk])
    annotation_correct(project=project, reviewer=rev, item_id=target.pk, label=new)
    assert labeled_item_labels(project=project)[target.pk] == new
    # consensus beats the latest label (the unreliable annotator labeled last)
    truth = {i.pk: i.ground_truth for i in items}
    acc_consensus = np.mean([stored[i] == truth[i] for i in ids])
    acc_latest = np.mean([Annotation.objects.get(item_id=i, annotator=users[2]).label == truth[i] for i in ids])
    assert acc_consensus > acc_latest + 0.2


def test_rounds_write_suspect_scores_that_rank_flipped_labels_first(make_project, make_round, make_user):
    project = make_project(classes=("cat", "dog", "fox"), n_items=90, batch_size=80, dim=6)
    a = make_user("a")
    make_round(project)
    flipped = set()
    classes = project.classes

    def label_of(e):
        if len(flipped) < 6 and e.item_id % 5 == 0:
            flipped.add(e.item_id)
            return classes[(classes.index(e.item.ground_truth) + 1) % 3]
        return e.item.ground_truth

    _label_all(project, a, label_of=label_of, n=50)
    _label_all(project, a, label_of=label_of, n=50)
    rnd = make_round(project)
    assert "quality" in rnd.metrics and rnd.metrics["quality"]["pool_correct_mean"] > 0
    quality_refresh(project_id=project.pk)  # the task the round sends after its commit scores the labels
    scored = list(Item.objects.filter(project=project, suspect_score__isnull=False)
                  .order_by("-suspect_score").values_list("pk", flat=True))
    assert len(scored) == Annotation.objects.filter(item__project=project).count()
    assert len(set(scored[:6]) & flipped) >= 5


def test_review_api_sorts_by_suspect_score(client, make_project, make_user):
    from tests.factories import add_member

    project = make_project(n_items=6)
    rev = make_user("rev")
    add_member(project, rev, "reviewer")
    items = list(project.items.order_by("pk"))
    for k, item in enumerate(items):
        Annotation.objects.create(item=item, annotator=rev, label="cat")
        item.suspect_score = [0.1, 3.0, None, 0.5, 2.0, 0.0][k]
        item.save(update_fields=["suspect_score"])
    client.force_login(rev)
    data = client.get(f"/api/projects/{project.pk}/review/items").json()
    assert [r["item_id"] for r in data["items"]] == [items[i].pk for i in (1, 4, 3, 0, 5, 2)]
    newest = client.get(f"/api/projects/{project.pk}/review/items?sort=newest").json()
    assert [r["item_id"] for r in newest["items"]] == [i.pk for i in reversed(items)]
    bad = client.get(f"/api/projects/{project.pk}/review/items?sort=loss")
    assert bad.status_code == 400 and "sort" in bad.json()["error"]


def test_accuracy_estimate_is_the_weighted_horvitz_thompson_sum_by_hand(make_project, make_user):
    """A legacy round (uniform draw, pi = n_audit / pool) and an active one (recorded pi, one audit
    item superseded unlabeled), against the estimator written out with NumPy."""
    project = make_project(classes=("cat", "dog"), n_items=40)
    a = make_user("a")
    rng = np.random.default_rng(3)
    r1 = Round.objects.create(project=project, number=1, status="done", strategy="margin",
                              metrics={"pool": 200, "audit": 12, "quality": {"pool_correct_mean": 0.8}})
    q2 = {"audit_design": "poisson", "audit_expected": 9.5, "pool_conf_sum": 270.0, "spread_over_pi": 900.0,
          "spread": 20.0}
    r2 = Round.objects.create(project=project, number=2, status="done", strategy="margin",
                              metrics={"pool": 300, "audit": 13, "quality": q2})
    rows = {1: [], 2: []}
    for k, item in enumerate(project.items.order_by("pk")[:25]):
        rnd = r1 if k < 12 else r2
        prob = float(rng.uniform(0.5, 1))
        pi = 12 / 200 if rnd is r1 else float(rng.uniform(0.02, 0.6))
        right = rng.random() < prob
        pred = item.ground_truth if right else next(c for c in project.classes if c != item.ground_truth)
        labeled = k != 24  # the last audit item of round 2 was superseded before anyone took it
        QueueEntry.objects.create(project=project, round=rnd, item=item, rank=k, is_audit=True,
                                  state="done" if labeled else "expired", predicted_label=pred,
                                  correct_probability=prob, audit_probability=pi if rnd is r2 else None)
        if labeled:
            Annotation.objects.create(item=item, annotator=a, label=item.ground_truth)
            rows[rnd.number].append((float(right), prob, pi))
    est = accuracy_estimate(project=project)

    def by_hand(r, pool, conf_sum, rho, spread, use_f=True):
        y, f, pi = (np.array(c) for c in zip(*r))
        f = f if use_f else 0 * f
        pi = pi * rho
        value = ((conf_sum if use_f else 0) + np.sum((y - f) / pi)) / pool
        var = np.sum((1 - pi) * (y - f) ** 2 / pi**2) / pool**2
        return value, max(var, spread / pool**2) if (spread is not None and use_f) else var

    parts = {}
    for use_f in (True, False):
        v1, s1 = by_hand(rows[1], 200, 0.8 * 200, 1.0, None, use_f)
        v2, s2 = by_hand(rows[2], 300, 270.0, 12 / 13, 900.0 / (12 / 13) - 20.0, use_f)
        w = np.array([12, 9.5]) / 21.5
        parts[use_f] = (w[0] * v1 + w[1] * v2, 1.959963984540054 * np.sqrt(w[0] ** 2 * s1 + w[1] ** 2 * s2))
    best = est["best"]
    assert best["key"] == "active_inference" and best["n_labels"] == 24 and "unsure" in best["name"]
    # (the intervals are clipped to [0, 1]: compare the lower end)
    assert best["value"] == pytest.approx(parts[True][0])
    assert best["low"] == pytest.approx(max(0.0, parts[True][0] - parts[True][1]))
    assert est["audit"]["key"] == "audit_weighted"
    assert est["audit"]["value"] == pytest.approx(parts[False][0])
    assert est["audit"]["low"] == pytest.approx(max(0.0, parts[False][0] - parts[False][1]))


def test_with_uniform_draws_only_the_audit_share_is_still_wilson(make_project, make_user):
    project = make_project(classes=("cat", "dog"), n_items=12)
    a = make_user("a")
    rnd = Round.objects.create(project=project, number=1, status="done", strategy="margin",
                               metrics={"pool": 50, "audit": 5})
    y = []
    for k, item in enumerate(project.items.order_by("pk")[:5]):
        pred = item.ground_truth if k % 2 else next(c for c in project.classes if c != item.ground_truth)
        QueueEntry.objects.create(project=project, round=rnd, item=item, rank=k, is_audit=True, state="done",
                                  predicted_label=pred)
        Annotation.objects.create(item=item, annotator=a, label=item.ground_truth)
        y.append(float(k % 2))
    est = accuracy_estimate(project=project)
    ref = audit_accuracy(y)
    assert est["best"]["key"] == "audit" and est["active_inference"] is None  # fewer than 10 labels
    assert (est["audit"]["value"], est["audit"]["low"]) == pytest.approx((ref.value, ref.low))


def test_dashboard_and_stats_api_carry_the_estimate_and_the_agreement_report(client, make_project, make_user):
    project = make_project(classes=("cat", "dog"), n_items=12)
    users = [make_user(n) for n in ("a", "b", "c")]
    for k, item in enumerate(project.items.order_by("pk")):
        for j, u in enumerate(users):
            Annotation.objects.create(item=item, annotator=u, label=item.ground_truth if (k + j) % 4 else "cat")
    quality_refresh(project_id=project.pk)
    client.force_login(users[0])
    from tests.factories import add_member

    add_member(project, users[0], "annotator")
    stats = client.get(f"/api/projects/{project.pk}/stats").json()
    assert stats["quality"]["items_overlapped"] == 12 and len(stats["quality"]["annotators"]) == 3
    assert stats["accuracy"] == {"best": None, "audit": None, "active_inference": None,
                                 "scope": None}  # no audit labels yet
    page = client.get(f"/projects/{project.pk}/").content.decode()
    assert 'id="quality"' in page and '"items_overlapped": 12' in page


def test_audit_entries_store_the_confidence_the_estimate_corrects(make_project, make_round, make_user, monkeypatch):
    from annotate.services import quality_scores as quality_service

    project = make_project(n_items=120, batch_size=40, audit_rate=0.5, dim=5)
    a = make_user("a")
    make_round(project)
    _label_all(project, a, n=40)
    quality_refresh(project_id=project.pk)  # stores the calibration the next round applies
    rnd = make_round(project)
    assert rnd.metrics["quality"]["confidence_model"] == "neighbours"
    audit = QueueEntry.objects.filter(round=rnd, is_audit=True)
    assert audit.exists() and all(0 <= e.correct_probability <= 1 for e in audit)
    # the audit draw: known probabilities, higher where the model is less sure it is right
    q = rnd.metrics["quality"]
    assert q["audit_design"] == "poisson" and q["audit_expected"] == pytest.approx(min(40, rnd.pool_size) * 0.5)
    assert all(0 < e.audit_probability <= 1 for e in audit)
    by_doubt = sorted((e.correct_probability * (1 - e.correct_probability), e.audit_probability) for e in audit)
    assert by_doubt[0][1] <= by_doubt[-1][1] + 1e-12
    # beyond the neighbour budget: Platt-scaled max probability, still stored
    monkeypatch.setattr(quality_service, "KNN_BUDGET", 0)
    _label_all(project, a, n=50)
    rnd = make_round(project)
    assert "confidence_model" not in rnd.metrics["quality"]
    assert all(e.correct_probability is not None for e in QueueEntry.objects.filter(round=rnd, is_audit=True))


def test_three_annotators_end_to_end_estimate_agreement_and_suspects(make_project, make_round, make_user, client):
    """The issue's "done when", at the service level: three people of different accuracy label a
    project with overlap; the stats carry an interval, agreement and per-annotator accuracy, and the
    review order puts wrong labels first."""
    from annotate.selectors_stats import project_stats
    from tests.factories import add_member

    project = make_project(classes=("cat", "dog", "fox"), n_items=400, dim=8, batch_size=40, audit_rate=0.3,
                           overlap_rate=0.5, overlap_k=3)
    people = {"ann": 0.97, "bob": 0.85, "cy": 0.65}
    users = {n: make_user(n) for n in people}
    rev = make_user("rev")
    add_member(project, rev, "reviewer")
    rng = np.random.default_rng(7)
    wrong: set[tuple[int, str]] = set()

    def label_of(e, name):
        truth = e.item.ground_truth
        if rng.random() < people[name]:
            return truth
        wrong.add((e.item_id, name))
        return str(rng.choice([c for c in project.classes if c != truth]))

    make_round(project)
    while Annotation.objects.filter(item__project=project).count() < 260:
        for name, u in users.items():
            _label_all(project, u, label_of=lambda e, name=name: label_of(e, name), n=15)
        make_round(project)
    report = quality_refresh(project_id=project.pk)  # consensus, then scores of the latest labels
    make_round(project)  # applies the calibration that refresh stored
    stats = project_stats(project=project)
    acc = stats["accuracy"]["best"]
    assert acc["key"] == "active_inference" and acc["n_labels"] >= 20 and acc["low"] <= acc["value"] <= acc["high"]
    ds_acc = {a["user"]: a["ds_accuracy"] for a in report["annotators"]}
    assert ds_acc["ann"] > ds_acc["bob"] > ds_acc["cy"]
    assert report["alpha"] is not None and report["items_overlapped"] > 20
    # final labels that are still wrong (single-labeled mistakes) come first in the review order
    finals = labeled_item_labels(project=project)
    truth = dict(Item.objects.filter(project=project).values_list("pk", "ground_truth"))
    bad = {i for i, lab in finals.items() if lab != truth[i]}
    assert bad, "the simulation should leave some wrong final labels"
    client.force_login(rev)
    top = [r["item_id"] for r in client.get(f"/api/projects/{project.pk}/review/items").json()["items"]][:len(bad)]
    hits = len(set(top) & bad)
    print(f"wrong final labels {len(bad)} of {len(finals)}; in the first {len(bad)} of the review: {hits}")
    assert hits >= 3 * len(bad) * len(bad) / len(finals)  # three times a random order's expectation


def test_migration_backfills_uniform_probabilities_of_old_audit_entries(make_project):
    import importlib

    from django.apps import apps

    mig = importlib.import_module("annotate.migrations.0006_audit_probability")
    project = make_project(n_items=6)
    items = list(project.items.order_by("pk"))
    old = Round.objects.create(project=project, number=1, status="done", metrics={"pool": 40, "audit": 4})
    bare = Round.objects.create(project=project, number=2, status="done", metrics={})
    a = QueueEntry.objects.create(project=project, round=old, item=items[0], is_audit=True)
    b = QueueEntry.objects.create(project=project, round=old, item=items[1], is_audit=False)
    c = QueueEntry.objects.create(project=project, round=bare, item=items[2], is_audit=True)
    mig.backfill_uniform_probabilities(apps, None)
    for e in (a, b, c):
        e.refresh_from_db()
    assert a.audit_probability == pytest.approx(0.1)
    assert b.audit_probability is None and c.audit_probability is None  # not audit / no pool size recorded


def test_a_round_whose_poisson_draw_chose_nothing_is_a_stratum_of_its_own(make_project, make_user):
    """Leaving such a round out would condition the others on "at least one item drawn" (biased when f is
    miscalibrated: tests/selection/quality); it enters as the exact pool sum of f with its expected variance."""
    project = make_project(classes=("cat", "dog"), n_items=30)
    a = make_user("a")
    q1 = {"audit_design": "poisson", "audit_expected": 2.0, "pool_conf_sum": 160.0, "spread_over_pi": 3000.0,
          "spread": 16.0}
    q2 = {"audit_design": "poisson", "audit_expected": 1.5, "pool_conf_sum": 150.0, "spread_over_pi": 2500.0,
          "spread": 15.0}
    r1 = Round.objects.create(project=project, number=1, status="done", strategy="margin",
                              metrics={"pool": 200, "audit": 12, "quality": q1})
    Round.objects.create(project=project, number=2, status="done", strategy="margin",
                         metrics={"pool": 180, "audit": 0, "quality": q2})
    rows = []
    for k, item in enumerate(project.items.order_by("pk")[:12]):
        right, f, pi = k % 3 != 0, 0.9, 0.05 + 0.01 * k
        pred = item.ground_truth if right else next(c for c in project.classes if c != item.ground_truth)
        QueueEntry.objects.create(project=project, round=r1, item=item, rank=k, is_audit=True, state="done",
                                  predicted_label=pred, correct_probability=f, audit_probability=pi)
        Annotation.objects.create(item=item, annotator=a, label=item.ground_truth)
        rows.append((float(right), f, pi))
    y, f, pi = (np.array(c) for c in zip(*rows))
    v1 = (160.0 + np.sum((y - f) / pi)) / 200
    s1 = max(np.sum((1 - pi) * (y - f) ** 2 / pi**2), 3000.0 - 16.0) / 200**2
    v2, s2 = 150.0 / 180, (2500.0 - 15.0) / 180**2
    w = np.array([2.0, 1.5]) / 3.5
    value, hw = w @ [v1, v2], 1.959963984540054 * np.sqrt(w**2 @ [s1, s2])
    est = accuracy_estimate(project=project)
    best = est["best"]
    assert est["scope"] == {"rounds": [1, 2], "labels": [0, 0]}  # what the tile says it estimates
    assert best["key"] == "active_inference" and best["n_labels"] == 12
    assert best["value"] == pytest.approx(value)
    assert best["low"] == pytest.approx(value - hw)


def test_adaptive_audit_rate_drops_to_maintenance_once_the_interval_meets_the_target(make_project, make_round,
                                                                                     make_user, client):
    from annotate.selectors_quality import audit_rate_plan
    from tests.factories import add_member

    project = make_project(n_items=160, batch_size=40, audit_rate=0.5, dim=5, audit_target_halfwidth=0.45)
    a = make_user("a")
    plan = audit_rate_plan(project=project)
    assert plan == {"rate": 0.5, "base_rate": 0.5, "target": 0.45, "maintenance": 0.1, "half_width": None}
    make_round(project)  # no model yet: no estimate
    _label_all(project, a, n=40)
    quality_refresh(project_id=project.pk)
    rnd = make_round(project)  # the first round with a model: still no estimate, the project's rate
    assert rnd.metrics["quality"]["audit_rate"] == 0.5 and rnd.metrics["quality"]["audit_rate_half_width"] is None
    _label_all(project, a, n=40)
    quality_refresh(project_id=project.pk)
    best = accuracy_estimate(project=project)["best"]
    assert best is not None and best["half_width"] <= 0.45  # the interval meets the target
    rnd = make_round(project)
    q = rnd.metrics["quality"]
    assert q["audit_rate"] == 0.1 and q["audit_rate_half_width"] == pytest.approx(best["half_width"])
    assert q["audit_expected"] == pytest.approx(min(rnd.batch_size, rnd.pool_size) * 0.1)  # the lower rate
    # a target the interval does not meet: back to the project's rate; 0 turns adaptation off
    project.audit_target_halfwidth = best["half_width"] / 2
    project.save()
    rnd = make_round(project)
    assert rnd.metrics["quality"]["audit_rate"] == 0.5
    assert rnd.metrics["quality"]["audit_expected"] == pytest.approx(min(rnd.batch_size, rnd.pool_size) * 0.5)
    project.audit_target_halfwidth = 0.0
    project.save()
    assert audit_rate_plan(project=project) == {"rate": 0.5, "base_rate": 0.5, "target": None,
                                                "maintenance": 0.1, "half_width": None}
    add_member(project, a, "annotator")
    client.force_login(a)
    assert client.get(f"/api/projects/{project.pk}/stats").json()["audit_plan"]["rate"] == 0.5

