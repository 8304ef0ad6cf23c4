"""Shared fixtures for the whole suite.

Rows: ``make_user``, ``make_project`` (with a small clustered embedding matrix and tiny PNGs),
``make_round`` (request + execute a round, as the worker would).

Services: ``need(ok, reason)`` skips a test whose external service is missing, or fails it when
``LOUPE_REQUIRE_SERVICES=1`` (set by ``.ci/run``).  ``postgres_url`` / ``pg_database`` (a fresh
PostgreSQL database per use, dropped after), ``redis_url`` (a Redis database index of its own),
``chromium_path``.

Processes: ``LoupeServer`` / ``start_server`` run ``manage.py loupe_serve`` (Daphne; embedded worker
with the memory broker, or web only with a real broker) as a subprocess on a free port, on its
own database and MEDIA_ROOT; ``start_celery_worker`` runs ``celery -A config worker -Q gpu,cpu``.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
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


@pytest.fixture
def postgres_url() -> str:
    ok, why = postgres_available()
    need(ok, why)
    return PG_ADMIN_URL


@pytest.fixture
def pg_database(postgres_url):
    """Factory: ``pg_database()`` -> URL of a new, empty database (dropped at teardown)."""
    import psycopg  # noqa: PLC0415

    made: list[str] = []

    def make() -> str:
        name = f"loupe_t_{secrets.token_hex(5)}"
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        parts = urlsplit(postgres_url)
        return parts._replace(path=f"/{name}").geturl()

    yield make
    for name in made:
        try:
            with psycopg.connect(postgres_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except psycopg.Error:
            pass  # best effort; a leftover test database is harmless


@pytest.fixture
def redis_url() -> str:
    """A Redis URL on a database index picked at random, so parallel runs rarely share one."""
    ok, why = redis_available()
    need(ok, why)
    return f"{REDIS_TEST_URL.rstrip('/')}/{secrets.randbelow(14) + 1}"


@pytest.fixture
def chromium_path() -> str:
    need(Path(CHROMIUM).exists(), f"Chromium is not installed at {CHROMIUM} (LOUPE_CHROMIUM)")
    try:
        import playwright.sync_api  # noqa: F401, PLC0415
    except ImportError:
        need(False, "the playwright package is not installed (requirements-dev.txt)")
    return CHROMIUM


# --------------------------------------------------------------------------- Django rows
_DJANGO_FIXTURES = {"db", "transactional_db", "settings", "django_db_setup", "client", "admin_client"}


@pytest.fixture(autouse=True)
def _media_root(request, tmp_path):
    """Every test that touches Django gets its own MEDIA_ROOT."""
    if _DJANGO_FIXTURES.isdisjoint(request.fixturenames) and not request.node.get_closest_marker("django_db"):
        yield
        return
    settings = request.getfixturevalue("settings")
    settings.MEDIA_ROOT = tmp_path / "media"
    # Fast hashing: the default PBKDF2 costs ~0.4 s per user on a small machine.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
    yield


_PNG_CACHE: dict[int, bytes] = {}


def tiny_png(shade: int = 128, size: int = 4) -> bytes:
    if shade not in _PNG_CACHE:
        from PIL import Image  # noqa: PLC0415

        buf = io.BytesIO()
        Image.new("L", (size, size), color=shade).save(buf, format="PNG")
        _PNG_CACHE[shade] = buf.getvalue()
    return _PNG_CACHE[shade]


@pytest.fixture
def make_user(db, django_user_model):
    counter = {"n": 0}

    def make(username: str | None = None, *, password: str = "pw-loupe-test", superuser: bool = False):
        counter["n"] += 1
        username = username or f"user{counter['n']}"
        if superuser:
            return django_user_model.objects.create_superuser(username=username, password=password,
                                                              email=f"{username}@example.com")
        return django_user_model.objects.create_user(username=username, password=password)

    return make


def clustered_embeddings(n: int, n_classes: int, dim: int, rng: np.random.Generator, spread: float = 0.6):
    """(n, dim) float32 points around one well-separated centre per class, and their class indices."""
    centres = rng.normal(size=(n_classes, dim)) * 3.0
    y = np.arange(n) % n_classes
    X = centres[y] + spread * rng.normal(size=(n, dim))
    return X.astype(np.float32), y


@pytest.fixture
def make_project(db, settings):
    """Factory for a project with ``n_items`` items, a clustered ``(n_items, dim)`` embedding file,
    tiny PNG files and ground truth; ``members`` is a list of ``(user, role)``."""
    from annotate import storage  # noqa: PLC0415
    from annotate.models import Item, Membership, Project  # noqa: PLC0415

    counter = {"n": 0}

    def make(*, classes=("cat", "dog", "fox"), n_items: int = 30, dim: int = 4, members=(), batch_size: int = 6,
             refill_threshold: int = 2, strategy: str = "margin", strategy_params=None, audit_rate: float = 0.0,
             seed: int = 0, name: str | None = None, **fields):
        counter["n"] += 1
        project = Project.objects.create(
            name=name or f"project {counter['n']}", classes=list(classes), strategy=strategy,
            strategy_params=strategy_params or {}, batch_size=batch_size, refill_threshold=refill_threshold,
            audit_rate=audit_rate, seed=seed, **fields,
        )
        rng = np.random.default_rng(seed + 1000 * counter["n"])
        X, y = clustered_embeddings(n_items, len(classes), dim, rng)
        rel = storage.embedding_relpath(project, "test", 1)
        path = storage.media_path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, X)
        project.embedding_file, project.embedding_version, project.embedding_dim = rel, 1, dim
        project.extractor = "test"
        project.save()
        img_dir = storage.images_dir(project)
        img_dir.mkdir(parents=True, exist_ok=True)
        items = []
        for row in range(n_items):
            data = tiny_png(int(y[row]) * 40 % 256)
            name_ = f"img-{row:04d}.png"
            (img_dir / name_).write_bytes(data)
            items.append(Item(project=project, file=f"projects/{project.pk}/images/{name_}", original_name=name_,
                              checksum=hashlib.sha256(f"{project.pk}-{row}".encode()).hexdigest(), row=row,
                              width=4, height=4, ground_truth=classes[int(y[row])]))
        Item.objects.bulk_create(items)
        for user, role in members:
            Membership.objects.create(project=project, user=user, role=role)
        project.test_X, project.test_y = X, y  # for tests that need the ground truth arrays
        return project

    return make


@pytest.fixture
def make_round(db):
    """Request and execute the next round of a project (as the worker would); returns the Round."""
    from annotate.models import Round  # noqa: PLC0415
    from annotate.services.rounds import round_execute, round_request  # noqa: PLC0415

    def make(project, reason: str = "test"):
        rnd = round_request(project=project, reason=reason)
        assert rnd is not None, "a round is already active"
        round_execute(round_id=rnd.pk)
        return Round.objects.get(pk=rnd.pk)

    return make


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

    def setup_demo(self, *, limit: int = 300, batch_size: int = 20, refill_threshold: int = 10) -> None:
        self.manage("migrate", "-v0")
        self.manage("loupe_demo", "--limit", str(limit), "--batch-size", str(batch_size),
                    "--refill-threshold", str(refill_threshold))
        self.manage("loupe_admin", "--username", "admin", "--password", "admin-pw-123")

    def token(self, username: str = "admin") -> str:
        return self.manage("loupe_token", username, "--quiet").strip()

    def start(self, *extra: str, timeout: float = 60) -> None:
        proc = Proc([PYTHON, "manage.py", "loupe_serve", "--port", str(self.port), *extra], self.env,
                    self.var_dir / "serve.log")
        self.procs.append(proc)
        proc.wait_for_log("Loupe is serving", timeout)
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


@pytest.fixture
def start_server(tmp_path_factory):
    """Factory: ``start_server(env={...}, demo=dict(...), worker=False)`` -> a running LoupeServer."""
    servers: list[LoupeServer] = []

    def start(*, env: dict[str, str] | None = None, demo: dict | None = None, worker: bool = False,
              serve_args: tuple[str, ...] = ()) -> LoupeServer:
        var_dir = tmp_path_factory.mktemp("loupe-server")
        srv = LoupeServer(var_dir, env or {})
        servers.append(srv)
        srv.setup_demo(**(demo or {}))
        if worker:
            srv.start_worker()
        srv.start(*serve_args)
        return srv

    yield start
    for srv in servers:
        srv.stop()


def launch_chromium(playwright, path: str):
    return playwright.chromium.launch(executable_path=path, args=CHROMIUM_ARGS, headless=True)


def shutil_which(name: str) -> str | None:
    return shutil.which(name)
