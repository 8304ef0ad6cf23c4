"""Jobs reach the browser: a member's WebSocket receives job.progress (running -> done) and stats.updated."""
from __future__ import annotations

import asyncio
import time

import pytest
from asgiref.sync import sync_to_async
from django.urls import reverse
from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator
from tests.annotate.datakit import image_bytes, write_tree

from annotate.models import Job, Membership
from annotate.routing import websocket_urlpatterns
from annotate.services.exports import export_execute, export_request
from annotate.services.imports import import_execute, import_request

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture(autouse=True)
def in_memory_layer(settings):
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}


async def collect(comm, until, timeout=10.0):
    msgs = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        msg = await comm.receive_json_from(timeout=max(0.05, deadline - time.monotonic()))
        msgs.append(msg)
        if until(msg):
            return msgs
    raise AssertionError(f"condition not met within {timeout}s; got {[m['type'] for m in msgs]}")


def test_export_and_import_jobs_push_progress_and_stats(make_user, make_project, tmp_path):
    user = make_user("ann")
    project = make_project(members=[(user, Membership.Role.ADMIN)], n_items=12)
    src = write_tree(tmp_path / "src", {"new.png": image_bytes(77)})

    async def run():
        comm = WebsocketCommunicator(URLRouter(websocket_urlpatterns), f"/ws/projects/{project.pk}/")
        comm.scope["user"] = user
        connected, _ = await comm.connect()
        assert connected
        job = await sync_to_async(export_request)(project=project, fmt="csv")
        await sync_to_async(export_execute)(job_id=str(job.pk))
        export_msgs = await collect(comm, lambda m: m["type"] == "job.progress" and m["job"]["status"] == "done")
        job2 = await sync_to_async(import_request)(project=project, options={"source": str(src)})
        await sync_to_async(import_execute)(job_id=str(job2.pk))
        import_msgs = await collect(comm, lambda m: m["type"] == "stats.updated")
        await comm.disconnect()
        return job, export_msgs, job2, import_msgs

    job, export_msgs, job2, import_msgs = asyncio.run(run())
    progress = [m["job"] for m in export_msgs if m["type"] == "job.progress"]
    assert all(p["id"] == str(job.pk) and p["kind"] == "export" for p in progress)
    assert progress[0]["status"] == "running" and progress[-1]["status"] == "done"
    assert progress[-1]["download"] == reverse("job_download", args=[progress[-1]["id"]])
    assert [p["progress"] for p in progress] == sorted(p["progress"] for p in progress)
    stats = import_msgs[-1]["stats"]
    assert stats["totals"]["items"] == 13 and stats["project"] == project.pk
    assert any(m["type"] == "job.progress" and m["job"]["id"] == str(job2.pk) and m["job"]["status"] == "done"
               for m in import_msgs)
    assert Job.objects.get(pk=job2.pk).result["imported"] == 1


def test_orphaned_jobs_are_re_enqueued(make_project, monkeypatch):
    from annotate.services.jobs import jobs_resume_orphans

    sent = []
    monkeypatch.setattr("annotate.tasks.jobs.export_run.apply_async", lambda args, **kw: sent.append(args[0]))
    project = make_project(n_items=3)
    running = Job.objects.create(project=project, kind=Job.Kind.EXPORT, status=Job.Status.RUNNING, progress=0.4,
                                 params={"format": "csv"})
    Job.objects.create(project=project, kind=Job.Kind.EXPORT, status=Job.Status.DONE, params={"format": "csv"})
    assert jobs_resume_orphans() == [str(running.pk)] and sent == [str(running.pk)]
    running.refresh_from_db()
    assert running.status == Job.Status.QUEUED and running.progress == 0.0
