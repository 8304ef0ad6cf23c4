"""API tokens: ``Authorization: Token <key>``.  Only the key's SHA-256 is stored."""
from __future__ import annotations

import hashlib
import secrets

from django.utils import timezone

from ..models import ApiToken


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def token_create(*, user, name: str = "") -> tuple[ApiToken, str]:
    """A new token for ``user``; returns the row and the key (shown once, never stored)."""
    key = secrets.token_hex(20)
    tok = ApiToken.objects.create(user=user, name=name[:100], key_hash=_digest(key), prefix=key[:8])
    return tok, key


def token_user(*, key: str):
    """The active user a key belongs to, or None (unknown, revoked, or an inactive user)."""
    if not key or len(key) > 200:
        return None
    tok = ApiToken.objects.select_related("user").filter(key_hash=_digest(key), revoked=False).first()
    if tok is None or not tok.user.is_active:
        return None
    ApiToken.objects.filter(pk=tok.pk).update(last_used_at=timezone.now())
    return tok.user


def parse_authorization(header: str | None) -> str | None:
    """The key from an ``Authorization: Token <key>`` header, or None when the header is another scheme."""
    if not header:
        return None
    scheme, _, key = header.strip().partition(" ")
    if scheme.lower() != "token":
        return None
    return key.strip()


def token_revoke(*, tokens) -> int:
    """Revoke ``tokens`` (a queryset of ApiToken); returns how many were still active."""
    return tokens.filter(revoked=False).update(revoked=True)
