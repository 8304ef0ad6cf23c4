"""Sessions and users read from the cache on the hot path, with the database as the truth.

Every request of the labeling page needs its session and its user: two SQL statements each time
with Django's database sessions.  Here both come from the cache (Redis when ``REDIS_URL`` is set,
shared by every web process), so a request that finds them there runs no statement for them
(docs/bench-load.md):

- :class:`SessionStore` (``SESSION_ENGINE = "annotate.cached_auth"``): Django's ``cached_db``
  (written to the database first, then the cache; read from the cache, else the database), with
  two changes: a cache entry lives at most ``LOUPE_AUTH_CACHE_SECONDS``, and an unreachable cache is
  skipped (logged), never an error.  With the channel-layer Redis down, requests must go on
  (tests/ops/test_outages.py); they then read the database as before.
- :func:`user_cached` (``ThrottledModelBackend.get_user``): the user row by id, cached for the same
  time and dropped from the cache when the row is saved or deleted (deactivation, a password or
  superuser change: :func:`user_forget`, connected in ``apps.py``).  Django still checks the
  session's password hash and ``is_active`` against the cached row on every request.

What a cache outage can leave behind: a logout or a user change made while the cache was
unreachable cannot drop the cached copy, which then lives until it expires, so for at most
``LOUPE_AUTH_CACHE_SECONDS`` (5 minutes by default) after the outage.  Membership is not cached:
``permissions.project_for`` reads it in the same statement as the project, so a role change or a
removal counts from the next request.
"""
from __future__ import annotations

import logging
import time
from typing import Any, Callable

from django.conf import settings
from django.contrib.sessions.backends import cached_db
from django.core.cache import cache

log = logging.getLogger(__name__)

#: after a cache error, the cache is not tried again for this long (per process)
BACKOFF_S = 5.0
_down_until = 0.0


def guarded(op: Callable[..., Any], *args: Any, default: Any = None) -> Any:
    """``op(*args)``, or ``default`` when the cache is unreachable (logged, then skipped for ``BACKOFF_S``)."""
    global _down_until
    if time.monotonic() < _down_until:
        return default
    try:
        return op(*args)
    except Exception as exc:  # noqa: BLE001 - any cache backend error: the database answers instead
        _down_until = time.monotonic() + BACKOFF_S
        log.warning("auth cache skipped for %.0f s: %s: %s", BACKOFF_S, type(exc).__name__, exc)
        return default


def _ttl(age: int | float) -> int:
    return max(1, min(int(age), int(settings.LOUPE_AUTH_CACHE_SECONDS)))


class SessionStore(cached_db.SessionStore):
    """``cached_db`` sessions with a bounded cache lifetime and a cache that may be down."""

    cache_key_prefix = "loupe.session."

    def load(self) -> dict[str, Any]:
        data = guarded(self._cache.get, self.cache_key)
        if data is None:
            row = self._get_session_from_db()
            if row is None:
                return {}
            data = self.decode(row.session_data)
            guarded(self._cache.set, self.cache_key, data, _ttl(self.get_expiry_age(expiry=row.expire_date)))
        return data

    def save(self, must_create: bool = False) -> None:
        super(cached_db.SessionStore, self).save(must_create)  # the database first: it is the truth
        guarded(self._cache.set, self.cache_key, self._session, _ttl(self.get_expiry_age()))

    def delete(self, session_key: str | None = None) -> None:
        super(cached_db.SessionStore, self).delete(session_key)
        key = session_key or self.session_key
        if key is not None:
            guarded(self._cache.delete, self.cache_key_prefix + key)


def _user_key(user_id: Any) -> str:
    return f"loupe.user.{user_id}"


def user_cached(user_id: Any, load: Callable[[Any], Any]):
    """The user with ``user_id`` from the cache, else ``load(user_id)`` (cached when found)."""
    user = guarded(cache.get, _user_key(user_id))
    if user is None:
        user = load(user_id)
        if user is not None:
            guarded(cache.set, _user_key(user_id), user, _ttl(settings.LOUPE_AUTH_CACHE_SECONDS))
    return user


def user_forget(sender=None, instance=None, **_kwargs: Any) -> None:
    """Drop a saved or deleted user from the cache (``post_save``/``post_delete`` of the user model)."""
    if instance is not None and instance.pk is not None:
        guarded(cache.delete, _user_key(instance.pk))
