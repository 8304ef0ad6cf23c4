"""The quality step is off the round's critical path: the round fits the head once, writes its queue,
and the follow-up quality task (after commit) runs the out-of-fold fits, writes the suspect scores and
stores the calibration that the NEXT round applies to its pool before its audit draw."""
from __future__ import annotations

import numpy as np
import pytest

from annotate import storage
from annotate.models import Item, QualityReport, QueueEntry
from annotate.services.queue import queue_lease
from annotate.services.annotations import annotation_submit
from annotate.services.quality import quality_refresh
from selection.head import LogisticHead
from selection.quality.correctness import correctness_features, knn_proba, predict_logistic

pytestmark = pytest.mark.django_db


@pytest.fixture
def fits(monkeypatch):
    """Counts LogisticHead.fit calls."""
    n = {"fits": 0}
    real = LogisticHead.fit

    def counting(self, *a, **kw):
        n["fits"] += 1
        return real(self, *a, **kw)

    monkeypatch.setattr(LogisticHead, "fit", counting)
    return n


def _label(project, user, n):
    for e in queue_lease(project=project, user=user, n=n):
        annotation_submit(project=project, user=user, item_id=e.item_id, label=e.item.ground_truth)


def test_the_round_fits_once_and_the_next_round_applies_the_stored_calibration(
        make_project, make_round, make_user, fits, django_capture_on_commit_callbacks, monkeypatch):
    from annotate.services import quality as quality_service

    project = make_project(n_items=160, batch_size=50, audit_rate=0.5, dim=5)
    a = make_user("a")
    make_round(project)
    _label(project, a, 50)

    # the round: one head fit, its queue written, no suspect score yet; the quality task follows the commit
    sent = []
    monkeypatch.setattr(quality_service.current_app.tasks["annotate.tasks.quality_refresh"], "apply_async",
                        lambda args, **kw: sent.append(args))
    fits["fits"] = 0
    with django_capture_on_commit_callbacks(execute=True):
        rnd = make_round(project)
    assert fits["fits"] == 1
    assert QueueEntry.objects.filter(round=rnd).count() > 0
    assert not Item.objects.filter(project=project, suspect_score__isnull=False).exists()
    assert sent == [[project.pk]]
    q = rnd.metrics["quality"]
    assert q["calibration"] == [1.0, 0.0] and "calibration_from" not in q  # nothing stored yet: max probability
    assert all(e.correct_probability is not None for e in QueueEntry.objects.filter(round=rnd, is_audit=True))

    # the task: the out-of-fold pass (5 folds + the full head), scores and a stored calibration
    fits["fits"] = 0
    quality_refresh(project_id=project.pk)
    assert fits["fits"] == 6
    n_labels = Item.objects.filter(project=project, suspect_score__isnull=False).count()
    assert n_labels == 50
    cal = QualityReport.objects.get(project=project).data["calibration"]
    assert cal["labels"] == 50 and cal["after_round"] == rnd.number and len(cal["neighbours"]) == 3

    # labels arrive; the next round applies the stored calibration (fitted on the 50 labels before it ran)
    _label(project, a, 20)
    fits["fits"] = 0
    nxt = make_round(project)
    assert fits["fits"] == 1
    q = nxt.metrics["quality"]
    assert q["calibration_from"] == {"after_round": rnd.number, "labels": 50}
    assert q["confidence_model"] == "neighbours"
    assert q["calibration"] == [round(cal["platt"][0], 4), round(cal["platt"][1], 4)]
    # independent reference: the saved head's probabilities, the stored weights, the round's training labels
    head = LogisticHead.from_state(dict(np.load(storage.media_path(nxt.model_file))))
    X_all = np.asarray(storage.load_embeddings(project))
    labels = {i.pk: i for i in Item.objects.filter(project=project)}
    from annotate.selectors import labeled_item_labels

    lab = labeled_item_labels(project=project)
    classes = list(project.classes)
    ids = sorted(lab)
    X_lab = X_all[[labels[i].row for i in ids]]
    y = np.array([classes.index(lab[i]) for i in ids])
    audit = list(QueueEntry.objects.filter(round=nxt, is_audit=True))
    assert audit
    X_a = X_all[[labels[e.item_id].row for e in audit]]
    P = head.predict_proba(X_a)
    want = predict_logistic(correctness_features(P, knn_proba(X_lab, y, X_a, len(classes))),
                            np.asarray(cal["neighbours"]))
    got = np.array([e.correct_probability for e in audit])
    assert np.allclose(got, want, atol=1e-5)
    assert len(y) == nxt.metrics["labeled"]
