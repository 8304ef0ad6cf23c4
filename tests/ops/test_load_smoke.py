"""A short run of the load benchmark (bench/loadtest.py) as a test: the invariants, not the timings.

Ten simulated annotators for a few seconds over HTTP + WebSocket against Uvicorn, PostgreSQL, the
Redis channel layer and broker, and a Celery worker, all in their own processes.  Afterwards the
database must hold every acknowledged label exactly once, nothing else, no item labeled by two
annotators or open twice, and no item handed to two annotators.  The 2-minute, 50-annotator run
and its latency figures are in docs/bench-load.md.
"""
from __future__ import annotations

import json
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

from tests.ops.ops_support import need_service, redis_db_url
from tests.support import PG_ADMIN_URL, need, postgres_available

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.postgres
@pytest.mark.redis
@pytest.mark.celery
def test_ten_annotators_for_a_few_seconds_lose_and_duplicate_nothing(tmp_path):
    ok, why = postgres_available()
    need(ok, why)
    need_service("Redis", "127.0.0.1", 6379)
    pg = PG_ADMIN_URL.rsplit("/", 1)[0]
    db = f"loupe_smoke_{secrets.token_hex(4)}"
    out = subprocess.run(
        [sys.executable, "bench/loadtest.py", "run", "--annotators", "10", "--duration", "8", "--items", "600",
         "--batch-size", "60", "--refill-threshold", "40", "--think-min", "0.05", "--think-max", "0.3",
         "--warmup", "1", "--pg-url", pg, "--db-name", db, "--drop-db",
         "--redis-url", redis_db_url(), "--broker-url", redis_db_url(), "--workdir", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    counts = json.loads((tmp_path / "count.json").read_text())
    log = json.loads((tmp_path / "generate.json").read_text())
    assert counts["acked"] > 20, counts  # the run did real work
    # Every stored label is one the clients sent: acknowledged, or sent but never answered.
    assert counts["stored_labels"] == counts["acked"] + counts["unacked_stored"]
    for key in ("lost", "mismatched", "unexpected", "duplicate_client_ids", "duplicate_item_annotator",
                "items_labeled_by_two", "items_open_twice", "items_granted_to_two"):
        assert counts[key] == 0, (key, counts)
    assert log["ws_connected"] == 10, log["ws_errors"]
    # The report ends with the targets and the CPU per label of each process (docs/bench-load.md).
    report = (tmp_path / "report.md").read_text()
    assert "target (issue 14)" in report and "CPU ms per stored label" in report
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["server"] == "uvicorn" and summary["labels"] == counts["stored_labels"]
    assert summary["cpu_ms_per_label"]["web server"] > 0
    assert summary["offered_per_s"] > 0 and summary["labels_per_s"] > 0
    assert not [e for e in log["errors"] if "status 5" in e], log["errors"][:5]

