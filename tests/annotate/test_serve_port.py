"""``loupe_serve`` on a port that is taken stops with an error before it starts a worker (found by QA:
a second ``make run`` exited 0 after its worker thread had re-enqueued the first server's rounds)."""
import socket

import pytest
from django.core.management import CommandError, call_command

from annotate.management.commands import loupe_serve


def test_a_taken_port_is_a_command_error_before_anything_starts(monkeypatch):
    def must_not_start(**kw):
        raise AssertionError("the worker started although the port is taken")

    monkeypatch.setattr(loupe_serve, "start_embedded_worker", must_not_start)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with pytest.raises(CommandError, match=f"cannot listen on 127.0.0.1:{port}"):
            call_command("loupe_serve", "--host", "127.0.0.1", "--port", str(port))


def test_a_free_port_passes_the_check():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    loupe_serve.port_check("127.0.0.1", port)  # no exception
