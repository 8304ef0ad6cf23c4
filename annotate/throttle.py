"""Throttling of failed logins and failed API-token authentications (issue 12, row 12).

A failure is counted per client address and, for logins, per username, in the cache (Redis when
``REDIS_URL`` is set, so every web process shares the counts; the process's memory otherwise).
After ``LOUPE_AUTH_FAILURES`` failures within ``LOUPE_AUTH_WINDOW_SECONDS`` the key is blocked until
the window ends: a login is refused even with the right password (the form says so), and a token
request answers 429.  Successful logins do not reset the address's count (an attacker with one
account must not unlock guessing at others).  When the cache itself is unreachable, throttling is
skipped and logged: an outage of Redis must not lock everybody out.
"""
from __future__ import annotations

import logging

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache
from django.core.exceptions import PermissionDenied

log = logging.getLogger(__name__)


def client_address(request) -> str:
    return (request.META.get("REMOTE_ADDR") or "unknown") if request is not None else "unknown"


def _keys(kind: str, parts: list[str]) -> list[str]:
    return [f"loupe-throttle:{kind}:{p}"[:200] for p in parts]


def blocked(kind: str, parts: list[str]) -> bool:
    """True when any of ``parts`` (e.g. ``ip:1.2.3.4``) has used up its failures in the window."""
    try:
        counts = cache.get_many(_keys(kind, parts))
    except Exception as exc:  # noqa: BLE001 - any cache backend error: fail open, say so
        log.warning("auth throttle skipped: cache unreachable (%s)", exc)
        return False
    return any(int(v) >= settings.LOUPE_AUTH_FAILURES for v in counts.values())


def record_failure(kind: str, parts: list[str]) -> None:
    window = settings.LOUPE_AUTH_WINDOW_SECONDS
    try:
        for key in _keys(kind, parts):
            if not cache.add(key, 1, timeout=window):
                try:
                    cache.incr(key)
                except ValueError:  # expired between add and incr
                    cache.add(key, 1, timeout=window)
    except Exception as exc:  # noqa: BLE001 - see blocked()
        log.warning("auth failure not counted: cache unreachable (%s)", exc)


class ThrottledModelBackend(ModelBackend):
    """Django's username/password backend, refusing while the username or the address is blocked.

    ``get_user`` (every request with a session) reads the user from the cache when it is there
    (``annotate/cached_auth.py``)."""

    def get_user(self, user_id):
        from .cached_auth import user_cached  # noqa: PLC0415

        user = user_cached(user_id, super().get_user)
        return user if user is not None and self.user_can_authenticate(user) else None

    def authenticate(self, request, username=None, password=None, **kwargs):
        parts = [f"ip:{client_address(request)}", f"user:{(username or '').lower()}"]
        if blocked("login", parts):
            if request is not None:
                request.loupe_login_throttled = True
            log.warning("login refused for %r from %s: too many failed attempts", username, parts[0][3:])
            raise PermissionDenied("too many failed logins; try again later")  # stops authenticate()
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            record_failure("login", parts)
        return user
