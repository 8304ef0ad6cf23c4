"""Item images from short-lived signed URLs, served without Django's request path.

A leased item's ``image_url`` (``payloads.entry_payload``) is ``/images/<item>/<expires>/<sig>/<path>``:
``path`` is the image's MEDIA_ROOT-relative file, ``expires`` a Unix time, ``sig`` an HMAC-SHA256
(keyed by ``SECRET_KEY``, salted for this use) over item, path and expiry.  Whoever may lease the
item got the URL from a permission-checked API call; the URL alone then proves it, so serving it
needs no session, no user and no database query.  The URL is a capability for at most
``LOUPE_IMAGE_URL_SECONDS`` (plus one rounding step): a member removed from the project keeps
what they were shown until then, no longer.

Expiry is rounded up to a step of a quarter of the lifetime, so every lease of an item in one step
gives the same URL and the browser's cache answers the repeats; the response is
``Cache-Control: private, max-age=<seconds left>, immutable`` (the bytes behind a URL never change:
an item's file is written once at import).

:func:`asgi_images` answers the prefix in front of Django (``config/asgi.py``): a few hundred
microseconds of CPU per image instead of a Django request.  :func:`image_view` is the same check as
a plain Django view for the URL conf (the test client, WSGI).  Behind a proxy that serves
MEDIA_ROOT from an internal location, ``LOUPE_IMAGE_ACCEL_REDIRECT`` (e.g. ``/_media/``) makes both
answer with ``X-Accel-Redirect`` and no body, so the proxy sends the bytes (docs/deploy.md).

Bad URLs answer 403 naming the problem (expired, bad signature, malformed); a file that is
missing answers 404.  Nothing here executes or decodes the file: it is sent as stored, with
``X-Content-Type-Options: nosniff``.
"""
from __future__ import annotations

import asyncio
import hmac
import json
import mimetypes
import time
from base64 import urlsafe_b64encode
from hashlib import sha256
from pathlib import Path
from typing import Any
from urllib.parse import quote

from django.conf import settings
from django.http import FileResponse, HttpRequest, HttpResponse, JsonResponse

PREFIX = "/images/"
_SALT = b"loupe.image_urls"
_CHUNK = 256 * 1024


class BadImageURL(Exception):
    """The URL is malformed, forged or expired; ``str()`` says which (a 403 answer)."""


def _key() -> bytes:
    # Derived once per secret: sha256(salt + SECRET_KEY); cached on the function for the hot path.
    secret = settings.SECRET_KEY
    cached = getattr(_key, "_cache", None)
    if cached is None or cached[0] != secret:
        cached = (secret, sha256(_SALT + secret.encode()).digest())
        _key._cache = cached  # type: ignore[attr-defined]
    return cached[1]


def _signature(item_id: int, path: str, expires: int) -> str:
    mac = hmac.new(_key(), f"{item_id}\n{path}\n{expires}".encode(), sha256).digest()
    return urlsafe_b64encode(mac[:24]).decode().rstrip("=")  # 192 bits, 32 characters


def image_url(item_id: int, path: str, *, now: float | None = None) -> str:
    """The signed URL of an item's image file (``path`` relative to MEDIA_ROOT)."""
    ttl = int(settings.LOUPE_IMAGE_URL_SECONDS)
    step = max(ttl // 4, 1)
    expires = -(-int((time.time() if now is None else now) + ttl) // step) * step
    return f"{PREFIX}{int(item_id)}/{expires}/{_signature(int(item_id), path, expires)}/{quote(path)}"


def verify(url_path: str, *, now: float | None = None) -> tuple[str, int]:
    """(MEDIA_ROOT-relative path, seconds left) of a signed image URL's path (percent-decoded, as ASGI
    gives it); :class:`BadImageURL` when it is malformed, forged or expired."""
    if not url_path.startswith(PREFIX):
        raise BadImageURL("not an image URL")
    parts = url_path[len(PREFIX):].split("/", 3)
    if len(parts) != 4 or not parts[0].isdigit() or not parts[1].isdigit() or not parts[3]:
        raise BadImageURL("malformed image URL; expected /images/<item>/<expires>/<signature>/<path>")
    item_id, expires, sig, path = int(parts[0]), int(parts[1]), parts[2], parts[3]
    if not hmac.compare_digest(sig.encode(), _signature(item_id, path, expires).encode()):
        raise BadImageURL("bad signature: this image URL was not issued by this server (or was altered)")
    left = expires - int(time.time() if now is None else now)
    if left <= 0:
        raise BadImageURL(f"image URL expired {-left} s ago; lease the item again for a fresh one")
    return path, left


def _file(path: str) -> Path:
    from .storage import media_path  # noqa: PLC0415 - storage imports models (apps must be ready)

    return media_path(path)  # ValueError when it escapes MEDIA_ROOT (cannot be signed, but still refused)


def _headers(path: Path, left: int) -> list[tuple[str, str]]:
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return [("Content-Type", ctype), ("Cache-Control", f"private, max-age={left}, immutable"),
            ("X-Content-Type-Options", "nosniff")]


# --------------------------------------------------------------------------- Django view
def image_view(request: HttpRequest, **_kwargs: Any) -> HttpResponse:
    """The signed image URL as a Django view (``/images/...`` in the URL conf)."""
    if request.method not in ("GET", "HEAD"):
        resp = JsonResponse({"error": f"method {request.method} is not allowed here; use GET"}, status=405)
        resp["Allow"] = "GET, HEAD"
        return resp
    try:
        path, left = verify(request.path)
        file = _file(path)
    except (BadImageURL, ValueError) as exc:
        return JsonResponse({"error": str(exc)}, status=403)
    headers = dict(_headers(file, left))
    accel = settings.LOUPE_IMAGE_ACCEL_REDIRECT
    if accel:
        resp = HttpResponse(b"", content_type=headers.pop("Content-Type"))
        resp["X-Accel-Redirect"] = accel + quote(path)
    else:
        try:
            fh = open(file, "rb")
        except OSError:
            return JsonResponse({"error": "the image file is missing"}, status=404)
        resp = FileResponse(fh, content_type=headers.pop("Content-Type"))
    for k, v in headers.items():
        resp[k] = v
    return resp


# --------------------------------------------------------------------------- ASGI
async def _answer(send, status: int, headers: list[tuple[str, str]], body: bytes = b"") -> None:
    await send({"type": "http.response.start", "status": status,
                "headers": [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers]})
    await send({"type": "http.response.body", "body": body})


async def _error(send, status: int, message: str, extra: list[tuple[str, str]] = ()) -> None:
    body = json.dumps({"error": message}).encode()
    await _answer(send, status, [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                                 ("Cache-Control", "no-store"), *extra], body)


async def asgi_images(scope, receive, send) -> None:
    """ASGI app for ``/images/...``: the same check and answer as :func:`image_view`, no Django request."""
    method = scope.get("method", "GET")
    if method not in ("GET", "HEAD"):
        await _error(send, 405, f"method {method} is not allowed here; use GET", [("Allow", "GET, HEAD")])
        return
    try:
        path, left = verify(scope["path"])
        file = _file(path)
    except (BadImageURL, ValueError) as exc:
        await _error(send, 403, str(exc))
        return
    headers = _headers(file, left)
    accel = settings.LOUPE_IMAGE_ACCEL_REDIRECT
    if accel:
        await _answer(send, 200, [*headers, ("X-Accel-Redirect", accel + quote(path)), ("Content-Length", "0")])
        return
    try:
        size = file.stat().st_size
        if size <= _CHUNK:  # the common case (a thumbnail-sized image): one read, one body message
            data = file.read_bytes() if size <= 64 * 1024 else await asyncio.to_thread(file.read_bytes)
            fh = None
        else:
            fh = await asyncio.to_thread(open, file, "rb")
    except OSError:
        await _error(send, 404, "the image file is missing")
        return
    await send({"type": "http.response.start", "status": 200,
                "headers": [(k.lower().encode("latin-1"), v.encode("latin-1"))
                            for k, v in [*headers, ("Content-Length", str(size))]]})
    if method == "HEAD":
        if fh is not None:
            fh.close()
        await send({"type": "http.response.body", "body": b""})
        return
    if fh is None:
        await send({"type": "http.response.body", "body": data})
        return
    try:
        while True:
            chunk = await asyncio.to_thread(fh.read, _CHUNK)
            more = len(chunk) == _CHUNK
            await send({"type": "http.response.body", "body": chunk, "more_body": more})
            if not more:
                break
    finally:
        fh.close()


class ImagesFirst:
    """ASGI middleware: ``/images/...`` to :func:`asgi_images`, everything else to ``app``."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"].startswith(PREFIX):
            await asgi_images(scope, receive, send)
        else:
            await self.app(scope, receive, send)
