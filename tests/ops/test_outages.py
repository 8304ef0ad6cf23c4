"""Issue 12, rows 1-3, on the real stack: the fault-injection script (bench/faults.py) as a test.

PostgreSQL, two private ``redis-server`` processes (broker; channel layer), Daphne and a separate
Celery worker, each in its own process.  One after another: the broker Redis is killed; the layer
Redis is killed; the whole worker is killed with SIGKILL inside a round's write transaction.  The
script reports per scenario what the clients saw and what the database holds; here the contract:

1. broker down: exports answer 503 (JSON) and leave no job queued; labels are accepted and the round
   they trigger is failed with the reason, not left queued; after the broker returns, exports and
   rounds run again;
2. channel layer down: no request fails (pushes are best effort after commit), the WebSocket
   handshake is refused without a 500, the round completes; pushes arrive again afterwards;
3. worker killed: the round is re-run by the sweeper (heartbeat lost) in a new worker and done;
   no label lost, nothing stuck.
The timings (shortened liveness settings) are in docs/outages.md.
"""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import PG_ADMIN_URL, need, postgres_available, redis_server_binary

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.celery
def test_broker_layer_and_worker_outages_leave_nothing_stuck_and_lose_no_label(tmp_path):
    pytest.importorskip("websockets")
    ok, why = postgres_available()
    need(ok, why)
    need(redis_server_binary(), "redis-server is not installed")
    out = subprocess.run([sys.executable, "bench/faults.py", "--pg-url", PG_ADMIN_URL, "--items", "160",
                          "--json", str(tmp_path / "faults.json"), "--workdir", str(tmp_path / "work")],
                         cwd=ROOT, capture_output=True, text=True, timeout=280)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-4000:]
    broker, layer, worker = json.loads((tmp_path / "faults.json").read_text())
    for r in (broker, layer, worker):
        assert r["stuck"] == 0 and r["labels_lost"] == 0 and not r["unexpected_errors"], r
        assert r["labels_acknowledged"] >= 10, r  # the scenario did real work

    assert broker["exports_during_outage"] == [503, 503, 503]
    assert "broker" in broker["export_error"] and "nothing was queued" in broker["export_error"]
    assert broker["errors"] == {"503": 3}  # labels were all accepted while the broker was down
    assert broker["round_during_outage"] == "failed" and broker["rows_left_queued_during_outage"] == 0

    assert layer["errors"] == {}
    assert layer["handshake_during_outage"].startswith("refused") and "500" not in layer["handshake_during_outage"]
    assert layer["round_during_outage"] == "done" and layer["push_after_recovery"] == "queue.updated"

    assert worker["round_after"] == "done" and worker["round_attempts"] == 2
    assert worker["recover_s"] < 60, worker
