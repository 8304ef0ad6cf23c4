"""Production wiring: PostgreSQL + Redis (broker and channel layer) + `uvicorn config.asgi:application` (as compose)
+ a separate `celery -A config worker -Q gpu,cpu` process.  Labels posted over HTTP make the worker
run a round; the new queue is in the database and the worker's push arrives over a real WebSocket."""
import secrets

import pytest

from tests.support import label_until_next_round_is_pushed, wait_for

pytestmark = [pytest.mark.postgres, pytest.mark.redis, pytest.mark.celery, pytest.mark.slow]

BATCH, THRESHOLD = 12, 6
IDLE_S = 8


def test_labels_over_http_trigger_a_worker_round_whose_push_reaches_the_websocket(pg_database, redis_url,
                                                                                  start_server):
    pytest.importorskip("websockets")
    import psycopg

    db_url = pg_database()
    env = {"DATABASE_URL": db_url, "CELERY_BROKER_URL": redis_url, "REDIS_URL": redis_url,
           "LOUPE_CHANNEL_PREFIX": f"loupe-test-{secrets.token_hex(4)}"}
    srv = start_server(env=env, demo=dict(limit=200, batch_size=BATCH, refill_threshold=THRESHOLD), worker=True,
                       uvicorn=True)
    token = srv.token("admin")
    pid = 1

    def status():
        code, body = srv.api(token, f"/api/projects/{pid}/status")
        assert code == 200, body
        return body["progress"]

    # The first round was enqueued by loupe_demo after commit and runs in the worker process.
    first = wait_for(lambda: (p := status())["round"] and p["round"]["status"] == "done" and p, 90, "round 1")
    assert first["pending"] == BATCH

    # Stay idle longer than channels_redis' 5 s BZPOPMIN first: the consumer must survive an idle socket
    # (redis-py 8 defaults socket_timeout to 5 s, which once killed idle consumers).
    labeled, messages = label_until_next_round_is_pushed(srv, token, pid, max_labels=BATCH, idle_s=IDLE_S)
    pushed = [m for m in messages if m["type"] == "queue.updated"]
    assert pushed, f"no queue.updated arrived; got {[m['type'] for m in messages]}"
    assert pushed[0]["round"] == 2 and pushed[0]["added"] == BATCH
    statuses = [m["round"]["status"] for m in messages if m["type"] == "round.status"]
    assert "running" in statuses and statuses[-1] == "done"
    latency = pushed[0]["_received_ms"] - pushed[0]["sent_at"]
    print(f"push latency worker -> Redis -> Daphne -> WebSocket: {latency:.1f} ms")
    assert latency < 5000

    # The new queue is in PostgreSQL, written by the worker with the new model's predictions.
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT e.state, e.predicted_label, e.predicted_confidence, r.status, r.labeled_count "
            "FROM annotate_queueentry e JOIN annotate_round r ON r.id = e.round_id WHERE r.number = 2").fetchall()
    assert len(rows) == BATCH
    assert {r[3] for r in rows} == {"done"} and rows[0][4] == labeled
    assert all(r[1] in [str(d) for d in range(10)] and 0 < r[2] <= 1 for r in rows)
    assert "round_run" in srv.procs[0].log()  # it ran in the worker process, not in the web process
