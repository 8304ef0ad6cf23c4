"""Health check of the web service (compose.yaml runs ``python docker/healthcheck.py``).

Healthy means the web server answers a real Django page with 200: the ASGI app imported, settings
loaded and the database answered the session lookup.  The request says it came through the
TLS proxy (``X-Forwarded-Proto: https``) so ``SECURE_SSL_REDIRECT`` does not turn it into a
redirect, and uses ``localhost`` as host, which compose.yaml always puts in ALLOWED_HOSTS.
"""
from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request


def check(url: str, timeout: float = 5.0) -> tuple[bool, str]:
    request = urllib.request.Request(url, headers={"X-Forwarded-Proto": "https"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = response.status
    except urllib.error.HTTPError as exc:
        return False, f"{url} answered {exc.code}"
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url} unreachable: {exc}"
    return status == 200, f"{url} answered {status}"


def main(argv: list[str]) -> int:
    port = os.environ.get("PORT", "8000")
    url = argv[1] if len(argv) > 1 else f"http://localhost:{port}/admin/login/"
    ok, message = check(url)
    print(message)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
