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
        self.manage("loupe_admin", "--username", "admin", "--password", "admin-pw-123")

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
