"""Label, skip, undo: history kept, idempotent retries, refusals that change nothing."""
import uuid

import pytest

from annotate.models import Annotation, QueueEntry
from annotate.services.annotations import annotation_submit, annotation_undo
from annotate.services.errors import BadInput, Conflict, NotFound
from annotate.services.queue import queue_lease

pytestmark = pytest.mark.django_db


@pytest.fixture
def setup(two_annotators):
    project, ann1, ann2 = two_annotators
    return project, ann1, ann2, queue_lease(project=project, user=ann1, n=3)


def snapshot():
    return (list(Annotation.objects.order_by("id").values()),
            list(QueueEntry.objects.order_by("id").values("id", "state", "leased_by_id")))


def test_label_adds_a_current_row_and_closes_the_entry(setup):
    project, ann1, _, leased = setup
    res = annotation_submit(project=project, user=ann1, item_id=leased[0].item_id, label="dog", time_ms=1234)
    assert res.created
    a = Annotation.objects.get()
    assert (a.label, a.action, a.is_current, a.time_ms, a.queue_entry_id) == ("dog", "label", True, 1234, leased[0].pk)
    e = QueueEntry.objects.get(pk=leased[0].pk)
    assert e.state == QueueEntry.State.DONE and e.done_at is not None


def test_skip_closes_the_entry_as_skipped(setup):
    project, ann1, _, leased = setup
    annotation_submit(project=project, user=ann1, item_id=leased[0].item_id, skip=True)
    a = Annotation.objects.get()
    assert (a.action, a.skipped, a.label) == ("skip", True, "")
    assert QueueEntry.objects.get(pk=leased[0].pk).state == QueueEntry.State.SKIPPED


def test_undo_keeps_history_and_hands_the_item_back(setup):
    project, ann1, _, leased = setup
    item = leased[0].item_id
    annotation_submit(project=project, user=ann1, item_id=item, label="dog")
    res = annotation_undo(project=project, user=ann1)
    rows = list(Annotation.objects.filter(item_id=item).order_by("id"))
    assert [(r.action, r.is_current) for r in rows] == [("label", False), ("undo", True)]
    assert rows[1].supersedes_id == rows[0].pk
    assert res.undone.pk == rows[0].pk
    entry = QueueEntry.objects.get(pk=leased[0].pk)
    assert (entry.state, entry.leased_by_id, entry.done_at) == (QueueEntry.State.LEASED, ann1.pk, None)
    # ... so it can be labeled again, and the new label becomes the current one.
    annotation_submit(project=project, user=ann1, item_id=item, label="fox")
    current = Annotation.objects.get(item_id=item, is_current=True)
    assert (current.action, current.label, current.supersedes_id) == ("label", "fox", rows[1].pk)
    assert Annotation.objects.filter(item_id=item).count() == 3


def test_repeated_undo_walks_back_through_my_labels(setup):
    project, ann1, _, leased = setup
    for e, lab in zip(leased, ["cat", "dog", "fox"]):
        annotation_submit(project=project, user=ann1, item_id=e.item_id, label=lab)
    assert annotation_undo(project=project, user=ann1).undone.label == "fox"
    assert annotation_undo(project=project, user=ann1).undone.label == "dog"
    assert set(Annotation.objects.filter(is_current=True, action="label").values_list("label", flat=True)) == {"cat"}


def test_undo_with_nothing_to_undo_is_not_found(setup):
    project, ann1, ann2, leased = setup
    annotation_submit(project=project, user=ann1, item_id=leased[0].item_id, label="cat")
    with pytest.raises(NotFound, match="nothing to undo"):
        annotation_undo(project=project, user=ann2)  # someone else's label is not mine to undo


def test_a_retried_submit_is_stored_once(setup):
    project, ann1, _, leased = setup
    cid = uuid.uuid4()
    first = annotation_submit(project=project, user=ann1, item_id=leased[0].item_id, label="cat", client_id=cid)
    again = annotation_submit(project=project, user=ann1, item_id=leased[0].item_id, label="cat", client_id=str(cid))
    assert first.created and not again.created
    assert again.annotation.pk == first.annotation.pk
    assert Annotation.objects.count() == 1


def test_a_reused_client_id_for_another_submit_is_a_conflict(setup):
    project, ann1, _, leased = setup
    cid = uuid.uuid4()
    annotation_submit(project=project, user=ann1, item_id=leased[0].item_id, label="cat", client_id=cid)
    before = snapshot()
    with pytest.raises(Conflict, match="already used"):
        annotation_submit(project=project, user=ann1, item_id=leased[1].item_id, label="cat", client_id=cid)
    assert snapshot() == before


def test_a_double_submit_without_the_client_id_is_refused(setup):
    project, ann1, _, leased = setup
    annotation_submit(project=project, user=ann1, item_id=leased[0].item_id, label="cat")
    before = snapshot()
    with pytest.raises(Conflict, match="double submit"):
        annotation_submit(project=project, user=ann1, item_id=leased[0].item_id, label="dog")
    assert snapshot() == before


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(label="wolf"), BadInput, "not one of the project's classes"),
    (dict(label=None), BadInput, "not one of the project's classes"),
    (dict(label=3), BadInput, "not one of the project's classes"),
    (dict(label="cat", client_id="not-a-uuid"), BadInput, "not a UUID"),
    (dict(label="cat", time_ms=-5), BadInput, "time_ms"),
    (dict(label="cat", time_ms="fast"), BadInput, "time_ms"),
])
def test_bad_input_changes_nothing(setup, kwargs, error, match):
    project, ann1, _, leased = setup
    before = snapshot()
    with pytest.raises(error, match=match):
        annotation_submit(project=project, user=ann1, item_id=leased[0].item_id, **kwargs)
    assert snapshot() == before


def test_an_item_not_leased_to_me_is_refused(setup):
    project, ann1, ann2, leased = setup
    before = snapshot()
    with pytest.raises(Conflict, match="leased to another annotator"):
        annotation_submit(project=project, user=ann2, item_id=leased[0].item_id, label="cat")
    free = QueueEntry.objects.filter(state=QueueEntry.State.PENDING).first()
    with pytest.raises(Conflict, match="not leased to you"):
        annotation_submit(project=project, user=ann1, item_id=free.item_id, label="cat")
    assert snapshot() == before


def test_an_item_of_another_project_is_not_found(setup, make_project):
    project, ann1, _, _ = setup
    other = make_project()
    item = other.items.first()
    with pytest.raises(NotFound, match=f"not in project {project.pk}"):
        annotation_submit(project=project, user=ann1, item_id=item.pk, label="cat")
    for bad in (0, -3, "7", None, 1.5):
        with pytest.raises(BadInput, match="item_id"):
            annotation_submit(project=project, user=ann1, item_id=bad, label="cat")
    assert Annotation.objects.count() == 0
