"""Shared fixtures for the whole suite.

Rows: ``make_user``, ``make_project`` (with a small clustered embedding matrix and tiny PNGs),
``make_round`` (request + execute a round, as the worker would).
Services: ``postgres_url``, ``pg_database`` (a fresh PostgreSQL database per call, dropped after),
``redis_url`` (a Redis database index of its own), ``chromium_path``; each skips with a reason when
the service is missing, or fails when ``LOUPE_REQUIRE_SERVICES=1``.
Processes: ``start_server`` (a Loupe server subprocess: migrate, demo, then loupe_serve or daphne, optionally
with a worker), ``celery_worker_process`` (a ``celery -A config worker`` subprocess).
Helpers that are not fixtures live in ``tests/support.py``.
"""
from __future__ import annotations

import itertools
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.support import (
    CHROMIUM,
    PG_ADMIN_URL,
    LoupeServer,
    RedisServer,
    need,
    postgres_available,
    _base_env,
    redis_available,
    redis_server_binary,
    redis_test_release,
    redis_test_url,
    start_celery_worker,
)


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
    """This session's own Redis database (tests/support.py, LOUPE_TEST_REDIS_DBS), emptied for the test."""
    ok, why = redis_available()
    need(ok, why)
    return redis_test_url()


@pytest.fixture(scope="session", autouse=True)
def _release_redis_db():
    yield
    redis_test_release()


@pytest.fixture
def redis_server(tmp_path):
    """Factory: ``redis_server()`` -> a private, started RedisServer (killed at teardown)."""
    need(redis_server_binary(), "redis-server is not installed")
    servers: list = []

    def start():
        servers.append(RedisServer(tmp_path / f"redis-{len(servers)}").start())
        return servers[-1]

    yield start
    for srv in servers:
        srv.kill()


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


@pytest.fixture
def media(settings):
    """This test's MEDIA_ROOT (set by ``_media_root``), created."""
    root = Path(settings.MEDIA_ROOT)
    root.mkdir(parents=True, exist_ok=True)
    return root


@pytest.fixture
def two_annotators(make_user, make_project, make_round):
    """(project, ann1, ann2): two annotators of a project with 30 items and its first round (batch 10)."""
    from annotate.models import Membership  # noqa: PLC0415

    ann1, ann2 = make_user("ann1"), make_user("ann2")
    project = make_project(members=[(ann1, Membership.Role.ANNOTATOR), (ann2, Membership.Role.ANNOTATOR)],
                           batch_size=10)
    make_round(project)
    return project, ann1, ann2


@pytest.fixture
def make_user(db):
    """``make_user(username=None, *, password=..., superuser=False)`` (tests/factories.py)."""
    from tests import factories  # noqa: PLC0415 - models: after Django is set up

    return factories.make_user


@pytest.fixture
def make_project(db, settings):
    """``make_project(...)``: a project with ``n_items`` (30) items, a clustered embedding file, tiny PNG
    files and ground truth; ``members`` a list of ``(user, role)`` (tests/factories.py)."""
    from tests import factories  # noqa: PLC0415 - models: after Django is set up

    serial = itertools.count(1)  # per test, so a test's data does not depend on the tests before it
    return lambda **kw: factories.make_project(serial=next(serial), **kw)


@pytest.fixture
def add_member(db):
    """``add_member(project, user or username, role="annotator")`` -> the user (tests/factories.py)."""
    from tests import factories  # noqa: PLC0415 - models: after Django is set up

    return factories.add_member


@pytest.fixture
def make_round(db):
    """Execute the next round of a project (as the worker would): the one the refill policy queued
    when labels emptied the queue, else a new one; returns the Round."""
    from annotate.models import Round  # noqa: PLC0415
    from annotate.services.rounds import round_execute, round_request  # noqa: PLC0415

    def make(project, reason: str = "test"):
        rnd = (Round.objects.filter(project=project, status=Round.Status.QUEUED).first()
               or round_request(project=project, reason=reason))
        assert rnd is not None, "a round is already running"
        round_execute(round_id=rnd.pk)
        return Round.objects.get(pk=rnd.pk)

    return make


@pytest.fixture
def start_server(tmp_path_factory):
    """Factory: ``start_server(env={...}, demo=dict(...), worker=False)`` -> a running LoupeServer."""
    servers: list[LoupeServer] = []

    def start(*, env: dict[str, str] | None = None, demo: dict | None = None, worker: bool = False,
              daphne: bool = False, uvicorn: bool = False, serve_args: tuple[str, ...] = ()) -> LoupeServer:
        """``worker``: also run ``celery -A config worker``; ``daphne`` / ``uvicorn``: serve with the plain
        daphne or uvicorn CLI (production; compose runs uvicorn) instead of ``manage.py loupe_serve``."""
        var_dir = tmp_path_factory.mktemp("loupe-server")
        srv = LoupeServer(var_dir, env or {})
        servers.append(srv)
        srv.setup_demo(**(demo or {}))
        if worker:
            srv.start_worker()
        if daphne:
            srv.start_daphne()
        elif uvicorn:
            srv.start_uvicorn()
        else:
            srv.start(*serve_args)
        return srv

    yield start
    for srv in servers:
        srv.stop()


@pytest.fixture
def celery_worker_process(tmp_path):
    """Factory: ``celery_worker_process(env)`` starts ``celery -A config worker -Q gpu,cpu`` (solo pool)
    with ``env`` on top of the test environment and waits until it is ready; stopped at teardown."""
    procs: list = []

    def start(env: dict[str, str]):
        return start_celery_worker(_base_env(env), tmp_path / f"worker-{len(procs)}.log", procs=procs)

    yield start
    for proc in procs:
        proc.stop()


class Pushes(list):
    """Every message sent to a project group, in order (``realtime.py``'s messages as sent)."""

    def of(self, type_: str) -> list[dict]:
        return [m for m in self if m["type"] == type_]

    def jobs(self) -> list[dict]:
        """The job payloads of the ``job.progress`` messages."""
        return [m["job"] for m in self.of("job.progress")]


@pytest.fixture
def pushes(settings) -> Pushes:
    """The in-memory channel layer for this test, recording what is pushed to browsers.

    Tests that run jobs or rounds take this instead of replacing the code that pushes: the real
    ``realtime`` module runs, through the real layer's ``group_send``."""
    from channels.layers import get_channel_layer  # noqa: PLC0415

    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    layer = get_channel_layer()
    sent = Pushes()
    send = layer.group_send

    async def record(group: str, message: dict) -> None:
        sent.append(message)
        await send(group, message)

    layer.group_send = record
    return sent
