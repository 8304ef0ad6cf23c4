"""Helpers for tests that talk to real services and processes (imported as ``tests.support``).

``need(ok, reason)`` skips a test whose external service is missing, or fails it when
``LOUPE_REQUIRE_SERVICES=1`` (set by ``.ci/run``).  ``LoupeServer`` runs ``manage.py loupe_serve``
as a subprocess on a free port with its own database and MEDIA_ROOT; ``start_celery_worker``
runs ``celery -A config worker -Q gpu,cpu``.
"""
from __future__ import annotations

import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable
REQUIRE_SERVICES = os.environ.get("LOUPE_REQUIRE_SERVICES", "") == "1"
PG_ADMIN_URL = os.environ.get("LOUPE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
REDIS_TEST_URL = os.environ.get("LOUPE_TEST_REDIS_URL", "redis://127.0.0.1:6379")
ADMIN_PASSWORD = "admin-pw-123"  # the admin LoupeServer.setup_demo adds
CHROMIUM = os.environ.get("LOUPE_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]


# --------------------------------------------------------------------------- service checks
def need(ok: bool, reason: str) -> None:
    """Skip (or, with LOUPE_REQUIRE_SERVICES=1, fail) when a needed service is missing."""
    if ok:
        return
    if REQUIRE_SERVICES:
        pytest.fail(f"LOUPE_REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def postgres_available() -> tuple[bool, str]:
    parts = urlsplit(PG_ADMIN_URL)
    host, port = parts.hostname or "127.0.0.1", parts.port or 5432
    if not _port_open(host, port):
        return False, f"PostgreSQL is not reachable at {host}:{port} (LOUPE_TEST_POSTGRES_URL)"
    try:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3):
            pass
    except Exception as exc:  # noqa: BLE001 - any failure means "not usable"; the reason is reported
        return False, f"cannot connect to PostgreSQL at {PG_ADMIN_URL}: {exc}"
    return True, ""


# The test suite's own Redis databases: a reserved range (LOUPE_TEST_REDIS_DBS, "first-last"), default
# 10-15, so a Loupe instance or anything else on the same Redis (which by convention uses the low
# numbers, 0 and 1 in the README) is never touched.  A test session claims ONE database of the range:
# the first that is empty, by writing an owner key (SET NX, with a TTL so a crashed session's claim
# lapses); a database holding keys it did not write is skipped.  Two sessions at once get two
# databases.  Tests flush only the database they own.
REDIS_TEST_DBS = os.environ.get("LOUPE_TEST_REDIS_DBS", "10-15")
REDIS_OWNER_KEY = "loupe-test-session-owner"
REDIS_CLAIM_TTL_S = 2 * 3600
_REDIS_OWNER = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(4)}"
_redis_db: int | None = None


def redis_test_db_range() -> range:
    try:
        first, _, last = REDIS_TEST_DBS.partition("-")
        span = range(int(first), int(last or first) + 1)
    except ValueError:
        raise ValueError(f"LOUPE_TEST_REDIS_DBS={REDIS_TEST_DBS!r} must be 'first-last', e.g. '10-15'") from None
    if not span or span.start < 1:
        raise ValueError(f"LOUPE_TEST_REDIS_DBS={REDIS_TEST_DBS!r}: database 0 is never used by the tests")
    return span


def redis_test_db() -> int:
    """This session's Redis database number (claimed on first use; see REDIS_TEST_DBS)."""
    global _redis_db
    if _redis_db is not None:
        return _redis_db
    import redis  # noqa: PLC0415

    base = REDIS_TEST_URL.rstrip("/")
    for db in redis_test_db_range():
        client = redis.Redis.from_url(f"{base}/{db}")
        if client.set(REDIS_OWNER_KEY, _REDIS_OWNER, nx=True, ex=REDIS_CLAIM_TTL_S) and client.dbsize() == 1:
            _redis_db = db
            return db
        if client.get(REDIS_OWNER_KEY) == _REDIS_OWNER.encode():
            client.delete(REDIS_OWNER_KEY)  # we claimed it but it held other keys: not ours to use
    raise RuntimeError(f"no free Redis database in LOUPE_TEST_REDIS_DBS={REDIS_TEST_DBS} on {base}: each one "
                       f"holds keys or another test session's claim ({REDIS_OWNER_KEY})")


def redis_test_url(*, flush: bool = True) -> str:
    """URL of this session's own Redis database, emptied first (except the claim) when ``flush``."""
    import redis  # noqa: PLC0415

    db = redis_test_db()
    url = f"{REDIS_TEST_URL.rstrip('/')}/{db}"
    client = redis.Redis.from_url(url)
    if client.get(REDIS_OWNER_KEY) != _REDIS_OWNER.encode():
        raise RuntimeError(f"Redis database {db} is no longer claimed by this session; refusing to use it")
    if flush:
        client.flushdb()
    client.set(REDIS_OWNER_KEY, _REDIS_OWNER, ex=REDIS_CLAIM_TTL_S)
    return url


def redis_test_release() -> None:
    """Empty and give back this session's database (end of session)."""
    global _redis_db
    if _redis_db is None:
        return
    import redis  # noqa: PLC0415

    client = redis.Redis.from_url(f"{REDIS_TEST_URL.rstrip('/')}/{_redis_db}")
    if client.get(REDIS_OWNER_KEY) == _REDIS_OWNER.encode():
        client.flushdb()
    _redis_db = None


class RedisServer:
    """A private ``redis-server`` on a free port (no persistence), to stop and start for outage tests."""

    def __init__(self, workdir: Path, port: int | None = None):
        self.workdir, self.port = Path(workdir), port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 10.0) -> "RedisServer":
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
             "--dir", str(self.workdir)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if _port_open("127.0.0.1", self.port, 0.2):
                return self
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def kill(self) -> None:
        """SIGKILL: an outage, not a shutdown (nothing is saved; clients see refused connections)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    stop = kill


def redis_server_binary() -> bool:
    import shutil  # noqa: PLC0415

    return shutil.which("redis-server") is not None


def redis_available() -> tuple[bool, str]:
    parts = urlsplit(REDIS_TEST_URL)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    if not _port_open(host, port):
        return False, f"Redis is not reachable at {host}:{port} (LOUPE_TEST_REDIS_URL)"
    return True, ""


def db_is_postgres() -> bool:
    from django.db import connection  # noqa: PLC0415

    return connection.vendor == "postgresql"


# --------------------------------------------------------------------------- processes
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _base_env(extra: dict[str, str]) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL", "DJANGO_SETTINGS_MODULE"}}
    env.update({"PYTHONUNBUFFERED": "1", "PYTHONWARNINGS": "ignore", "DJANGO_SETTINGS_MODULE": "config.settings"})
    env.update(extra)
    return env


class Proc:
    """A subprocess with its output in a log file (shown when a test fails to start it)."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path, cwd: Path = ROOT):
        self.log_path = log
        self._log = open(log, "wb")
        self.p = subprocess.Popen(args, env=env, cwd=cwd, stdout=self._log, stderr=subprocess.STDOUT,
                                  start_new_session=True)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if text in self.log():
                return
            if self.p.poll() is not None:
                raise RuntimeError(f"process exited ({self.p.returncode}) before {text!r}:\n{self.log()[-4000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"no {text!r} in the log after {timeout}s:\n{self.log()[-4000:]}")

    def stop(self) -> None:
        if self.p.poll() is None:
            os.killpg(self.p.pid, signal.SIGTERM)
            try:
                self.p.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.p.pid, signal.SIGKILL)
                self.p.wait(5)
        self._log.close()


class LoupeServer:
    """A Loupe instance in subprocesses: its own database, MEDIA_ROOT and port."""

    def __init__(self, var_dir: Path, env: dict[str, str]):
        self.var_dir = var_dir
        self.env = _base_env({"LOUPE_VAR_DIR": str(var_dir), **env})
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.ws_url = f"ws://127.0.0.1:{self.port}"
        self.procs: list[Proc] = []

    def manage(self, *args: str, timeout: float = 180) -> str:
        out = subprocess.run([PYTHON, "manage.py", *args], env=self.env, cwd=ROOT, capture_output=True, text=True,
                             timeout=timeout)
        if out.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{out.stdout}\n{out.stderr}")
        return out.stdout

    def setup_demo(self, *, limit: int | None = 300, batch_size: int = 20, refill_threshold: int = 10) -> None:
        """Migrate, build the digits demo (the first ``limit`` digits; None: all 1,797), add an admin."""
        self.manage("migrate", "-v0")
        self.manage("loupe_demo", *(["--limit", str(limit)] if limit is not None else []),
                    "--batch-size", str(batch_size), "--refill-threshold", str(refill_threshold))
        self.manage("loupe_admin", "--username", "admin", "--password", ADMIN_PASSWORD)

    def token(self, username: str = "admin") -> str:
        return self.manage("loupe_token", username, "--quiet").strip()

    def start(self, *extra: str, timeout: float = 60) -> None:
        proc = Proc([PYTHON, "manage.py", "loupe_serve", "--port", str(self.port), *extra], self.env,
                    self.var_dir / "serve.log")
        self.procs.append(proc)
        proc.wait_for_log("Loupe is serving", timeout)
        self.server = proc

    def start_daphne(self, timeout: float = 60) -> None:
        """The production web process: ``daphne config.asgi:application`` (no worker inside)."""
        daphne = str(Path(PYTHON).with_name("daphne"))
        proc = Proc([daphne, "-b", "127.0.0.1", "-p", str(self.port), "config.asgi:application"], self.env,
                    self.var_dir / "daphne.log")
        self.procs.append(proc)
        proc.wait_for_log("Listening on TCP address", timeout)
        self.server = proc

    def start_uvicorn(self, timeout: float = 60) -> None:
        """The production web process as docker/compose.yaml runs it: ``uvicorn config.asgi:application``."""
        uvicorn = str(Path(PYTHON).with_name("uvicorn"))
        proc = Proc([uvicorn, "--host", "127.0.0.1", "--port", str(self.port), "--proxy-headers", "--lifespan", "off",
                     "--ws", "websockets-sansio", "--timeout-keep-alive", "30", "--no-access-log",
                     "config.asgi:application"], self.env, self.var_dir / "uvicorn.log")
        self.procs.append(proc)
        proc.wait_for_log("Uvicorn running on", timeout)
        self.server = proc

    def start_worker(self, timeout: float = 90) -> Proc:
        return start_celery_worker(self.env, self.var_dir / "worker.log", timeout=timeout, procs=self.procs)

    def stop(self) -> None:
        for p in reversed(self.procs):
            p.stop()

    # -- HTTP with a token
    def api(self, token: str, path: str, body=None, method: str | None = None) -> tuple[int, dict]:
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(self.url + path, data=data, method=method or ("GET" if body is None else "POST"),
                                     headers={"Authorization": f"Token {token}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, json.loads(r.read())
        except urllib.error.HTTPError as e:
            return e.code, json.loads(e.read() or b"{}")


def start_celery_worker(env: dict[str, str], log: Path, *, timeout: float = 90, procs: list | None = None) -> Proc:
    celery = str(Path(PYTHON).with_name("celery"))
    args = [celery, "-A", "config", "worker", "-Q", "gpu,cpu", "--pool", "solo", "--concurrency", "1",
            "--without-heartbeat", "--without-mingle", "--without-gossip", "-n", f"test-{secrets.token_hex(3)}@%h",
            "--loglevel", "INFO"]
    proc = Proc(args, env, log)
    if procs is not None:
        procs.append(proc)
    proc.wait_for_log("ready.", timeout)
    return proc


def launch_chromium(playwright, path: str):
    return playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)


def log_in(page, base_url: str, next_path: str = "", username: str = "admin", password: str = ADMIN_PASSWORD) -> None:
    """Sign in through the login page (as the demo's admin by default), going on to ``next_path``."""
    page.goto(f"{base_url}/accounts/login/" + (f"?next={next_path}" if next_path else ""))
    page.fill("#id_username", username)
    page.fill("#id_password", password)
    page.click("button[type=submit]")


def wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    """Poll ``predicate`` until it returns something truthy (returned), or fail naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def label_until_next_round_is_pushed(srv: LoupeServer, token: str, project_id: int, *, max_labels: int,
                                     idle_s: float = 0.0, timeout: float = 120.0) -> tuple[int, list[dict]]:
    """Over a real WebSocket (token auth), stay idle ``idle_s``, then lease + label items one by one over
    HTTP until the refill policy starts the next round, and wait for its ``queue.updated``.
    Returns (labels posted, every message received, each with ``_received_ms``)."""
    import asyncio  # noqa: PLC0415

    import websockets  # noqa: PLC0415

    code, body = srv.api(token, f"/api/projects/{project_id}/status")
    assert code == 200, body
    start_round = body["progress"]["round"]["number"]

    async def scenario():
        messages: list[dict] = []
        headers = {"Authorization": f"Token {token}", "Origin": srv.url}
        async with websockets.connect(f"{srv.ws_url}/ws/projects/{project_id}/", additional_headers=headers) as ws:
            async def read():
                async for raw in ws:
                    msg = json.loads(raw)
                    msg["_received_ms"] = time.time() * 1000
                    messages.append(msg)

            reader = asyncio.create_task(read())
            await asyncio.sleep(idle_s)
            labeled = 0
            while True:
                code, body = await asyncio.to_thread(srv.api, token, f"/api/projects/{project_id}/lease", {"n": 1})
                assert code == 200 and body["items"], body
                item = body["items"][0]["item_id"]
                code, body = await asyncio.to_thread(
                    srv.api, token, f"/api/projects/{project_id}/label", {"item_id": item, "label": "7"})
                assert code == 201, body
                labeled += 1
                if body["progress"]["round"]["number"] > start_round:
                    break
                assert labeled <= max_labels, "no round was started"
            deadline = time.time() + timeout
            while time.time() < deadline and not any(m["type"] == "queue.updated" for m in messages):
                await asyncio.sleep(0.05)
            reader.cancel()
            return labeled, messages

    return asyncio.run(scenario())
