"""Fault injection on the real stack: the outages of issue 12, rows 1-3, one after another.

    python bench/faults.py [--json out.json]

Starts a production-like stack in subprocesses: a fresh PostgreSQL database, two private
``redis-server`` processes (the Celery broker and the Channels layer, so each can fail alone),
``daphne config.asgi:application`` and a separate ``celery -A config worker -Q gpu,cpu``, with the
digits demo project.  Then, one after another:

1. **broker** — the broker Redis is killed (SIGKILL); annotators keep labeling until the refill policy
   asks for a round, and an admin asks for an export; the broker comes back.
2. **layer** — the channel-layer Redis is killed; a browser opens its WebSocket, annotators lease and
   label until a round runs in the worker; the layer comes back.
3. **worker** — the whole worker (its process group) is killed with SIGKILL inside a round's write
   transaction (a row lock held by this script stops the round there); a new worker starts, as a
   supervisor would restart it.

Per scenario it prints: requests answered, errors by status (each marked expected or not), rows left
stuck (rounds/jobs still queued or running once things settle), labels lost (acknowledged labels
missing from the database) and the time to recover (service back, or worker killed, until the next
round is done and, for the broker, an export done; for the layer, a push received).

Liveness settings are shortened so the run takes about two minutes (``--lost-after`` etc.); with the
defaults (heartbeat 10 s, lost after 60 s, sweep every 15 s) scenario 3 recovered in 67 s.
Loopback only.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import psycopg  # noqa: E402
import websockets  # noqa: E402

from tests.support import LoupeServer, RedisServer, wait_for  # noqa: E402

PROJECT = 1


class Run:
    """The stack plus the bookkeeping of one scenario (requests, statuses, acknowledged labels)."""

    def __init__(self, args):
        self.args = args
        self.work = Path(args.workdir or tempfile.mkdtemp(prefix="loupe-faults-"))
        self.db_name = f"loupe_faults_{secrets.token_hex(4)}"
        with psycopg.connect(args.pg_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{self.db_name}"')
        self.db_url = urlsplit(args.pg_url)._replace(path=f"/{self.db_name}").geturl()
        self.broker = RedisServer(self.work / "redis-broker").start()
        self.layer = RedisServer(self.work / "redis-layer").start()
        env = {
            "DATABASE_URL": self.db_url, "CELERY_BROKER_URL": self.broker.url, "REDIS_URL": self.layer.url,
            "LOUPE_HEARTBEAT_SECONDS": str(args.heartbeat), "LOUPE_LOST_AFTER_SECONDS": str(args.lost_after),
            "LOUPE_SWEEP_SECONDS": str(args.sweep), "LOUPE_RETRY_AFTER_FAILURE_SECONDS": "2",
            "CELERY_VISIBILITY_TIMEOUT": "3600",
        }
        self.srv = LoupeServer(self.work / "var", env)
        (self.work / "var").mkdir(parents=True, exist_ok=True)
        self.srv.setup_demo(limit=args.items, batch_size=20, refill_threshold=10)
        self.token = self.srv.token("admin")
        self.worker = self.srv.start_worker()
        self.srv.start_daphne()
        self.wait(lambda: self.round_status() == "done", 120, "round 1")
        self.reset()

    # ------------------------------------------------------------------ bookkeeping
    def reset(self) -> None:
        self.statuses: Counter = Counter()
        self.acked: set[str] = set()

    def api(self, path: str, body=None) -> tuple[int, dict]:
        code, data = self.srv.api(self.token, path, body)
        self.statuses[code] += 1
        return code, data

    def sql(self, query: str, params=()) -> list[tuple]:
        with psycopg.connect(self.db_url, autocommit=True) as conn:
            return conn.execute(query, params).fetchall()

    def round_status(self, number: int | None = None) -> str | None:
        rows = self.sql("SELECT status FROM annotate_round WHERE project_id = %s"
                        + (" AND number = %s" if number else "") + " ORDER BY number DESC LIMIT 1",
                        (PROJECT, number) if number else (PROJECT,))
        return rows[0][0] if rows else None

    def last_round(self) -> tuple[int, str, int]:
        return self.sql("SELECT number, status, attempts FROM annotate_round WHERE project_id = %s "
                        "ORDER BY number DESC LIMIT 1", (PROJECT,))[0]

    def active_rows(self) -> int:
        return sum(self.sql(f"SELECT count(*) FROM annotate_{t} WHERE status IN ('queued', 'running')")[0][0]
                   for t in ("round", "job"))

    def label_one(self) -> int:
        """Lease one item and label it; returns the label's HTTP status (0: nothing to lease)."""
        code, body = self.api(f"/api/projects/{PROJECT}/lease", {"n": 1})
        if code != 200 or not body.get("items"):
            return 0
        cid = str(uuid.uuid4())
        code, _ = self.api(f"/api/projects/{PROJECT}/label",
                           {"item_id": body["items"][0]["item_id"], "label": "7", "client_id": cid})
        if 200 <= code < 300:
            self.acked.add(cid)
        return code

    def label_until_round_requested(self, limit: int = 40) -> int:
        before = self.last_round()[0]
        for _ in range(limit):
            self.label_one()
            if self.last_round()[0] > before:
                return self.last_round()[0]
        raise RuntimeError("no round was requested")

    def labels_lost(self) -> int:
        if not self.acked:
            return 0
        found = self.sql("SELECT count(*) FROM annotate_annotation WHERE client_id = ANY(%s::uuid[])",
                         (list(self.acked),))[0][0]
        return len(self.acked) - found

    def settle(self, timeout: float) -> int:
        """Wait until no round or job is queued or running; returns how many still are (stuck)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end and self.active_rows():
            time.sleep(0.25)
        return self.active_rows()

    @staticmethod
    def wait(pred, timeout: float, what: str, interval: float = 0.25):
        return wait_for(pred, timeout, what, interval)

    def ws_try(self, wait_push_s: float = 0.0) -> str:
        """Open the project's WebSocket; 'open', 'push' (a push arrived within wait_push_s) or why it failed."""
        async def go() -> str:
            headers = {"Authorization": f"Token {self.token}", "Origin": self.srv.url}
            try:
                async with websockets.connect(f"{self.srv.ws_url}/ws/projects/{PROJECT}/",
                                              additional_headers=headers, open_timeout=10) as ws:
                    if not wait_push_s:
                        return "open"
                    raw = await asyncio.wait_for(ws.recv(), wait_push_s)
                    return "push:" + json.loads(raw)["type"]
            except websockets.exceptions.InvalidStatus as exc:
                return f"refused: HTTP {exc.response.status_code}"
            except websockets.exceptions.ConnectionClosed as exc:
                return f"closed: {exc.rcvd.code if exc.rcvd else 'no code'}"
            except (TimeoutError, asyncio.TimeoutError):
                return "open, no push"

        return asyncio.run(go())

    def result(self, name: str, expected: dict[int, str], recover_s: float, extra: dict) -> dict:
        stuck = self.settle(self.args.settle)
        errors = {code: n for code, n in self.statuses.items() if not 200 <= code < 300}
        return {"scenario": name, "requests": sum(self.statuses.values()), "errors": errors,
                "unexpected_errors": {c: n for c, n in errors.items() if c not in expected},
                "expected": {str(c): why for c, why in expected.items() if c in errors},
                "stuck": stuck, "labels_acknowledged": len(self.acked), "labels_lost": self.labels_lost(),
                "recover_s": round(recover_s, 1), **extra}

    def down(self) -> None:
        self.srv.stop()
        self.broker.kill()
        self.layer.kill()
        with psycopg.connect(self.args.pg_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.db_name}" WITH (FORCE)')
        if not self.args.workdir:
            shutil.rmtree(self.work, ignore_errors=True)


# =========================================================================== scenarios
def scenario_broker(run: Run) -> dict:
    run.reset()
    run.broker.kill()
    exports = [run.api(f"/api/projects/{PROJECT}/exports", {"format": "csv"}) for _ in range(3)]
    number = run.label_until_round_requested()
    for _ in range(5):
        run.label_one()
    left_queued = run.active_rows()
    outage_round = run.round_status(number)
    run.broker.start()
    t0 = time.monotonic()
    job = run.wait(lambda: (r := run.api(f"/api/projects/{PROJECT}/exports", {"format": "csv"}))[0] == 202
                   and r[1], 60, "an accepted export", interval=0.5)
    run.wait(lambda: run.api(f"/api/jobs/{job['id']}")[1].get("status") == "done", 60, "the export job")

    def next_round_done():
        run.label_one()
        n, status, _ = run.last_round()
        return n > number and status == "done"

    run.wait(next_round_done, 90, "a round after the outage", interval=0.5)
    return run.result("1. broker down", {503: "export refused while the broker is down"},
                      time.monotonic() - t0,
                      {"exports_during_outage": [c for c, _ in exports], "export_error": exports[0][1].get("error"),
                       "round_during_outage": outage_round,
                       "rows_left_queued_during_outage": left_queued})


def scenario_layer(run: Run) -> dict:
    run.reset()
    run.layer.kill()
    handshake = run.ws_try()
    number = run.label_until_round_requested()
    run.wait(lambda: run.round_status(number) in ("done", "failed"), 60, "the round during the outage")
    outage_round = run.round_status(number)
    run.layer.start()
    t0 = time.monotonic()
    run.wait(lambda: run.ws_try() == "open", 60, "a WebSocket after the outage", interval=0.5)

    async def push_after_label() -> str:
        headers = {"Authorization": f"Token {run.token}", "Origin": run.srv.url}
        async with websockets.connect(f"{run.srv.ws_url}/ws/projects/{PROJECT}/", additional_headers=headers) as ws:
            await asyncio.to_thread(run.label_until_round_requested)
            while True:
                msg = json.loads(await asyncio.wait_for(ws.recv(), 60))
                if msg["type"] == "queue.updated":
                    return "queue.updated"

    pushed = asyncio.run(push_after_label())
    return run.result("2. channel layer down", {}, time.monotonic() - t0,
                      {"handshake_during_outage": handshake, "round_during_outage": outage_round,
                       "push_after_recovery": pushed})


def scenario_worker(run: Run) -> dict:
    run.reset()
    lock = psycopg.connect(run.db_url, autocommit=False)
    held = lock.execute("SELECT id FROM annotate_queueentry WHERE project_id = %s AND state = 'pending' "
                        "ORDER BY id LIMIT 1 FOR UPDATE", (PROJECT,)).fetchone()
    number = run.label_until_round_requested()

    def blocked_write():
        return run.sql("SELECT pid FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock' "
                       "AND query LIKE 'UPDATE \"annotate_queueentry\"%%'", (run.db_name,))

    run.wait(blocked_write, 60, "the round's write to block on the held row")
    os.killpg(run.worker.p.pid, signal.SIGKILL)  # the whole worker: main process and pool at once
    run.worker.p.wait(10)
    t0 = time.monotonic()
    lock.rollback()
    lock.close()
    run.worker = run.srv.start_worker()  # the supervisor restarts it
    answered = 0
    while run.round_status(number) != "done" and time.monotonic() - t0 < 120:
        answered += run.label_one() > 0
        time.sleep(0.5)
    recover = time.monotonic() - t0
    attempts = run.sql("SELECT attempts FROM annotate_round WHERE project_id = %s AND number = %s",
                       (PROJECT, number))[0][0]
    return run.result("3. worker killed (SIGKILL)", {}, recover,
                      {"held_entry": held[0] if held else None, "round_after": run.round_status(number),
                       "round_attempts": attempts, "labels_during_recovery": answered})


def table(results: list[dict]) -> str:
    lines = ["| scenario | requests answered | errors by status | rows stuck | labels lost | time to recover |",
             "| --- | ---: | --- | ---: | ---: | ---: |"]
    for r in results:
        errs = ", ".join(f"{c}×{n}" + (" (expected)" if str(c) in r["expected"] else " (UNEXPECTED)")
                         for c, n in sorted(r["errors"].items())) or "none"
        lines.append(f"| {r['scenario']} | {r['requests']} | {errs} | {r['stuck']} | "
                     f"{r['labels_lost']} of {r['labels_acknowledged']} | {r['recover_s']} s |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pg-url", default=os.environ.get("LOUPE_TEST_POSTGRES_URL",
                                                      "postgres://postgres@127.0.0.1:5432/postgres"))
    p.add_argument("--items", type=int, default=200, help="digits in the demo project")
    p.add_argument("--heartbeat", type=int, default=1, help="LOUPE_HEARTBEAT_SECONDS")
    p.add_argument("--lost-after", type=int, default=5, help="LOUPE_LOST_AFTER_SECONDS")
    p.add_argument("--sweep", type=int, default=1, help="LOUPE_SWEEP_SECONDS")
    p.add_argument("--settle", type=float, default=60, help="seconds to wait for active rows to finish")
    p.add_argument("--only", choices=["broker", "layer", "worker"], action="append")
    p.add_argument("--workdir", default="")
    p.add_argument("--json", default="", help="also write the results here")
    args = p.parse_args(argv)
    run = Run(args)
    results = []
    try:
        for name, fn in (("broker", scenario_broker), ("layer", scenario_layer), ("worker", scenario_worker)):
            if not args.only or name in args.only:
                results.append(fn(run))
                print(f"{results[-1]['scenario']}: {json.dumps(results[-1])}", flush=True)
    finally:
        run.down()
    print()
    print(f"liveness: heartbeat {args.heartbeat} s, lost after {args.lost_after} s, sweep every {args.sweep} s")
    print(table(results))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))
    bad = [r for r in results if r["stuck"] or r["labels_lost"] or r["unexpected_errors"]]
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
