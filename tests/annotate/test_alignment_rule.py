"""When the alignment rule starts a check: after a finished round, every ``align_every`` new labels,
one at a time, only on 'hf' projects (no model is run here: the job is only queued)."""
from __future__ import annotations

import pytest

from annotate.models import AlignmentDecision, Job
from annotate.services import alignment
from annotate.services.annotations import annotation_submit
from annotate.services.queue import queue_lease

pytestmark = pytest.mark.django_db


@pytest.fixture
def queued(monkeypatch):
    tasks = []
    monkeypatch.setattr("annotate.services.jobs.dispatch.enqueue_after_commit", lambda **kw: tasks.append(kw["task"]))
    monkeypatch.setattr("annotate.tasks.rounds.round_run.apply_async", lambda args, **kw: None)
    return tasks


def _label(project, user, n):
    for e in queue_lease(project=project, user=user, n=n):
        annotation_submit(project=project, user=user, item_id=e.item_id, label=e.item.ground_truth)


def test_a_finished_round_starts_a_check_every_n_new_labels(make_project, make_round, make_user, queued):
    project = make_project(n_items=40, batch_size=8)
    project.extractor, project.extractor_params, project.align_every = "hf", {"model": "org/some-model"}, 5
    project.save()
    user = make_user("ann")
    make_round(project)
    assert not Job.objects.filter(kind=Job.Kind.ALIGN).exists()  # no labels yet
    _label(project, user, 6)
    make_round(project)
    job = Job.objects.get(project=project, kind=Job.Kind.ALIGN)
    assert job.status == Job.Status.QUEUED and "annotate.tasks.alignment_run" in queued
    assert not alignment.alignment_due(project=project)  # one check at a time
    Job.objects.filter(pk=job.pk).update(status=Job.Status.DONE)
    AlignmentDecision.objects.create(project=project, job=job, labeled_count=6, method="lpft", base_model="m",
                                     current_model="m", score_current=0.1, score_finetuned=0.11, threshold=0.03)
    assert not alignment.alignment_due(project=project)  # no new labels since the decision
    _label(project, user, 5)
    assert alignment.alignment_due(project=project)
    project.align_every = 0
    assert not alignment.alignment_due(project=project)  # switched off
    project.align_every, project.extractor = 5, "pixels"
    assert not alignment.alignment_due(project=project)  # only for pretrained backbones
