"""Helpers for the production/reliability tests (tests/ops), imported as ``ops_support``.

Rows come from the shared fixtures in tests/conftest.py (``make_project``, ``make_user``,
``make_round``); service checks from tests/support.py (``need``).  What is here is particular to
these tests: a real Celery worker with the *prefork* pool as in production (so a killed pool
process goes through ``reject_on_worker_lost``), sharing the pytest-django PostgreSQL database
and a MEDIA_ROOT with the test, and a way to run app code in a separate process.
"""
from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from django.test import Client

from tests.support import need
from tests.support import wait_for as shared_wait_for

REDIS_URL = os.environ.get("LOUPE_TEST_REDIS_URL", "redis://127.0.0.1:6379").rstrip("/")
AMQP_URL = os.environ.get("LOUPE_TEST_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672//")


def redis_db_url() -> str:
    """This session's own Redis database (tests/support.py: claimed in LOUPE_TEST_REDIS_DBS, never shared
    with another session, so no worker of another run takes these tasks).  Not emptied here: a module
    may call this at import time; tests that need it empty use the ``redis_url`` fixture or purge."""
    from tests.support import redis_available, redis_test_db_range, redis_test_url  # noqa: PLC0415

    if not redis_available()[0]:
        return f"{REDIS_URL}/{redis_test_db_range().start}"  # the tests that use it skip (need_service)
    return redis_test_url(flush=False)


def reachable(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1.0):
            return True
    except OSError:
        return False


def need_service(name: str, host: str, port: int) -> None:
    need(reachable(host, port), f"{name} is not reachable on {host}:{port}")


def need_postgres_db() -> None:
    from django.db import connection  # noqa: PLC0415

    need(connection.vendor == "postgresql",
         f"the test database is {connection.vendor}, not PostgreSQL: run with DATABASE_URL=postgres://...")


def png_bytes(seed: int, size: int = 16) -> bytes:
    """A distinct small PNG (random pixels) per seed."""
    from PIL import Image  # noqa: PLC0415

    arr = np.random.default_rng(seed).integers(0, 256, size=(size, size), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr, mode="L").save(buf, format="PNG")
    return buf.getvalue()


# --------------------------------------------------------------------------- real worker subprocess
ROOT = Path(__file__).resolve().parents[2]
OPS_DIR = Path(__file__).resolve().parent


def database_url() -> str:
    """URL of the database the current (test) connection uses, for subprocesses sharing it."""
    from django.db import connection  # noqa: PLC0415

    s = connection.settings_dict
    auth = s["USER"] + (f":{s['PASSWORD']}" if s["PASSWORD"] else "")
    return f"postgres://{auth}@{s['HOST'] or '127.0.0.1'}:{s['PORT'] or 5432}/{s['NAME']}"


def app_env(*, broker_url: str, media_root, redis_url: str = "", extra: dict | None = None) -> dict[str, str]:
    """Environment of an app process (worker or web) sharing the test database and media."""
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "CELERY_BROKER_URL", "DATABASE_URL")}
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=database_url(),
        CELERY_BROKER_URL=broker_url,
        MEDIA_ROOT=str(media_root),
        SECRET_KEY="ops-tests-" + "x" * 40,
        PYTHONPATH=str(ROOT),
        LOG_LEVEL="INFO",
    )
    if redis_url:
        env["REDIS_URL"] = redis_url
    env.update(extra or {})
    return env


class WorkerProcess:
    """A real ``celery -A config worker`` subprocess: prefork pool with one child, as compose runs it."""

    def __init__(self, env: dict[str, str], log_path: Path, queues: str = "gpu,cpu", name: str | None = None):
        self.env, self.log_path, self.queues = env, Path(log_path), queues
        self.name = name or f"ops-{os.getpid()}-{int(time.time() * 1000) % 10**8}@%h"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 90.0) -> "WorkerProcess":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "config", "worker", "-Q", self.queues, "-c", "1", "-P", "prefork",
             "-n", self.name, "--loglevel", "INFO", "--without-gossip",
             "--without-mingle", "--without-heartbeat"],
            cwd=ROOT, env=self.env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"worker exited with {self.proc.returncode}:\n{self.log()[-3000:]}")
            if " ready." in self.log():
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"worker not ready after {timeout} s:\n{self.log()[-3000:]}")

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def children(self) -> list[int]:
        """PIDs of the pool processes (the ones that run tasks)."""
        try:
            return [int(p) for p in Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()]
        except OSError:
            return []

    def kill_all(self) -> None:
        """SIGKILL the whole worker (main process and pool) at once, as a lost machine would."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=30)
        self._log.close()


def run_app_code(code: str, env: dict[str, str], timeout: float = 120) -> str:
    """Run Python with Django set up in a separate app process (e.g. the web side enqueuing a round)."""
    out = subprocess.run([sys.executable, "-c", "import django; django.setup()\n" + code], cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise AssertionError(f"app process failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return out.stdout


def purge_queues(env: dict[str, str]) -> None:
    """Empty the worker queues (gpu, cpu) on the broker ``env`` names: no task of an earlier run is left."""
    subprocess.run([sys.executable, "-m", "celery", "-A", "config", "purge", "-f", "-Q", "gpu,cpu"],
                   env=env, cwd=ROOT, capture_output=True, timeout=60)


def enqueue_round(env: dict[str, str], project_id: int, reason: str) -> int:
    """The web side asks for a round (a separate app process with the real broker configured); its id."""
    out = run_app_code(
        "from annotate.models import Project\n"
        "from annotate.services.rounds import round_request\n"
        f"r = round_request(project=Project.objects.get(pk={project_id}), reason={reason!r})\n"
        "print('ROUND', r.pk)\n", env)
    return int(out.split("ROUND")[1].split()[0])


def wait_for(predicate, timeout: float, what: str, interval: float = 0.1):
    """The shared poller (tests.support.wait_for), polling a little faster for the ops tests."""
    return shared_wait_for(predicate, timeout, what, interval)


def client_for(user=None, **kw) -> Client:
    """A test client, logged in as ``user`` when given."""
    c = Client(**kw)
    if user is not None:
        c.force_login(user)
    return c


def seed_queue(project, n=None):
    """Queue entries (no round) for the first ``n`` items of the project that have none."""
    from annotate.models import QueueEntry  # noqa: PLC0415

    items = list(project.items.all()[: n or 100])
    QueueEntry.objects.bulk_create(
        [QueueEntry(project=project, item=it, rank=k) for k, it in enumerate(items)
         if not QueueEntry.objects.filter(item=it).exists()])
