"""Request bodies are bounded before they are buffered (issue 12, row 5).

Limits (settings, README "Configuration"):

- ``LOUPE_MAX_BODY_BYTES`` (16 MiB) for every request, including anything an anonymous client sends;
- ``LOUPE_MAX_UPLOAD_BYTES`` (2 GiB) for requests under ``/admin/`` that carry a session cookie: the
  admin's import and model uploads.  Only the cookie's presence is checked here, before the body
  arrives (its validity needs the database); Django checks the session and permissions as usual,
  so a forged cookie only buys the larger limit for one refused request.

Two layers:

- :func:`install_daphne_guard`: Daphne (Twisted) reads the whole body into memory or a temporary file
  before it calls the ASGI application, so a guard inside the application comes too late.  The guard
  wraps Daphne's request class: once the headers are in, a ``Content-Length`` over the limit is
  answered ``413`` at once and the connection closed, before one byte of the body is stored; a
  chunked body is counted as it arrives and cut off the same way.  Installed when ``config.asgi`` is
  imported (both ``daphne config.asgi:application`` and ``loupe_serve``).
- :class:`BodyLimitMiddleware`: the same rule as ASGI middleware, for any other ASGI server.

A proxy in front should enforce the same limit (docs/deploy.md: nginx ``client_max_body_size``).
"""
from __future__ import annotations

import json
from typing import Any

from django.conf import settings


def body_limit(path: str, has_session: bool) -> int:
    if has_session and path.startswith("/admin/"):
        return settings.LOUPE_MAX_UPLOAD_BYTES
    return settings.LOUPE_MAX_BODY_BYTES


def refusal(size: int | None, limit: int) -> bytes:
    got = f"{size} bytes" if size is not None else "more"
    return json.dumps({"error": f"request body too large: {got}, the limit here is {limit} bytes"}).encode()


# --------------------------------------------------------------------------- Daphne / Twisted
def install_daphne_guard() -> None:
    """Wrap ``daphne.http_protocol.WebRequest`` (once) so over-limit bodies are refused as they arrive."""
    from daphne.http_protocol import WebRequest  # noqa: PLC0415

    if getattr(WebRequest, "_loupe_guarded", False):
        return
    got_length, handle_chunk, process = WebRequest.gotLength, WebRequest.handleContentChunk, WebRequest.process
    cookie = settings.SESSION_COOKIE_NAME.encode()

    def refuse(self, size: int | None) -> None:
        self._loupe_refused = True
        body = refusal(size, self._loupe_limit)
        head = (b"HTTP/1.1 413 Payload Too Large\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
        self.content = _Discard()
        self.channel.transport.write(head + body)
        self.channel.transport.loseConnection()  # stops reading: the rest of the body is never received

    def guarded_got_length(self, length):
        path = getattr(self.channel, "_path", b"/").split(b"?", 1)[0].decode("latin-1")
        self._loupe_limit = body_limit(path, cookie in self.received_cookies)
        self._loupe_seen = 0
        self._loupe_refused = False
        if length is not None and length > self._loupe_limit:
            refuse(self, length)
            return
        got_length(self, length)

    def guarded_handle_chunk(self, data):
        if getattr(self, "_loupe_refused", False):
            return
        self._loupe_seen = getattr(self, "_loupe_seen", 0) + len(data)
        if self._loupe_seen > getattr(self, "_loupe_limit", self._loupe_seen):
            refuse(self, None)
            return
        handle_chunk(self, data)

    def guarded_process(self):
        if getattr(self, "_loupe_refused", False):
            return  # answered already; the application never sees this request
        process(self)

    WebRequest.gotLength = guarded_got_length
    WebRequest.handleContentChunk = guarded_handle_chunk
    WebRequest.process = guarded_process
    WebRequest._loupe_guarded = True


class _Discard:
    closed = False

    def write(self, data: bytes) -> None:
        pass

    def read(self, *args) -> bytes:
        return b""

    def seek(self, *args) -> int:
        return 0

    def close(self) -> None:
        self.closed = True


# --------------------------------------------------------------------------- any ASGI server
class BodyLimitMiddleware:
    """ASGI middleware: 413 JSON for a declared or streamed body over the limit, before Django reads it all."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope: dict[str, Any], receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        has_session = settings.SESSION_COOKIE_NAME.encode() + b"=" in headers.get(b"cookie", b"")
        limit = body_limit(scope.get("path", "/"), has_session)
        declared = headers.get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await _send_413(send, int(declared), limit)
        seen = 0
        over = False

        async def counted_receive():
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    return {"type": "http.disconnect"}  # Django stops reading and answers nothing
            return message

        await self.app(scope, counted_receive, send)
        if over:
            await _send_413(send, None, limit)


async def _send_413(send, size: int | None, limit: int) -> None:
    body = refusal(size, limit)
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            (b"connection", b"close")]})
    await send({"type": "http.response.body", "body": body})
