"""Issue 12, row 5: a huge POST is refused with 413 as it arrives, by real Daphne, before it is buffered.

Before: Daphne read a 300 MiB anonymous POST into memory and temporary files (423 MB RSS, 586 MB
of temp files) and only then answered 401.  Here the body limit is 1 MiB
(``LOUPE_MAX_BODY_BYTES``); a declared 300 MiB body is answered at once, a chunked body with no
length is cut off once it passes the limit, and Daphne's memory does not grow with what was sent.
"""
from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import pytest

LIMIT = 1024 * 1024


def _rss_hwm_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def _send_until_refused(port: int, head: bytes, chunk: bytes, max_bytes: int) -> tuple[bytes, int]:
    """Send ``head`` then ``chunk`` repeatedly until the server answers or closes; (response, body bytes sent)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock.sendall(head)
    sock.setblocking(False)
    sent, response = 0, b""
    deadline = time.monotonic() + 60
    try:
        while sent < max_bytes and time.monotonic() < deadline:
            try:
                response += sock.recv(65536)
                if response:
                    break
            except BlockingIOError:
                pass
            try:
                sent += sock.send(chunk)
            except BlockingIOError:
                time.sleep(0.01)
            except (BrokenPipeError, ConnectionResetError):
                break
        sock.setblocking(True)
        sock.settimeout(10)
        while b"\r\n\r\n" not in response:
            part = sock.recv(65536)
            if not part:
                break
            response += part
    except (ConnectionResetError, BrokenPipeError):
        pass
    finally:
        sock.close()
    return response, sent


def _json_body(response: bytes) -> dict:
    return json.loads(response.split(b"\r\n\r\n", 1)[1])


@pytest.mark.slow
@pytest.mark.parametrize("server", ["daphne", "uvicorn"])
def test_a_huge_post_is_refused_with_413_before_the_server_buffers_it(start_server, server):
    srv = start_server(env={"LOUPE_MAX_BODY_BYTES": str(LIMIT)}, demo=dict(limit=30), **{server: True})
    pid = srv.server.p.pid
    before = _rss_hwm_kib(pid)

    declared = 300 * 1024 * 1024
    head = (b"POST /api/projects/1/label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % declared)
    response, sent = _send_until_refused(srv.port, head, b"x" * 65536, declared)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert f"limit here is {LIMIT} bytes" in _json_body(response)["error"]
    assert sent < 64 * 1024 * 1024, sent  # cut off: the 300 MiB never went through

    head = (b"POST /api/projects/1/label HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    chunk = b"10000\r\n" + b"y" * 65536 + b"\r\n"
    response, sent = _send_until_refused(srv.port, head, chunk, declared)
    assert response.startswith(b"HTTP/1.1 413"), response[:200]
    assert LIMIT <= sent < 64 * 1024 * 1024, sent

    assert _rss_hwm_kib(pid) - before < 32 * 1024, f"{server}'s peak memory grew with the refused bodies"
    # A normal request still reaches Django (anonymous: 401, as JSON).
    code, body = srv.api("not-a-token", "/api/projects/1/lease", {"n": 1})
    assert code == 401 and "token" in body["error"]
