"""Both brokers (issue 6, item 6): the worker integration against Redis and against RabbitMQ.

For each broker: a separate app process asks for a round (``round_request``, which enqueues
``annotate.tasks.round_run`` after commit on the configured broker), a real
``celery -A config worker`` subprocess consumes it from the ``gpu`` queue, trains and writes the
queue on the shared PostgreSQL test database, and its ``queue.updated`` push reaches a listener
on the Redis channel layer.  With RabbitMQ, a worker killed as a whole (a lost machine) gives its
unacknowledged round back at once, and a fresh worker runs it.
"""
from __future__ import annotations

import asyncio
import secrets
import threading
from urllib.parse import urlsplit

import pytest
from django.db import connection

from tests.ops.ops_support import (
    AMQP_URL,
    WorkerProcess,
    app_env,
    database_url,
    enqueue_round,
    need_postgres_db,
    need_service,
    purge_queues,
    redis_db_url,
    wait_for,
)

BROKERS = ("redis", "rabbitmq")

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.celery, pytest.mark.django_db(transaction=True)]


def _need_broker(url: str) -> None:
    parts = urlsplit(url)
    name = "RabbitMQ" if parts.scheme.startswith("amqp") else "Redis"
    need_service(name, parts.hostname or "127.0.0.1", parts.port or (5672 if name == "RabbitMQ" else 6379))


def _compose_worker_healthcheck(env, hostname: str) -> int:
    import subprocess

    import yaml

    from tests.ops.ops_support import ROOT

    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    test = compose["services"]["worker"]["healthcheck"]["test"]
    assert test[0] == "CMD-SHELL"
    command = test[1].replace("$$", "$")  # compose's escape for a literal $
    import os
    import sys

    path = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])  # celery on PATH, as in the image
    return subprocess.run(["sh", "-c", command], cwd=ROOT, env={**env, "HOSTNAME": hostname, "PATH": path},
                          capture_output=True, timeout=60).returncode


class GroupListener:
    """Joins a project's group on the Redis channel layer (in a thread) and collects what arrives."""

    def __init__(self, redis_url: str, prefix: str, group: str):
        self.redis_url, self.prefix, self.group = redis_url, prefix, group
        self.messages: list[dict] = []
        self.ready = threading.Event()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _run(self):
        from channels_redis.core import RedisChannelLayer

        layer = RedisChannelLayer(hosts=[self.redis_url], prefix=self.prefix)
        channel = await layer.new_channel()
        await layer.group_add(self.group, channel)
        self.ready.set()
        try:
            while not self.stop.is_set():
                try:
                    self.messages.append(await asyncio.wait_for(layer.receive(channel), 0.5))
                except asyncio.TimeoutError:
                    continue
        finally:
            await layer.group_discard(self.group, channel)
            await layer.flush()

    def __enter__(self):
        self.thread.start()
        assert self.ready.wait(10), "could not join the channel-layer group"
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join(10)


@pytest.fixture
def media(tmp_path, settings):
    settings.MEDIA_ROOT = tmp_path / "shared-media"
    settings.MEDIA_ROOT.mkdir()
    return settings.MEDIA_ROOT


@pytest.mark.parametrize("broker", BROKERS)
def test_worker_runs_a_round_enqueued_by_the_app(broker, media, make_project, make_round, tmp_path):
    from annotate import realtime
    from annotate.models import QueueEntry, Round

    need_postgres_db()
    need_service("Redis", "127.0.0.1", 6379)
    # Redis: a database index of its own per test; RabbitMQ: the guest account's default vhost.
    url = redis_db_url() if broker == "redis" else AMQP_URL
    _need_broker(url)
    prefix = f"ops-{secrets.token_hex(4)}"
    layer_url = redis_db_url()
    env = app_env(broker_url=url, media_root=media, redis_url=layer_url, extra={"LOUPE_CHANNEL_PREFIX": prefix})
    purge_queues(env)
    project = make_project(name=f"broker-{broker}", n_items=40, batch_size=6, strategy="margin")
    r1 = make_round(project)
    host = f"ops-{secrets.token_hex(4)}"  # the container's $HOSTNAME in compose
    worker = WorkerProcess(env, tmp_path / "worker.log", name=f"cpu@{host}").start()
    try:
        # compose.yaml's health check of the worker, verbatim, answers for this node and no other.
        assert _compose_worker_healthcheck(env, host) == 0
        if broker == "redis":  # once is enough: a node that does not exist fails it (after its 10 s timeout)
            assert _compose_worker_healthcheck(env, host + "-gone") != 0
        with GroupListener(layer_url, prefix, realtime.group_name(project.pk)) as listener:
            rid = enqueue_round(env, project.pk, "broker-test")
            rnd = wait_for(lambda: Round.objects.filter(pk=rid, status__in=["done", "failed"]).first(), 120,
                           f"round {rid} on {broker}")
            assert rnd.status == "done", rnd.failure
            wait_for(lambda: any(m.get("type") == "queue.updated" for m in listener.messages), 20,
                     "the worker's queue.updated push")
    finally:
        worker.stop()
    assert rnd.number == r1.number + 1
    assert QueueEntry.objects.filter(round=rnd).count() == 6
    pushed = [m for m in listener.messages if m.get("type") == "queue.updated"]
    assert pushed[-1]["round"] == rnd.number and pushed[-1]["project_id"] == project.pk
    assert "annotate.tasks.round_run[" in worker.log()


def test_rabbitmq_returns_the_round_of_a_worker_killed_whole_to_a_new_worker(media, make_project, make_round,
                                                                            tmp_path):
    """SIGKILL of the whole worker (main process and pool) inside the round's write: the broker
    redelivers the unacknowledged task when the connection drops; a fresh worker runs it once."""
    import psycopg

    from annotate.models import QueueEntry, Round

    need_postgres_db()
    _need_broker(AMQP_URL)
    env = app_env(broker_url=AMQP_URL, media_root=media)
    purge_queues(env)
    project = make_project(name="amqp-kill", n_items=40, batch_size=5, strategy="random")
    r1 = make_round(project)
    pending = list(QueueEntry.objects.filter(round=r1, state="pending").values_list("id", flat=True))
    dbname = connection.settings_dict["NAME"]

    def waiters():
        with connection.cursor() as cur:
            cur.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'", [dbname])
            return [r[0] for r in cur.fetchall()]

    first = WorkerProcess(env, tmp_path / "first.log").start()
    second = None
    lock = psycopg.connect(database_url(), autocommit=False)
    try:
        lock.execute("SELECT id FROM annotate_queueentry WHERE id = %s FOR UPDATE", [pending[0]])
        rid = enqueue_round(env, project.pk, "broker-test")
        blocked = wait_for(waiters, 120, "the round's write to block")
        first.kill_all()
        second = WorkerProcess(env, tmp_path / "second.log").start()
        wait_for(lambda: [p for p in waiters() if p not in blocked], 60, "the new worker to take the round")
        assert not QueueEntry.objects.filter(round_id=rid).exists()
        lock.rollback()
        rnd = wait_for(lambda: Round.objects.filter(pk=rid, status__in=["done", "failed"]).first(), 90, "the round")
    finally:
        lock.close()
        first.stop()
        if second is not None:
            second.stop()
    assert rnd.status == "done", rnd.failure
    assert rnd.attempts == 2
    assert QueueEntry.objects.filter(round=rnd).count() == 5
    assert "round_run" in second.log()
