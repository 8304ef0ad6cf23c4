"""What a round offers the annotator: top classes per entry, a calibrated candidate set, suggestions once
the model is right often enough (never on audit items), and the origin of each label."""
import numpy as np
import pytest

from annotate import selectors
from annotate.models import Annotation, Membership, QueueEntry
from annotate.payloads import entry_payload
from annotate.services.annotations import annotation_submit
from annotate.services.candidates import MIN_CALIBRATION, TOP_K, calibration_read, offer
from annotate.services.errors import BadInput
from annotate.services.queue import queue_lease
from selection.candidates import lac_threshold

pytestmark = pytest.mark.django_db


@pytest.fixture
def user(make_user):
    return make_user("ann")


def label_all(project, user, n, origin="manual"):
    got = queue_lease(project=project, user=user, n=n)
    for e in got:
        annotation_submit(project=project, user=user, item_id=e.item_id, label=e.item.ground_truth, origin=origin)
    return got


def rounds_with_labels(project, make_round, user, labeled: int):
    """Round 1, then ``labeled`` times: ``user`` labels a whole batch (ground truth) and the next round
    runs.  Returns the last round."""
    rnd = make_round(project)
    for _ in range(labeled):
        label_all(project, user, project.batch_size)
        rnd = make_round(project)
    return rnd


def test_entries_carry_sorted_top_classes_and_the_calibrated_set(make_project, make_round, user):
    project = make_project(n_items=80, batch_size=12, members=[(user, Membership.Role.ANNOTATOR)])
    rnd2 = rounds_with_labels(project, make_round, user, 1)
    entries = list(rnd2.entries.all())
    t = rnd2.metrics["candidate_threshold"]
    for e in entries:
        probs = [p for _, p in e.top_classes]
        assert len(e.top_classes) == min(TOP_K, len(project.classes))
        assert probs == sorted(probs, reverse=True) and abs(sum(probs) - 1) < 1e-3
        assert e.top_classes[0][0] == e.predicted_label
        # the LAC set {y : p(y) >= t}, at least the best guess; stored probabilities are rounded to 1e-5
        at_least, at_most = sum(p >= t + 1e-5 for p in probs), sum(p >= t - 1e-5 for p in probs)
        assert max(1, at_least) <= e.candidate_count <= max(1, at_most), (e.candidate_count, probs, t)
    # Round 3 calibrates on round 2's entries (served with predictions) against the labels they got.
    label_all(project, user, 12)
    rnd3 = make_round(project)
    done = QueueEntry.objects.filter(round=rnd2, state=QueueEntry.State.DONE).select_related("item")
    p_true = [dict(e.top_classes)[e.item.ground_truth] for e in done]
    assert rnd3.metrics["prequential_n"] == len(p_true) == 12
    assert rnd3.metrics["candidate_threshold"] == pytest.approx(lac_threshold(np.array(p_true),
                                                                              project.candidate_coverage))
    hits = [e.top_classes[0][0] == e.item.ground_truth for e in done]
    assert rnd3.metrics["prequential_accuracy"] == pytest.approx(np.mean(hits))
    t = rnd3.metrics["candidate_threshold"]
    for e in rnd3.entries.all():
        above = sum(p >= t for _, p in e.top_classes)
        assert e.candidate_count == max(1, above)


def test_suggestions_appear_once_the_model_is_right_often_enough_and_never_on_audit_items(
        make_project, make_round, user):
    project = make_project(n_items=120, batch_size=12, members=[(user, Membership.Role.ANNOTATOR)],
                           suggest_min_accuracy=0.5)
    rnd = rounds_with_labels(project, make_round, user, 3)
    assert rnd.metrics["prequential_n"] >= MIN_CALIBRATION
    assert rnd.metrics["prequential_accuracy"] >= 0.5  # clustered embeddings: easy
    cut = rnd.metrics["suggest_confidence"]
    assert cut is not None and rnd.metrics["suggest_target"] == 0.5
    entries = list(rnd.entries.select_related("round").filter(is_audit=False).order_by("-predicted_confidence"))
    entry, least = entries[0], entries[-1]
    assert entry.predicted_confidence >= cut
    shown = offer(entry, project=project)
    # Per item: a guess below the round's cut-off is not suggested, only offered among the candidates.
    assert ("suggestion" in offer(least, project=project)) == (least.predicted_confidence >= cut)
    assert shown["suggestion"]["label"] == entry.predicted_label
    assert [c["label"] for c in shown["candidates"]] == [c for c, _ in entry.top_classes[:len(shown["candidates"])]]
    entry.is_audit = True
    assert offer(entry, project=project) == {}
    entry.is_audit = False
    project.suggestions = False
    assert "suggestion" not in offer(entry, project=project)
    project.suggestions, project.suggest_min_accuracy = True, 1.01
    assert "suggestion" not in offer(entry, project=project)
    # The lease API hands the offer to the page.
    project.suggest_min_accuracy = 0.5
    payload = entry_payload(entry, project=project)
    assert payload["suggestion"]["label"] == entry.predicted_label and payload["item_id"] == entry.item_id


def test_labels_shown_the_model_answer_are_left_out_of_the_calibration(make_project, make_round, user):
    project = make_project(n_items=80, batch_size=12, members=[(user, Membership.Role.ANNOTATOR)])
    rounds_with_labels(project, make_round, user, 1)
    label_all(project, user, 12, origin="suggestion")
    labels = selectors.labeled_item_labels(project=project)
    assert calibration_read(project=project, labels=labels, classes=list(project.classes))["prequential_n"] == 0


def test_the_origin_of_a_label_is_stored_and_checked(make_project, make_round, user):
    project = make_project(n_items=30, batch_size=6, members=[(user, Membership.Role.ANNOTATOR)])
    make_round(project)
    e1, e2, e3 = queue_lease(project=project, user=user, n=3)
    annotation_submit(project=project, user=user, item_id=e1.item_id, label="cat", origin="suggestion")
    annotation_submit(project=project, user=user, item_id=e2.item_id, label="dog", origin="candidate")
    with pytest.raises(BadInput, match="origin"):
        annotation_submit(project=project, user=user, item_id=e3.item_id, label="dog", origin="prelabel")
    annotation_submit(project=project, user=user, item_id=e3.item_id, skip=True, origin="suggestion")
    got = dict(Annotation.objects.filter(item__project=project).values_list("item_id", "origin"))
    assert got == {e1.item_id: "suggestion", e2.item_id: "candidate", e3.item_id: "manual"}


def test_suggestion_cut_off_is_shown_where_the_model_was_right_often_enough(make_project, make_round, user):
    """The stored cut-off, recomputed by brute force from the calibration entries: the lowest confidence
    c whose entries at or above c number >= MIN_CALIBRATION and were right >= the target share."""
    project = make_project(n_items=160, batch_size=16, members=[(user, Membership.Role.ANNOTATOR)],
                           suggest_min_accuracy=0.7)
    rnd = rounds_with_labels(project, make_round, user, 3)
    labels = selectors.labeled_item_labels(project=project)
    done = QueueEntry.objects.filter(project=project, state=QueueEntry.State.DONE).exclude(top_classes=[])
    conf = np.array([e.top_classes[0][1] for e in done])
    right = np.array([e.top_classes[0][0] == labels[e.item_id] for e in done])
    qualifying = [c for c in np.unique(conf)
                  if (conf >= c).sum() >= MIN_CALIBRATION and right[conf >= c].mean() >= 0.7]
    want = min(qualifying) if qualifying else None
    got = rnd.metrics["suggest_confidence"]
    assert (got is None and want is None) or got == pytest.approx(want)
