"""Issue 12, row 13: a job that waits behind a busy worker says so (queue, and what the workers run)."""
from datetime import timedelta

from django.test import Client
from django.utils import timezone

from annotate.models import Job, Membership, Round
from annotate.payloads import job_payload
from annotate.services.jobs import job_create


def test_a_queued_export_names_its_queue_and_the_round_it_waits_behind(make_project, make_user):
    admin = make_user("boss")
    project = make_project(members=[(admin, Membership.Role.ADMIN)])
    other = make_project(name="elsewhere")
    job = job_create(project=project, kind=Job.Kind.EXPORT, params={"format": "csv"})
    assert job_payload(job)["waiting"] is None  # just queued: about to start
    Job.objects.filter(pk=job.pk).update(created_at=timezone.now() - timedelta(minutes=6))
    job.refresh_from_db()
    assert job_payload(job)["waiting"] == ("waiting for a free worker on the 'cpu' queue; no worker has taken it "
                                           "yet (is one running for 'cpu'?)")
    Round.objects.create(project=other, number=1, status="running", strategy="firal",
                         started_at=timezone.now() - timedelta(minutes=5))
    waiting = job_payload(job)["waiting"]
    assert waiting.startswith("waiting for a free worker on the 'cpu' queue; workers are busy with round 1 of "
                              "another project (running 5 min)")
    assert "elsewhere" not in waiting  # another project's name is not shown
    client = Client()
    client.force_login(admin)
    stats = client.get(f"/api/projects/{project.pk}/stats").json()
    assert any(j["id"] == str(job.pk) and j["waiting"] == waiting for j in stats["jobs"])
    Job.objects.filter(pk=job.pk).update(status="running")
    job.refresh_from_db()
    assert job_payload(job)["waiting"] is None
