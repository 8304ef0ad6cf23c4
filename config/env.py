"""Small readers for settings from environment variables.

Each has a working default so a bare checkout runs, and each raises
``ImproperlyConfigured`` naming the variable when a value is set but wrong
(the habit of healthchecks' ``envbool``).
"""
from __future__ import annotations

import os
from urllib.parse import parse_qsl, unquote, urlsplit

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


def env_str(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if raw is None:
        return default
    low = raw.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean; use one of 1/0, true/false, yes/no, on/off")


def _env_number(name: str, default, minimum, parse, what: str):
    raw = os.environ.get(name)
    if raw is None:
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name}={raw!r} is not {what}") from None
    if minimum is not None and value < minimum:
        raise ImproperlyConfigured(f"{name}={value} must be at least {minimum}")
    return value


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    return _env_number(name, default, minimum, int, "an integer")


def env_float(name: str, default: float, *, minimum: float | None = None) -> float:
    return _env_number(name, default, minimum, float, "a number")


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    raw = os.environ.get(name, default)
    if raw not in choices:
        raise ImproperlyConfigured(f"{name}={raw!r} is not one of {', '.join(choices)}")
    return raw


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if raw is None:
        return default
    return [part.strip() for part in raw.split(",") if part.strip()]


#: libpq connection parameters that take integers (the others are passed on as strings).
_PG_INT_OPTIONS = frozenset({
    "connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
    "tcp_user_timeout", "port",
})
#: Options Django's PostgreSQL backend reads itself: booleans.
_PG_BOOL_OPTIONS = frozenset({"server_side_binding"})


def _typed_pg_options(name: str, url: str, query: str) -> dict:
    """The URL's query string as typed connection options (``?connect_timeout=5&sslmode=require``)."""
    options: dict = {}
    for key, raw in parse_qsl(query, keep_blank_values=True):
        if key == "pool":
            raise ImproperlyConfigured(
                f"{name}={url!r}: set the connection pool with DB_POOL (and DB_POOL_MIN_SIZE / DB_POOL_MAX_SIZE), "
                "not in the URL")
        if key in _PG_INT_OPTIONS:
            try:
                options[key] = int(raw)
            except ValueError:
                raise ImproperlyConfigured(f"{name}={url!r}: option {key}={raw!r} is not an integer") from None
        elif key in _PG_BOOL_OPTIONS:
            low = raw.strip().lower()
            if low not in _TRUE | _FALSE:
                raise ImproperlyConfigured(f"{name}={url!r}: option {key}={raw!r} is not a boolean (1/0, true/false)")
            options[key] = low in _TRUE
        else:
            options[key] = raw
    return options


def database_from_url(name: str, url: str, *, conn_max_age: int = 0, pool: dict | None = None) -> dict:
    """Django DATABASES entry from ``sqlite:///path`` or ``postgres://user:pw@host:port/db``.

    PostgreSQL only: ``conn_max_age`` (seconds a connection is kept open after a request; 0 closes it
    after each) and ``pool`` (psycopg_pool options such as ``{"min_size": 2, "max_size": 8}``: Django
    5.1+'s connection pool, which needs ``conn_max_age=0``).  See ``database_settings``.
    """
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme == "sqlite":
        # sqlite:///relative.db or sqlite:////absolute/path.db
        path = unquote(url[len("sqlite://"):])
        if path.startswith("/"):
            path = path[1:] if not path.startswith("//") else path[1:]
        if not path:
            raise ImproperlyConfigured(f"{name}={url!r} names no SQLite file (use sqlite:///path/to/db.sqlite3)")
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": path,
            # WAL lets the embedded worker thread read while the web side writes.
            "OPTIONS": {
                "timeout": 20,
                "init_command": "PRAGMA journal_mode=WAL;",
                "transaction_mode": "IMMEDIATE",
            },
        }
    if scheme in {"postgres", "postgresql", "pgsql"}:
        db = unquote(parts.path.lstrip("/"))
        if not db:
            raise ImproperlyConfigured(f"{name}={url!r} names no database (postgres://user@host:5432/dbname)")
        options = _typed_pg_options(name, url, parts.query)
        if pool is not None:
            if conn_max_age:
                raise ImproperlyConfigured(
                    f"DB_CONN_MAX_AGE={conn_max_age} cannot be combined with DB_POOL: pooled connections go back to "
                    "the pool after each request; set DB_CONN_MAX_AGE=0 or turn DB_POOL off")
            options["pool"] = dict(pool)
        return {
            "ENGINE": "django.db.backends.postgresql",
            "NAME": db,
            "USER": unquote(parts.username or ""),
            "PASSWORD": unquote(parts.password or ""),
            "HOST": parts.hostname or "",
            "PORT": str(parts.port or ""),
            "OPTIONS": options,
            "CONN_MAX_AGE": conn_max_age,
            # A kept connection is checked before a request reuses it (a restarted server, a dropped socket).
            "CONN_HEALTH_CHECKS": conn_max_age > 0,
        }
    raise ImproperlyConfigured(
        f"{name}={url!r} has an unsupported scheme {scheme!r}; use sqlite:///file.db or postgres://user@host/db"
    )


def database_settings(url_name: str = "DATABASE_URL", default_url: str = "") -> dict:
    """``DATABASES["default"]`` from ``DATABASE_URL`` and the connection variables:

    - ``DB_CONN_MAX_AGE`` (seconds, default 0): keep a connection for later requests of the same
      thread.  Right for Celery workers and WSGI; NOT for Daphne: Django runs each ASGI request's
      sync code in a thread of its own, so a kept connection is never reused and lingers until the
      thread is collected.  Use the pool there.
    - ``DB_POOL`` (default off): Django's psycopg connection pool (needs ``psycopg-pool``), one per
      process, shared by all its threads; each request borrows a connection and gives it back.
      ``DB_POOL_MIN_SIZE`` (default 2), ``DB_POOL_MAX_SIZE`` (default 8; requests beyond it wait up to
      ``DB_POOL_TIMEOUT`` seconds, default 10).  Meant for the web processes: a Celery prefork
      worker would inherit a pool opened before the fork; give workers DB_CONN_MAX_AGE instead.
    """
    url = env_str(url_name, default_url)
    conn_max_age = env_int("DB_CONN_MAX_AGE", 0, minimum=0)
    pool = None
    if env_bool("DB_POOL", False):
        if not urlsplit(url).scheme.lower().startswith(("postgres", "pgsql")):
            raise ImproperlyConfigured(f"DB_POOL=1 needs a PostgreSQL {url_name}; got {url!r}")
        min_size = env_int("DB_POOL_MIN_SIZE", 2, minimum=0)
        max_size = env_int("DB_POOL_MAX_SIZE", max(8, min_size), minimum=1)
        if max_size < min_size:
            raise ImproperlyConfigured(f"DB_POOL_MAX_SIZE={max_size} must be at least DB_POOL_MIN_SIZE={min_size}")
        pool = {"min_size": min_size, "max_size": max_size,
                "timeout": env_float("DB_POOL_TIMEOUT", 10.0, minimum=0.1)}
    return database_from_url(url_name, url, conn_max_age=conn_max_age, pool=pool)
