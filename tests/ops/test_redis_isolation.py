"""The test suite's own Redis use (tests/support.py, ``LOUPE_TEST_REDIS_DBS``): a session claims one
empty database of the reserved range, skips any database holding keys it did not write (a running
instance's, or another session's claim), and empties only its own.  Checked on a private
``redis-server`` so that nothing on the shared one is touched."""
from __future__ import annotations

import subprocess
import sys
import time

import pytest
import redis

from tests.support import ROOT

CLAIM = """
import sys
from tests import support
db = support.redis_test_db()
url = support.redis_test_url()
import redis
redis.Redis.from_url(url).set("work", "of this session")
print(db, flush=True)
sys.stdin.readline()
support.redis_test_release()
"""


def _session(env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CLAIM], cwd=ROOT, env=env, stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _claimed(proc: subprocess.Popen) -> int:
    """The database number a session printed; a session that died instead fails with its stderr."""
    line = proc.stdout.readline().strip()
    if not line.isdigit():
        proc.kill()
        raise AssertionError(f"the session printed {line!r} instead of a database number; its stderr:\n"
                             f"{proc.stderr.read()[-3000:]}")
    return int(line)


@pytest.mark.redis
def test_sessions_claim_distinct_empty_databases_and_leave_foreign_data_alone(redis_server):
    import os

    srv = redis_server()
    base = srv.url.rsplit("/", 1)[0]
    foreign = redis.Redis.from_url(f"{base}/1")
    foreign.set("someone-elses-data", "keep me")  # e.g. a Loupe instance using database 1
    env = {**os.environ, "LOUPE_TEST_REDIS_URL": base, "LOUPE_TEST_REDIS_DBS": "1-3", "PYTHONPATH": str(ROOT)}
    first, second = _session(env), _session(env)
    try:
        dbs = sorted(_claimed(p) for p in (first, second))
        assert dbs == [2, 3]  # database 1 holds foreign keys: skipped; the two sessions do not share one
        third = subprocess.run([sys.executable, "-c", CLAIM], cwd=ROOT, env=env, input="\n", capture_output=True,
                               text=True, timeout=60)
        assert third.returncode != 0 and "no free Redis database in LOUPE_TEST_REDIS_DBS=1-3" in third.stderr
    finally:
        for p in (first, second):
            p.communicate("\n", timeout=60)
    time.sleep(0.1)
    assert foreign.get("someone-elses-data") == b"keep me"
    for db in (2, 3):  # released: emptied, claim and all
        assert redis.Redis.from_url(f"{base}/{db}").dbsize() == 0
