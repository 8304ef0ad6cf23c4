"""Production wiring for jobs: an export requested over HTTP runs in a separate `celery worker` (queue
``cpu``, PostgreSQL + Redis), its job.progress reaches a WebSocket through the Redis channel layer, and
the file downloads with an API token."""
from __future__ import annotations

import asyncio
import csv
import io
import json
import secrets
import time
import urllib.request

import pytest

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.celery, pytest.mark.slow]


def test_export_job_runs_in_the_worker_and_its_progress_is_pushed(pg_database, redis_url, start_server):
    websockets = pytest.importorskip("websockets")
    env = {"DATABASE_URL": pg_database(), "CELERY_BROKER_URL": redis_url, "REDIS_URL": redis_url,
           "LOUPE_CHANNEL_PREFIX": f"loupe-test-{secrets.token_hex(4)}"}
    srv = start_server(env=env, demo=dict(limit=60, batch_size=10, refill_threshold=3), worker=True, daphne=True)
    token = srv.token("admin")

    async def scenario():
        msgs = []
        headers = {"Authorization": f"Token {token}", "Origin": srv.url}
        async with websockets.connect(f"{srv.ws_url}/ws/projects/1/", additional_headers=headers) as ws:
            code, job = await asyncio.to_thread(srv.api, token, "/api/projects/1/exports", {"format": "csv"})
            assert code == 202, job
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline:
                msg = json.loads(await asyncio.wait_for(ws.recv(), timeout=deadline - time.monotonic()))
                if msg["type"] == "job.progress" and msg["job"]["id"] == job["id"]:
                    msgs.append(msg["job"])
                    if msg["job"]["status"] in ("done", "failed"):
                        return job, msgs
        raise AssertionError(f"no final job.progress; got {msgs}")

    job, msgs = asyncio.run(scenario())
    assert msgs[0]["status"] == "running" and msgs[-1]["status"] == "done", msgs
    code, status = srv.api(token, f"/api/jobs/{job['id']}")
    assert code == 200 and status["status"] == "done" and status["result"]["records"] == 60
    req = urllib.request.Request(srv.url + status["download"], headers={"Authorization": f"Token {token}"})
    with urllib.request.urlopen(req, timeout=30) as r:
        rows = list(csv.DictReader(io.StringIO(r.read().decode())))
    assert len(rows) == 60 and {"image", "label", "annotator", "labeled_at"} <= set(rows[0])
    # The worker process (not the web process) ran it.
    assert "annotate.tasks.export_run" in (srv.var_dir / "worker.log").read_text(errors="replace")
