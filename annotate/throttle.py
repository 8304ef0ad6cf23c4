"""Throttling of failed logins and failed API-token authentications, over HTTP and WebSockets (issue 12, row 12).

Failures are counted in the cache (Redis when ``REDIS_URL`` is set, so every web process shares the
counts; the process's memory otherwise), each under several keys with a limit of its own:

- per credential and address: (address, username) for logins, (address, token) for tokens, with
  ``LOUPE_AUTH_FAILURES`` (10).  One person's typos lock only themselves, from that address;
- per address, ``LOUPE_AUTH_ADDRESS_FAILURES`` (100): guessing across many usernames or tokens from
  one address, while a team behind one NAT keeps working through a colleague's typos;
- per username (logins), also ``LOUPE_AUTH_ADDRESS_FAILURES``: guessing one account from many addresses.

A key that reaches its limit within ``LOUPE_AUTH_WINDOW_SECONDS`` is blocked until the window ends: a
login is refused even with the right password (the form says so), a token request answers 429 and a
WebSocket with a token is closed with 4429.  Successful logins do not reset any count (an attacker
with one account must not unlock guessing at others).  When the cache itself is unreachable,
throttling is skipped and logged: an outage of Redis must not lock everybody out.
"""
from __future__ import annotations

import hashlib
import logging

from django.conf import settings
from django.contrib.auth.backends import ModelBackend
from django.core.cache import cache
from django.core.exceptions import PermissionDenied

from .services.tokens import token_user

log = logging.getLogger(__name__)


def client_address(request) -> str:
    return (request.META.get("REMOTE_ADDR") or "unknown") if request is not None else "unknown"


def scope_address(scope) -> str:
    """The client address of an ASGI (WebSocket) scope, as ``REMOTE_ADDR`` is for HTTP."""
    client = scope.get("client")
    return str(client[0]) if client else "unknown"


Limits = list[tuple[str, int]]  # (key part, failures allowed in the window)


def login_limits(address: str, username: str | None) -> Limits:
    user = (username or "").lower()
    per, wide = settings.LOUPE_AUTH_FAILURES, settings.LOUPE_AUTH_ADDRESS_FAILURES
    return [(f"ip-user:{address}:{user}", per), (f"ip:{address}", wide), (f"user:{user}", wide)]


def token_limits(address: str, key: str) -> Limits:
    """The token is named by a digest prefix, so no part of a key ever sits in the cache."""
    token = hashlib.sha256(key.encode()).hexdigest()[:16]
    return [(f"ip-token:{address}:{token}", settings.LOUPE_AUTH_FAILURES),
            (f"ip:{address}", settings.LOUPE_AUTH_ADDRESS_FAILURES)]


def _key(kind: str, part: str) -> str:
    return f"loupe-throttle:{kind}:{part}"[:200]


def blocked(kind: str, limits: Limits) -> bool:
    """True when any key of ``limits`` has used up its failures in the window."""
    try:
        counts = cache.get_many([_key(kind, part) for part, _ in limits])
    except Exception as exc:  # noqa: BLE001 - any cache backend error: fail open, say so
        log.warning("auth throttle skipped: cache unreachable (%s)", exc)
        return False
    return any(int(counts.get(_key(kind, part), 0)) >= limit for part, limit in limits)


def record_failure(kind: str, limits: Limits) -> None:
    window = settings.LOUPE_AUTH_WINDOW_SECONDS
    try:
        for part, _ in limits:
            key = _key(kind, part)
            if not cache.add(key, 1, timeout=window):
                try:
                    cache.incr(key)
                except ValueError:  # expired between add and incr
                    cache.add(key, 1, timeout=window)
    except Exception as exc:  # noqa: BLE001 - see blocked()
        log.warning("auth failure not counted: cache unreachable (%s)", exc)


def token_authenticate(*, address: str, key: str):
    """``(user, throttled)`` for an API token from ``address``, HTTP and WebSocket alike: ``(None, True)``
    while blocked (the key is not even looked up), ``(None, False)`` for a bad key (counted)."""
    limits = token_limits(address, key)
    if blocked("token", limits):
        log.warning("token refused from %s: too many failed attempts", address)
        return None, True
    user = token_user(key=key)
    if user is None:
        record_failure("token", limits)
    return user, False


class ThrottledModelBackend(ModelBackend):
    """Django's username/password backend, refusing while the username or the address is blocked.

    ``get_user`` (every request with a session) reads the user from the cache when it is there
    (``annotate/cached_auth.py``)."""

    def get_user(self, user_id):
        from .cached_auth import user_cached  # noqa: PLC0415

        user = user_cached(user_id, super().get_user)
        return user if user is not None and self.user_can_authenticate(user) else None

    def authenticate(self, request, username=None, password=None, **kwargs):
        address = client_address(request)
        limits = login_limits(address, username)
        if blocked("login", limits):
            if request is not None:
                request.loupe_login_throttled = True
            log.warning("login refused for %r from %s: too many failed attempts", username, address)
            raise PermissionDenied("too many failed logins; try again later")  # stops authenticate()
        user = super().authenticate(request, username=username, password=password, **kwargs)
        if user is None:
            record_failure("login", limits)
        return user
