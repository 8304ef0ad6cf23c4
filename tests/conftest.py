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

import hashlib
import io
import secrets
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
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
              daphne: bool = False, serve_args: tuple[str, ...] = ()) -> LoupeServer:
        """``worker``: also run ``celery -A config worker``; ``daphne``: serve with the plain daphne CLI
        (production) instead of ``manage.py loupe_serve``."""
        var_dir = tmp_path_factory.mktemp("loupe-server")
        srv = LoupeServer(var_dir, env or {})
        servers.append(srv)
        srv.setup_demo(**(demo or {}))
        if worker:
            srv.start_worker()
        if daphne:
            srv.start_daphne()
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
