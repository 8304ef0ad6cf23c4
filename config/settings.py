"""Loupe settings, read from environment variables (see README, "Configuration").

Every variable has a development default so a bare checkout runs on SQLite with the
in-memory channel layer and an embedded Celery worker.  A value that is set but wrong
stops start-up with ``ImproperlyConfigured`` naming the variable.
"""
from __future__ import annotations

import os
import secrets
import warnings
from pathlib import Path

from .env import (
    database_settings,
    env_bool,
    env_choice,
    env_float,
    env_int,
    env_list,
    env_str,
)

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("LOUPE_VAR_DIR", str(BASE_DIR / "var")))

_DEV_SECRET = "loupe-development-secret-key-do-not-use-in-production"
PRODUCTION = env_bool("LOUPE_PRODUCTION", False)
DEBUG = env_bool("DEBUG", not PRODUCTION)
SECRET_KEY = env_str("SECRET_KEY", "")
if not SECRET_KEY:
    if PRODUCTION:
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured("SECRET_KEY must be set when LOUPE_PRODUCTION is on")
    # Development: a random key made once per checkout and kept in var/ (sessions survive restarts,
    # and no two checkouts share a key); the fixed key only where var/ cannot be written.
    _key_file = VAR_DIR / "secret_key"
    try:
        VAR_DIR.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(_key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # one process makes it
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as fh:
                fh.write(secrets.token_urlsafe(50))
        SECRET_KEY = _key_file.read_text().strip()
    except OSError:
        SECRET_KEY = ""
    if not SECRET_KEY:
        SECRET_KEY = _DEV_SECRET
        warnings.warn("SECRET_KEY is not set and var/secret_key cannot be written; using the development key "
                      "(never do this in production)", stacklevel=1)

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", [] if PRODUCTION else ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "annotate",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "config.static_middleware.StaticFilesMiddleware",  # WhiteNoise, async-capable
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "config.urls"
ASGI_APPLICATION = "config.asgi.application"
WSGI_APPLICATION = None

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "frontend" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --------------------------------------------------------------------------- database
DATABASE_URL = env_str("DATABASE_URL", f"sqlite:///{VAR_DIR / 'loupe.sqlite3'}")
if DATABASE_URL.startswith("sqlite:"):
    VAR_DIR.mkdir(parents=True, exist_ok=True)  # a bare checkout has no var/ yet; SQLite won't create it
# Connection reuse: DB_CONN_MAX_AGE (workers) or DB_POOL (Daphne); see config/env.py database_settings.
DATABASES = {"default": database_settings("DATABASE_URL", DATABASE_URL)}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --------------------------------------------------------------------------- auth
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
AUTHENTICATION_BACKENDS = ["annotate.throttle.ThrottledModelBackend"]
# Failed logins and failed API tokens (HTTP and WebSocket): after LOUPE_AUTH_FAILURES for one
# credential from one address, or LOUPE_AUTH_ADDRESS_FAILURES from one address (or for one username)
# within the window, refused until it ends (annotate/throttle.py).
LOUPE_AUTH_FAILURES = env_int("LOUPE_AUTH_FAILURES", 10, minimum=1)
LOUPE_AUTH_ADDRESS_FAILURES = env_int("LOUPE_AUTH_ADDRESS_FAILURES", 100, minimum=1)
LOUPE_AUTH_WINDOW_SECONDS = env_int("LOUPE_AUTH_WINDOW_SECONDS", 300, minimum=1)
# Sessions and users come from the cache on the hot path, the database stays the truth
# (annotate/cached_auth.py); a cached copy lives at most this long.
SESSION_ENGINE = "annotate.cached_auth"
LOUPE_AUTH_CACHE_SECONDS = env_int("LOUPE_AUTH_CACHE_SECONDS", 300, minimum=1)
LOGIN_URL = "/accounts/login/"
LOGIN_REDIRECT_URL = "/"
LOGOUT_REDIRECT_URL = "/accounts/login/"

# --------------------------------------------------------------------------- i18n
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

# --------------------------------------------------------------------------- files
STATIC_URL = "/static/"
STATICFILES_DIRS = [BASE_DIR / "frontend" / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(VAR_DIR / "static")))
# Item images are never served from a public media URL: a permission-checked view streams them.
MEDIA_ROOT = Path(env_str("MEDIA_ROOT", str(VAR_DIR / "media")))
MEDIA_URL = None
# Leased items' images come from signed URLs valid this long (annotate/image_urls.py), answered in
# front of Django; with a proxy that serves MEDIA_ROOT at an internal location, set
# LOUPE_IMAGE_ACCEL_REDIRECT to that location (e.g. /_media/) and the proxy sends the bytes.
LOUPE_IMAGE_URL_SECONDS = env_int("LOUPE_IMAGE_URL_SECONDS", 600, minimum=10)
LOUPE_IMAGE_ACCEL_REDIRECT = env_str("LOUPE_IMAGE_ACCEL_REDIRECT", "")
if LOUPE_IMAGE_ACCEL_REDIRECT and not (LOUPE_IMAGE_ACCEL_REDIRECT.startswith("/")
                                       and LOUPE_IMAGE_ACCEL_REDIRECT.endswith("/")):
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(f"LOUPE_IMAGE_ACCEL_REDIRECT={LOUPE_IMAGE_ACCEL_REDIRECT!r} must start and end "
                               "with '/' (the proxy's internal location of MEDIA_ROOT, e.g. /_media/)")
WHITENOISE_USE_FINDERS = True  # serve frontend/static without collectstatic in development
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("LOUPE_UPLOAD_MAX_MEMORY", 10 * 1024 * 1024, minimum=1024)
FILE_UPLOAD_MAX_MEMORY_SIZE = DATA_UPLOAD_MAX_MEMORY_SIZE
LOUPE_MAX_UPLOAD_BYTES = env_int("LOUPE_MAX_UPLOAD_BYTES", 2 * 1024**3, minimum=1024)
# Every request body is refused with 413 beyond this as it arrives (config/bodylimit.py); admin uploads
# from a logged-in session may use LOUPE_MAX_UPLOAD_BYTES.
LOUPE_MAX_BODY_BYTES = env_int("LOUPE_MAX_BODY_BYTES", 16 * 1024**2, minimum=1024)
LOUPE_MAX_IMAGE_BYTES = env_int("LOUPE_MAX_IMAGE_BYTES", 50 * 1024**2, minimum=1024)
# An imported image over this many pixels is skipped by name (a 13000×13000 PNG is 1.3 KB compressed
# but 500 MB decoded); 40 MP covers photographs and most scans.
LOUPE_MAX_IMAGE_PIXELS = env_int("LOUPE_MAX_IMAGE_PIXELS", 40_000_000, minimum=1)

# --------------------------------------------------------------------------- Celery
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", "memory://")
# With the memory broker the worker must live in the web process (embedded default).
LOUPE_EMBEDDED_WORKER = CELERY_BROKER_URL.startswith("memory://")
CELERY_RESULT_BACKEND = None
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_DEFAULT_QUEUE = "cpu"
CELERY_TASK_ROUTES = {
    "annotate.tasks.round_run": {"queue": "gpu"},
    "annotate.tasks.embedding_compute": {"queue": "gpu"},
    "annotate.tasks.alignment_run": {"queue": "gpu"},
    "annotate.tasks.final_model_run": {"queue": "gpu"},
    "annotate.tasks.import_run": {"queue": "cpu"},
    "annotate.tasks.export_run": {"queue": "cpu"},
    "annotate.tasks.quality_refresh": {"queue": "cpu"},
}
CELERY_TASK_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# Redis broker: a task delivered to a worker that vanished (machine or container gone; a killed pool
# process is caught by reject_on_worker_lost) is delivered again after this many seconds.  Must be
# longer than the longest task (a round, an embedding job), or a slow task would run twice.
CELERY_VISIBILITY_TIMEOUT = env_int("CELERY_VISIBILITY_TIMEOUT", 3600, minimum=60)
if CELERY_BROKER_URL.startswith(("redis://", "rediss://", "sentinel://")):
    CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": CELERY_VISIBILITY_TIMEOUT}

# Liveness (annotate/services/liveness.py): a running round or job beats every LOUPE_HEARTBEAT_SECONDS;
# one silent for LOUPE_LOST_AFTER_SECONDS is taken as lost (its worker is gone) and re-run, at most
# LOUPE_MAX_ATTEMPTS runs in all, then failed.  A row still queued after LOUPE_QUEUED_STALE_SECONDS
# (its message lost with a broker) is sent again.  The sweep runs every LOUPE_SWEEP_SECONDS in each
# worker and in loupe_serve (0: never periodically; still once at worker start-up).
LOUPE_HEARTBEAT_SECONDS = env_int("LOUPE_HEARTBEAT_SECONDS", 10, minimum=1)
LOUPE_LOST_AFTER_SECONDS = env_int("LOUPE_LOST_AFTER_SECONDS", 60, minimum=2)
LOUPE_QUEUED_STALE_SECONDS = env_int("LOUPE_QUEUED_STALE_SECONDS", 900, minimum=5)
LOUPE_MAX_ATTEMPTS = env_int("LOUPE_MAX_ATTEMPTS", 3, minimum=1)
LOUPE_RETRY_AFTER_FAILURE_SECONDS = env_int("LOUPE_RETRY_AFTER_FAILURE_SECONDS", 30, minimum=0)
LOUPE_SWEEP_SECONDS = env_int("LOUPE_SWEEP_SECONDS", 15, minimum=0)
# The sweep checks each project's kept pending-queue count against a fresh count (and repairs a drift) at
# a process's first sweep and then at most every LOUPE_RECOUNT_SECONDS (0: never; services/queue_counts.py).
LOUPE_RECOUNT_SECONDS = env_int("LOUPE_RECOUNT_SECONDS", 300, minimum=0)
if LOUPE_LOST_AFTER_SECONDS <= 2 * LOUPE_HEARTBEAT_SECONDS:
    from django.core.exceptions import ImproperlyConfigured

    raise ImproperlyConfigured(
        f"LOUPE_LOST_AFTER_SECONDS={LOUPE_LOST_AFTER_SECONDS} must exceed twice LOUPE_HEARTBEAT_SECONDS="
        f"{LOUPE_HEARTBEAT_SECONDS}, or a live worker's round would be taken as lost"
    )

# --------------------------------------------------------------------------- Channels
REDIS_URL = env_str("REDIS_URL", "")
if REDIS_URL:
    if not REDIS_URL.startswith(("redis://", "rediss://", "unix://")):
        from django.core.exceptions import ImproperlyConfigured

        raise ImproperlyConfigured(f"REDIS_URL={REDIS_URL!r} must start with redis://, rediss:// or unix://")
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py >= 8 defaults socket_timeout to 5 s, the same as channels_redis' blocking
            # BZPOPMIN (5 s): an idle consumer's read then times out and the WebSocket dies.  Reads
            # must be allowed to outlast the BZPOPMIN wait (tests/integration idles past it).
            "CONFIG": {
                "hosts": [{"address": REDIS_URL, "socket_timeout": 30, "socket_connect_timeout": 5}],
                "prefix": env_str("LOUPE_CHANNEL_PREFIX", "loupe"),
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

# The cache holds the auth throttle's counters: shared through Redis when there is one.
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL,
                          "KEY_PREFIX": env_str("LOUPE_CHANNEL_PREFIX", "loupe") + "-cache",
                          "OPTIONS": {"socket_connect_timeout": 2, "socket_timeout": 2}}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --------------------------------------------------------------------------- selection
SELECTION_DEVICE = env_choice("SELECTION_DEVICE", "cpu", ("cpu", "cuda", "auto"))
LOUPE_LEASE_SECONDS = env_int("LOUPE_LEASE_SECONDS", 600, minimum=5)
# A round's MPI selection job (project.selection_ranks > 1) is stopped after this many seconds.
LOUPE_MPI_TIMEOUT = env_int("LOUPE_MPI_TIMEOUT", 3600, minimum=10)
LOUPE_DEFAULT_L2 = env_float("LOUPE_DEFAULT_L2", 1.0, minimum=0.0)
# Workers import torch and fit the head once at start, not in the first round (annotate/warmup.py).
LOUPE_WORKER_WARMUP = env_bool("LOUPE_WORKER_WARMUP", True)
# BLAS/OpenMP threads of a round; 0 = the libraries' defaults (annotate/services/threads.py).
LOUPE_ROUND_THREADS = env_int("LOUPE_ROUND_THREADS", 1, minimum=0)

# --------------------------------------------------------------------------- production
if PRODUCTION:
    SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", True)
    CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", True)
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", False)  # TLS usually ends at the proxy
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0, minimum=0)
    SECURE_CONTENT_TYPE_NOSNIFF = True
    SESSION_COOKIE_HTTPONLY = True
    X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL", "INFO")},
    # Django's own default config gives "django" a console handler too (under DEBUG), so every
    # "Not Found" or traceback was printed twice: let its records reach the root handler only.
    "loggers": {"django": {"handlers": [], "level": env_str("LOG_LEVEL", "INFO")},
                "django.channels.server": {"level": "WARNING"}},
}
if LOUPE_EMBEDDED_WORKER:  # memory:// has no host by design; kombu would warn at every start
    LOGGING["loggers"]["kombu.connection"] = {"level": "ERROR"}
