"""Load test: simulated annotators against Daphne + PostgreSQL + Redis + a Celery worker.

    python bench/loadtest.py run --annotators 50 --duration 120

``run`` does everything, each part in its own process:

1. creates a fresh PostgreSQL database (``--db-name``, dropped first) and migrates it;
2. ``setup`` (a child process with Django): a project of ``--items`` small images (sklearn's
   digits, shifted and noised so there are many distinct ones) with 64-d embeddings, one user,
   membership and session per annotator, and round 1 run synchronously so there is a queue;
3. starts Daphne (production settings, Redis channel layer and broker) and a
   ``celery -A config worker`` on the gpu + cpu queues;
4. ``generate`` (a separate process, no Django): ``--annotators`` asyncio clients on loopback,
   each with a keep-alive HTTP connection and a WebSocket to the project's group.  Each one
   leases items, fetches each image, "thinks" for a random time, and submits a label with a
   fresh ``client_id``; a submit that times out is retried with the same ``client_id``;
5. ``count`` (a child process with Django) reads the database afterwards and checks: every
   submit the clients saw acknowledged is stored exactly once, nothing else is stored, no item
   has labels from two annotators, no item is in the open queue twice; and no item was handed
   to two annotators (from the clients' lease log);
6. prints the tables (latency percentiles, throughput, rounds, invariants) and writes JSON.

Loopback only: every address is 127.0.0.1.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import socket
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
PROJECT_NAME = "Load test"
CLASSES = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"]


# =========================================================================== shared helpers
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolated percentile (numpy's default), q in [0, 100]."""
    if not values:
        return float("nan")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def django_env(args) -> dict[str, str]:
    """Environment of every server-side process: production settings on loopback."""
    env = dict(os.environ)
    env.update(
        DJANGO_SETTINGS_MODULE=args.settings,
        LOUPE_PRODUCTION="1",
        SECRET_KEY="loadtest-" + "k" * 50,
        SESSION_COOKIE_SECURE="0",  # plain HTTP on loopback
        CSRF_COOKIE_SECURE="0",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DATABASE_URL=f"{args.pg_url.rstrip('/')}/{args.db_name}",
        CELERY_BROKER_URL=args.broker_url,
        REDIS_URL=args.redis_url,
        LOUPE_CHANNEL_PREFIX=f"loupe-load-{os.getpid()}",
        MEDIA_ROOT=str(Path(args.workdir) / "media"),
        LOUPE_VAR_DIR=str(Path(args.workdir) / "var"),
        LOG_LEVEL="WARNING",
        PYTHONPATH=str(ROOT),
    )
    return env


def django_setup() -> None:
    sys.path.insert(0, str(ROOT))
    import django  # noqa: PLC0415

    django.setup()


# =========================================================================== setup (Django)
def logged_in_session(user) -> str:
    """The key of a session logged in as ``user``, as the login form would leave it (PBKDF2 logins are not
    what we measure).  Django must be set up."""
    from django.conf import settings  # noqa: PLC0415
    from django.contrib.sessions.backends.db import SessionStore  # noqa: PLC0415

    session = SessionStore()
    session["_auth_user_id"] = str(user.pk)
    session["_auth_user_backend"] = settings.AUTHENTICATION_BACKENDS[0]
    session["_auth_user_hash"] = user.get_session_auth_hash()
    session.create()
    return session.session_key


def cmd_setup(args) -> None:
    django_setup()
    import hashlib  # noqa: PLC0415
    import io  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415
    from django.conf import settings  # noqa: PLC0415
    from django.contrib.auth import get_user_model  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415
    from sklearn.datasets import load_digits  # noqa: PLC0415

    from annotate import storage  # noqa: PLC0415
    from annotate.models import Item, Membership, Project  # noqa: PLC0415
    from annotate.services.item_counts import item_counts_add  # noqa: PLC0415
    from annotate.services.rounds import round_execute, round_request  # noqa: PLC0415

    rng = np.random.default_rng(args.seed)
    digits = load_digits()
    n = args.items
    src = rng.integers(0, len(digits.images), size=n)
    imgs = digits.images[src].copy()
    # Distinct images: a random one-pixel shift and a little noise on each copy.
    for k in range(n):
        dy, dx = rng.integers(-1, 2, size=2)
        imgs[k] = np.roll(np.roll(imgs[k], dy, axis=0), dx, axis=1)
    imgs = np.clip(imgs + rng.normal(0, 0.8, imgs.shape), 0, 16)
    truth = [CLASSES[(int(t) - 1) % 10] for t in digits.target[src]]  # "1".."9","0"

    project = Project.objects.create(
        name=f"{PROJECT_NAME} {uuid.uuid4().hex[:6]}", classes=CLASSES, strategy=args.strategy,
        batch_size=args.batch_size, refill_threshold=args.refill_threshold, audit_rate=0.1,
        extractor="pixels", embedding_version=1, embedding_dim=64,
    )
    img_dir = storage.images_dir(project)
    img_dir.mkdir(parents=True, exist_ok=True)
    items = []
    for k in range(n):
        gray = (255 - imgs[k] * (255 / 16)).round().astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(gray, mode="L").resize((64, 64), Image.Resampling.NEAREST).save(buf, format="PNG")
        data = buf.getvalue()
        name = f"{k:06d}.png"
        (img_dir / name).write_bytes(data)
        items.append(Item(project=project, file=str((img_dir / name).relative_to(settings.MEDIA_ROOT)),
                          original_name=name, checksum=hashlib.sha256(data).hexdigest(), row=k,
                          width=64, height=64, ground_truth=truth[k]))
    Item.objects.bulk_create(items, batch_size=1000)
    item_counts_add(project_id=project.pk, items=len(items), embedded=len(items))
    X = imgs.reshape(n, -1)
    X = ((X - X.mean(0)) / np.where(X.std(0) > 0, X.std(0), 1)).astype(np.float32)
    rel = storage.embedding_relpath(project, "pixels", 1)
    path = storage.media_path(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, X)
    project.embedding_file = rel
    project.save(update_fields=["embedding_file"])

    User = get_user_model()
    users = []
    for i in range(args.annotators):
        user = User.objects.create_user(f"load{i:03d}-{project.pk}", password=None)
        Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
        users.append({"id": user.pk, "username": user.username, "session": logged_in_session(user)})

    # Round 1 now (this process has the memory broker, so the enqueued task goes nowhere).
    rnd = round_request(project=project, reason="loadtest-setup")
    round_execute(round_id=rnd.pk)
    # Planner statistics for the freshly loaded tables.  Production PostgreSQL gathers them by
    # autovacuum; this machine's server runs with autovacuum off, and without statistics the
    # progress counts pick a nested loop over all 10,000 items (13 ms instead of 3 ms per query).
    from django.db import connection  # noqa: PLC0415

    if connection.vendor == "postgresql":
        with connection.cursor() as cur:
            cur.execute("ANALYZE")
    out = {"project_id": project.pk, "classes": CLASSES, "users": users,
           "truth": {str(it.pk): it.ground_truth
                     for it in Item.objects.filter(project=project).only("id", "ground_truth")}}
    Path(args.out).write_text(json.dumps(out))
    print(f"setup: project {project.pk}, {n} items, {len(users)} annotators, round 1 queued {rnd.batch_size}")


# =========================================================================== generate (no Django)
class Http:
    """A minimal HTTP/1.1 keep-alive client on one connection (what one browser tab holds)."""

    def __init__(self, host: str, port: int, cookies: dict[str, str]):
        self.host, self.port, self.cookies = host, port, cookies
        self.reader = self.writer = None

    async def _connect(self):
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)

    async def close(self):
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.writer = None

    async def request(self, method: str, path: str, body: dict | None = None, headers: dict | None = None):
        if self.writer is None:
            await self._connect()
        payload = b"" if body is None else json.dumps(body).encode()
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.host}:{self.port}",
                "Cookie: " + "; ".join(f"{k}={v}" for k, v in self.cookies.items()),
                f"Content-Length: {len(payload)}", "Connection: keep-alive"]
        if body is not None:
            head.append("Content-Type: application/json")
        for k, v in (headers or {}).items():
            head.append(f"{k}: {v}")
        self.writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        await self.writer.drain()
        status_line = await self.reader.readline()
        if not status_line:
            await self.close()
            raise ConnectionError("server closed the connection")
        status = int(status_line.split()[1])
        length, close = 0, False
        chunked = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip()
            if name == "content-length":
                length = int(value)
            elif name == "connection" and value.lower() == "close":
                close = True
            elif name == "transfer-encoding" and "chunked" in value.lower():
                chunked = True
        if chunked:
            data = b""
            while True:
                size = int((await self.reader.readline()).strip() or b"0", 16)
                if size == 0:
                    await self.reader.readline()
                    break
                data += await self.reader.readexactly(size)
                await self.reader.readline()
        else:
            data = await self.reader.readexactly(length) if length else b""
        if close:
            await self.close()
        return status, data


async def annotator(idx: int, user: dict, cfg: dict, log: dict, stop_at: float, t0: float):
    rnd = random.Random(cfg["seed"] * 1000 + idx)
    csrf = uuid.uuid4().hex  # 32 characters: a valid CSRF secret, sent as cookie and header
    cookies = {"sessionid": user["session"], "csrftoken": csrf}
    http = Http(cfg["host"], cfg["port"], cookies)
    pid = cfg["project_id"]
    ws_msgs: Counter = Counter()
    ws_task = None
    try:
        import websockets  # noqa: PLC0415

        ws = await websockets.connect(
            f"ws://{cfg['host']}:{cfg['port']}/ws/projects/{pid}/",
            additional_headers={"Cookie": f"sessionid={user['session']}",
                                "Origin": f"http://{cfg['host']}:{cfg['port']}"},
            open_timeout=10,
        )

        async def read_ws():
            try:
                async for raw in ws:
                    try:
                        ws_msgs[json.loads(raw).get("type", "?")] += 1
                    except ValueError:
                        ws_msgs["bad-json"] += 1
            except Exception as exc:  # noqa: BLE001 - closed by the server or a keepalive timeout
                ws_msgs[f"closed: {type(exc).__name__} {getattr(exc, 'rcvd', None) or ''}".strip()] += 1

        ws_task = asyncio.create_task(read_ws())
        log["ws_connected"] += 1
    except Exception as exc:  # noqa: BLE001 - recorded and reported, the HTTP part goes on
        log["ws_errors"].append(f"{type(exc).__name__}: {exc}")
        ws = None

    post_headers = {"X-CSRFToken": csrf}
    local: list[dict] = []
    held: set[int] = set()
    while time.monotonic() < stop_at:
        if len(local) < 2:
            t = time.monotonic()
            try:
                status, body = await asyncio.wait_for(
                    http.request("POST", f"/api/projects/{pid}/lease", {"n": cfg["lease_n"]}, post_headers), 10)
            except (asyncio.TimeoutError, OSError, ConnectionError) as exc:
                log["errors"].append(f"lease: {type(exc).__name__}")
                await http.close()
                await asyncio.sleep(0.5)
                continue
            log["lease_ms"].append((time.monotonic() - t) * 1000)
            if status != 200:
                log["errors"].append(f"lease status {status}: {body[:200]!r}")
                await asyncio.sleep(0.5)
                continue
            got = json.loads(body)["items"]
            for it in got:
                if it["item_id"] not in held:
                    held.add(it["item_id"])
                    local.append(it)
                    log["grants"].append((it["item_id"], user["id"], time.monotonic() - t0))
            if not local:
                log["empty_leases"] += 1
                await asyncio.sleep(0.5)
                continue
        it = local.pop(0)
        t = time.monotonic()
        try:
            status, body = await asyncio.wait_for(http.request("GET", it["image_url"]), 10)
            log["image_ms"].append((time.monotonic() - t) * 1000)
            if status != 200:
                log["errors"].append(f"image status {status}")
        except (asyncio.TimeoutError, OSError, ConnectionError) as exc:
            log["errors"].append(f"image: {type(exc).__name__}")
            await http.close()
        await asyncio.sleep(rnd.uniform(cfg["think_min"], cfg["think_max"]))
        truth = cfg["truth"].get(str(it["item_id"]))
        label = truth if (truth and rnd.random() < 0.9) else rnd.choice(cfg["classes"])
        client_id = str(uuid.uuid4())
        body_json = {"item_id": it["item_id"], "label": label, "client_id": client_id, "time_ms": 900}
        log["offered_at"].append(time.monotonic() - t0)  # a label offered (first attempt), answered or not
        for attempt in range(4):
            t = time.monotonic()
            try:
                status, body = await asyncio.wait_for(
                    http.request("POST", f"/api/projects/{pid}/label", body_json, post_headers), cfg["submit_timeout"])
            except (asyncio.TimeoutError, OSError, ConnectionError) as exc:
                # What a page does after a timeout: retry with the same client_id (stored once).
                log["submit_retries"] += 1
                log["errors"].append(f"submit attempt {attempt}: {type(exc).__name__}")
                await http.close()
                continue
            ms = (time.monotonic() - t) * 1000
            log["submit_ms"].append(ms)
            log["submit_at"].append(time.monotonic() - t0)
            if status in (200, 201):
                ann = json.loads(body)["annotation"]
                log["acked"].append({"client_id": client_id, "item_id": it["item_id"], "user": user["id"],
                                     "label": label, "id": ann["id"], "created": status == 201})
            else:
                log["errors"].append(f"submit status {status}: {body[:200]!r}")
                log["refused"].append({"client_id": client_id, "item_id": it["item_id"], "status": status})
            break
        else:
            log["unacked"].append({"client_id": client_id, "item_id": it["item_id"], "user": user["id"]})
        held.discard(it["item_id"])
    await http.close()
    if ws is not None:
        await ws.close()
    if ws_task is not None:
        await asyncio.gather(ws_task, return_exceptions=True)
    for k, v in ws_msgs.items():
        log["ws_messages"][k] += v


async def generate_async(cfg: dict) -> dict:
    log = {"lease_ms": [], "image_ms": [], "submit_ms": [], "submit_at": [], "offered_at": [], "acked": [],
           "refused": [],
           "unacked": [], "grants": [], "errors": [], "ws_errors": [], "ws_messages": Counter(),
           "ws_connected": 0, "empty_leases": 0, "submit_retries": 0}
    t0 = time.monotonic()
    stop_at = t0 + cfg["duration"]
    users = cfg["users"][: cfg["annotators"]]
    # Annotators arrive over the first two seconds rather than all in one instant.
    tasks = []
    for i, u in enumerate(users):
        tasks.append(asyncio.create_task(annotator(i, u, cfg, log, stop_at, t0)))
        await asyncio.sleep(2.0 / max(len(users), 1))
    await asyncio.gather(*tasks)
    log["elapsed_s"] = time.monotonic() - t0
    import resource  # noqa: PLC0415

    ru = resource.getrusage(resource.RUSAGE_SELF)
    log["cpu_s"] = round(ru.ru_utime + ru.ru_stime, 1)
    log["ws_messages"] = dict(log["ws_messages"])
    return log


def cmd_generate(args) -> None:
    setup = json.loads(Path(args.setup).read_text())
    cfg = {**setup, "host": "127.0.0.1", "port": args.port, "duration": args.duration, "annotators": args.annotators,
           "think_min": args.think_min, "think_max": args.think_max, "lease_n": args.lease_n,
           "submit_timeout": args.submit_timeout, "seed": args.seed}
    log = asyncio.run(generate_async(cfg))
    Path(args.out).write_text(json.dumps(log))
    print(f"generate: {len(log['acked'])} labels acknowledged in {log['elapsed_s']:.1f} s")


# =========================================================================== count (Django)
def cmd_count(args) -> None:
    django_setup()
    from django.db.models import Count  # noqa: PLC0415

    from annotate.models import Annotation, QueueEntry, Round  # noqa: PLC0415

    setup = json.loads(Path(args.setup).read_text())
    log = json.loads(Path(args.log).read_text())
    pid = setup["project_id"]
    rows = Annotation.objects.filter(item__project_id=pid, action=Annotation.Action.LABEL)
    stored = {str(c): (item, user, label) for c, item, user, label in
              rows.values_list("client_id", "item_id", "annotator_id", "label")}
    acked = {a["client_id"]: a for a in log["acked"]}
    unacked = {a["client_id"] for a in log["unacked"]}
    lost = [c for c in acked if c not in stored]
    mismatched = [c for c, a in acked.items() if c in stored and stored[c] != (a["item_id"], a["user"], a["label"])]
    unexpected = [c for c in stored if c not in acked and c not in unacked]
    dup_client = rows.values("annotator_id", "client_id").annotate(n=Count("id")).filter(n__gt=1).count()
    dup_item_user = rows.values("item_id", "annotator_id").annotate(n=Count("id")).filter(n__gt=1).count()
    two_annotators = rows.values("item_id").annotate(n=Count("annotator_id", distinct=True)).filter(n__gt=1).count()
    open_twice = (QueueEntry.objects.filter(project_id=pid, state__in=QueueEntry.OPEN).values("item_id")
                  .annotate(n=Count("id")).filter(n__gt=1).count())
    holders = defaultdict(set)
    for item_id, user_id, _t in log["grants"]:
        holders[item_id].add(user_id)
    granted_twice = sum(1 for s in holders.values() if len(s) > 1)
    rounds = list(Round.objects.filter(project_id=pid).values_list("status", "timings"))
    out = {
        "stored_labels": len(stored), "acked": len(acked),
        "acked_replays": sum(1 for a in acked.values() if not a["created"]),
        "unacked": len(unacked), "unacked_stored": sum(1 for c in unacked if c in stored), "lost": len(lost),
        "mismatched": len(mismatched), "unexpected": len(unexpected),
        "duplicate_client_ids": dup_client, "duplicate_item_annotator": dup_item_user,
        "items_labeled_by_two": two_annotators, "items_open_twice": open_twice, "items_granted_to_two": granted_twice,
        "rounds": dict(Counter(s for s, _ in rounds)),
        "round_total_s": [t.get("total") for s, t in rounds if s == "done" and t.get("total") is not None],
    }
    Path(args.out).write_text(json.dumps(out))
    print(json.dumps(out))


# =========================================================================== run (orchestrator)
def server_commands(server: str, *, fd: int, port: int, processes: int) -> list[list[str]]:
    """The command line(s) of the ASGI server under test (``config.asgi:application``, Channels).

    Daphne: one process per ``processes``, all on the inherited listening socket ``fd``;
    Uvicorn and Granian: one process that binds ``port`` and runs ``processes`` workers.  Access logs off for all
    three (Daphne logs through Django's logging at WARNING here)."""
    app = "config.asgi:application"
    if server == "daphne":
        return [[PY, "-m", "daphne", "--fd", str(fd), app]] * processes
    if server == "uvicorn":
        # Uvicorn binds the port itself, as compose runs it: given ``--fd`` it wraps the socket as
        # AF_UNIX (uvicorn/server.py), so asyncio leaves Nagle on for the accepted TCP connections and
        # a response sent as head + body waits for the client's delayed ACK: +40 ms on every image.
        return [[PY, "-m", "uvicorn", "--host", "127.0.0.1", "--port", str(port), "--workers", str(processes),
                 "--loop", "uvloop", "--http", "httptools",
                 "--ws", "websockets-sansio", "--lifespan", "off", "--timeout-keep-alive", "30", "--no-access-log",
                 "--log-level", "warning", app]]
    if server == "granian":
        # asginl: ASGI without the lifespan protocol (Channels' router has no lifespan handler)
        return [[PY, "-m", "granian", "--interface", "asginl", "--host", "127.0.0.1", "--port", str(port),
                 "--workers", str(processes), "--loop", "uvloop", "--no-access-log", "--log-level", "warning", app]]
    raise ValueError(f"server={server!r} is not one of {SERVERS}")


SERVERS = ("daphne", "uvicorn", "granian")
BINDS_ITSELF = ("uvicorn", "granian")


def _wait_http(port: int, procs: list[subprocess.Popen], timeout: float = 60) -> None:
    import urllib.error  # noqa: PLC0415
    import urllib.request  # noqa: PLC0415

    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for proc in procs:
            if proc.poll() is not None:
                raise RuntimeError(f"the web server exited with {proc.returncode}")
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/accounts/login/", timeout=2).close()
            return
        except (urllib.error.URLError, OSError):
            time.sleep(0.3)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def _proc_cpu(pid: int) -> float:
    """CPU seconds (user + system) of a process and its children, from /proc."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += (int(fields[11]) + int(fields[12])) / tick
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            total += _proc_cpu(int(child))
    except (OSError, IndexError, ValueError):
        pass
    return total


def _cpu_by_name(names: tuple[str, ...]) -> float:
    total = 0.0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                comm = (d / "comm").read_text().strip()
            except OSError:
                continue
            if comm.startswith(names):
                total += _proc_cpu_self(int(d.name))
    return total


def _proc_cpu_self(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def _machine_busy() -> float:
    """CPU seconds the whole machine spent busy (all cores, everything but idle and iowait), from /proc/stat."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    except (OSError, ValueError, IndexError):
        return 0.0
    return (sum(fields[:8]) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _pg_backends_cpu(db_name: str) -> float:
    """CPU seconds of the PostgreSQL backends connected to ``db_name`` (their title is
    ``postgres: [<cluster>:] <user> <database> <client> <state>``): this run's, not the other databases' on a
    shared server.  Backends that exit between two snapshots are missed (the pool and the worker
    keep theirs for the whole run)."""
    total = 0.0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                title = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode("latin-1").split()
            except OSError:
                continue
            if title[:1] == ["postgres:"] and db_name in title[1:5]:
                total += _proc_cpu_self(int(d.name))
    return total


def _cpu_snapshot(daphnes, worker, db_name: str) -> dict[str, float]:
    return {"daphne": sum(_proc_cpu(p.pid) for p in daphnes), "worker": _proc_cpu(worker.pid),
            "postgres": _pg_backends_cpu(db_name), "redis": _cpu_by_name(("redis-server",)),
            "machine": _machine_busy()}


def _stop(proc: subprocess.Popen | None, timeout: float = 20) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _analyze_periodically(args):
    """Refresh the planner statistics of the tables the load grows, every ``--analyze-every`` s.

    Stands in for autovacuum's auto-analyze, which production PostgreSQL runs by default and this
    machine's shared server has switched off: without it the statistics stay those of the empty
    tables at setup, and the progress counts turn into sequential scans of the whole queue.
    Returns a function that stops the thread."""
    import threading  # noqa: PLC0415

    import psycopg  # noqa: PLC0415

    stop = threading.Event()
    if args.analyze_every <= 0:
        return stop.set

    def loop():
        while not stop.wait(args.analyze_every):
            try:
                with psycopg.connect(f"{args.pg_url.rstrip('/')}/{args.db_name}", autocommit=True) as c:
                    c.execute("ANALYZE annotate_annotation, annotate_queueentry, annotate_round")
            except psycopg.Error as exc:
                print(f"analyze: {exc}", file=sys.stderr)

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()

    def halt():
        stop.set()
        thread.join(timeout=30)

    return halt


def _create_db(args) -> None:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(f"{args.pg_url.rstrip('/')}/postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')
        c.execute(f'CREATE DATABASE "{args.db_name}"')


def _drop_db(args) -> None:
    import psycopg  # noqa: PLC0415

    with psycopg.connect(f"{args.pg_url.rstrip('/')}/postgres", autocommit=True) as c:
        c.execute(f'DROP DATABASE IF EXISTS "{args.db_name}" WITH (FORCE)')


def table(rows: list[tuple], head: tuple) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(head, *rows)]
    line = "| " + " | ".join(str(h).ljust(w) for h, w in zip(head, widths)) + " |"
    sep = "| " + " | ".join("-" * w for w in widths) + " |"
    body = ["| " + " | ".join(str(x).ljust(w) for x, w in zip(r, widths)) + " |" for r in rows]
    return "\n".join([line, sep, *body])


def summarize(log: dict, counts: dict, args) -> str:
    def stats(name, xs):
        return (name, len(xs), f"{percentile(xs, 50):.1f}", f"{percentile(xs, 95):.1f}", f"{percentile(xs, 99):.1f}",
                f"{max(xs) if xs else float('nan'):.1f}")

    lat = table([stats("submit (label)", log["submit_ms"]), stats("lease", log["lease_ms"]),
                 stats("image", log["image_ms"])], ("request", "n", "p50 ms", "p95 ms", "p99 ms", "max ms"))
    # Throughput over the steady window (after the 2 s ramp-up, before the end).
    at = [t for t in log["submit_at"] if 2.0 <= t <= args.duration]
    thr = len(at) / max(args.duration - 2.0, 1e-9)
    inv = table([(k, counts[k]) for k in ("stored_labels", "acked", "acked_replays", "unacked", "lost", "mismatched",
                                          "unexpected", "duplicate_client_ids", "duplicate_item_annotator",
                                          "items_labeled_by_two", "items_open_twice", "items_granted_to_two")],
                ("database check", "value"))
    rt = counts["round_total_s"]
    extra = (f"throughput: {thr:.1f} labels/s over {args.duration - 2:.0f} s; "
             f"rounds: {counts['rounds']} (median {statistics.median(rt):.2f} s each)" if rt else
             f"throughput: {thr:.1f} labels/s; rounds: {counts['rounds']}")
    ws = (f"WebSockets connected: {log['ws_connected']}/{args.annotators}; messages: {log['ws_messages']}; "
          f"empty leases: {log['empty_leases']}; submit retries: {log['submit_retries']}; errors: {len(log['errors'])}")
    errs = Counter(e.split(":")[0] for e in log["errors"]).most_common(5)
    return "\n\n".join([lat, extra, ws, f"errors by kind: {errs}", inv, targets(log, counts, args)])


def rates(log: dict, args) -> tuple[float, float]:
    """(offered, served) labels per second over the steady window (after the 2 s ramp-up): labels the
    annotators sent (first attempts) and labels answered 200/201."""
    window = max(args.duration - 2.0, 1e-9)
    offered = sum(1 for t in log.get("offered_at", []) if 2.0 <= t <= args.duration) / window
    served = sum(1 for t in log["submit_at"] if 2.0 <= t <= args.duration) / window
    return offered, served


#: issue 14's load targets (50 annotators, 120 s, this 2-core machine)
TARGETS = {"submit_p95_ms": 100.0, "submit_p99_ms": 250.0, "offered_per_s": 40.0, "served_per_s": 40.0}
INVARIANTS = ("lost", "mismatched", "unexpected", "duplicate_client_ids", "duplicate_item_annotator",
              "items_labeled_by_two", "items_open_twice", "items_granted_to_two")


def targets(log: dict, counts: dict, args) -> str:
    offered, served = rates(log, args)
    p95, p99 = percentile(log["submit_ms"], 95), percentile(log["submit_ms"], 99)
    bad = sum(counts[k] for k in INVARIANTS)
    rows = [("submit p95", f"<= {TARGETS['submit_p95_ms']:.0f} ms", f"{p95:.1f} ms", p95 <= TARGETS["submit_p95_ms"]),
            ("submit p99", f"<= {TARGETS['submit_p99_ms']:.0f} ms", f"{p99:.1f} ms", p99 <= TARGETS["submit_p99_ms"]),
            ("labels offered", f">= {TARGETS['offered_per_s']:.0f}/s", f"{offered:.1f}/s",
             offered >= TARGETS["offered_per_s"]),
            ("labels served", f">= {TARGETS['served_per_s']:.0f}/s", f"{served:.1f}/s",
             served >= TARGETS["served_per_s"]),
            ("lost / duplicated / double-leased", "0", str(bad), bad == 0)]
    return table([(a, b, c, "met" if ok else "NOT met") for a, b, c, ok in rows],
                 ("target (issue 14)", "wanted", "measured", "")) + (
        "" if args.annotators == 50 and args.duration >= 120 else
        f"\n(targets are for 50 annotators over 120 s; this run: {args.annotators} over {args.duration:.0f} s)")


def cmd_run(args) -> None:
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    env = django_env(args)
    setup_json, log_json, count_json = work / "setup.json", work / "generate.json", work / "count.json"
    print(f"database {args.db_name}: create + migrate", flush=True)
    _create_db(args)
    subprocess.run([PY, "manage.py", "migrate", "--noinput", "-v", "0"], cwd=ROOT, env=env, check=True)
    setup_env = {**env, "CELERY_BROKER_URL": "memory://"}
    subprocess.run([PY, __file__, "setup", "--out", str(setup_json), *_common(args)],
                   cwd=ROOT, env=setup_env, check=True)

    port = args.port or free_port()
    daphnes: list[subprocess.Popen] = []  # the web server's processes, whichever server it is
    worker = None
    logs = {name: open(work / f"{name}.log", "w") for name in ("daphne", "worker")}
    # Several server processes may share one listening socket (the kernel spreads the accepts):
    # the way to use more than one core for Django's views, which ASGI runs on one thread per process.
    # Granian cannot take a socket: it binds the port itself and forks its own workers.
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(1024)
    listener.set_inheritable(True)
    fd = listener.fileno()
    if args.server in BINDS_ITSELF:
        listener.close()
    try:
        # Database connections: the server runs each request's view in a thread of its own, so only a pool
        # reuses connections there (DB_POOL); the worker's threads live long, so it keeps its connection
        # (DB_CONN_MAX_AGE) and has no pool to inherit across the prefork fork (config/env.py).
        web_env = dict(env)
        if args.db_pool:
            web_env.update(DB_POOL="1", DB_POOL_MAX_SIZE=str(args.db_pool_max), DB_CONN_MAX_AGE="0")
        for cmd in server_commands(args.server, fd=fd, port=port, processes=args.web_processes):
            daphnes.append(subprocess.Popen(cmd, pass_fds=() if args.server in BINDS_ITSELF else (fd,),
                                            cwd=ROOT, env=web_env, stdout=logs["daphne"], stderr=subprocess.STDOUT))
        # torch's intra-op threads: on a small machine shared with the web process, OpenMP threads
        # that spin while their core runs Daphne make a 0.1 s fit take seconds (docs/bench-load.md).
        worker_env = dict(env)
        if args.db_pool:
            worker_env.update(DB_CONN_MAX_AGE="60")
        if args.worker_threads:
            worker_env.update(OMP_NUM_THREADS=str(args.worker_threads), MKL_NUM_THREADS=str(args.worker_threads))
        worker = subprocess.Popen([PY, "-m", "celery", "-A", "config", "worker", "-Q", "gpu,cpu", "-c", "1",
                                   "-n", f"load-{os.getpid()}@%h", "--loglevel", "WARNING"],
                                  cwd=ROOT, env=worker_env, stdout=logs["worker"], stderr=subprocess.STDOUT)
        _wait_http(port, daphnes)
        time.sleep(args.warmup)
        load_before = os.getloadavg()
        print(f"{args.web_processes} {args.server} process(es) on 127.0.0.1:{port}, worker pid {worker.pid}; "
              f"{args.annotators} annotators for {args.duration} s", flush=True)
        cpu0 = _cpu_snapshot(daphnes, worker, args.db_name)
        t_gen = time.monotonic()
        stop_analyze = _analyze_periodically(args)
        try:
            subprocess.run([PY, __file__, "generate", "--setup", str(setup_json), "--out", str(log_json), "--port",
                            str(port), *_common(args)], cwd=ROOT, env=dict(os.environ), check=True)
        finally:
            stop_analyze()
        wall = time.monotonic() - t_gen
        cpu1 = _cpu_snapshot(daphnes, worker, args.db_name)
        cpu = {k: round(cpu1[k] - cpu0[k], 1) for k in cpu0}
        cpu["wall_s"] = round(wall, 1)
        cpu["loadavg_before"] = [round(x, 2) for x in load_before]
        cpu["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
        (work / "cpu.json").write_text(json.dumps(cpu))
        time.sleep(2.0)  # let a round in flight finish before counting
    finally:
        for d in daphnes:
            _stop(d)
        _stop(worker, timeout=60)
        if args.server != "granian":
            listener.close()
        for fh in logs.values():
            fh.close()
    subprocess.run([PY, __file__, "count", "--setup", str(setup_json), "--log", str(log_json), "--out", str(count_json),
                    *_common(args)], cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
    log = json.loads(log_json.read_text())
    counts = json.loads(count_json.read_text())
    report = summarize(log, counts, args)
    cpu = json.loads((work / "cpu.json").read_text())
    labels = max(counts["stored_labels"], 1)
    # What the rest of the machine used meanwhile (other tenants; the postgres figure counts only
    # backends alive at both snapshots, so per-request backends of --no-db-pool runs are missed).
    ours = sum(cpu[k] for k in ("daphne", "worker", "postgres", "redis")) + (log.get("cpu_s") or 0)
    cpu["others"] = round(max(cpu.get("machine", 0.0) - ours, 0.0), 1)
    report += ("\n\nCPU seconds during the load (%d cores = %.0f s available): %s; generator %s; "
               "%d %s process(es), database pool %s" % (
                   os.cpu_count() or 0, (os.cpu_count() or 0) * cpu["wall_s"], cpu, log.get("cpu_s"),
                   args.web_processes, args.server, f"on (max {args.db_pool_max})" if args.db_pool else "off"))
    per_label = {"web server": cpu["daphne"], "postgres": cpu["postgres"], "worker": cpu["worker"],
                 "redis": cpu["redis"], "generator": log.get("cpu_s") or 0.0}
    per_label["all of Loupe (web + postgres + worker + redis)"] = sum(
        cpu[k] for k in ("daphne", "postgres", "worker", "redis"))
    report += "\n\n" + table([(k, f"{v:.1f}", f"{1000 * v / labels:.2f}") for k, v in per_label.items()],
                              ("process", "CPU s", "CPU ms per stored label"))
    summary = {"server": args.server, "web_processes": args.web_processes, "labels": counts["stored_labels"],
               "offered_per_s": round(rates(log, args)[0], 1), "labels_per_s": round(rates(log, args)[1], 1),
               **{f"{k}_p{q}_ms": round(percentile(log[f"{k}_ms"], q), 1)
                  for k in ("submit", "lease", "image") for q in (50, 95, 99)},
               "cpu_ms_per_label": {k: round(1000 * v / labels, 2) for k, v in per_label.items()},
               "others_cpu_s": cpu["others"], "loadavg_before": cpu["loadavg_before"]}
    (work / "summary.json").write_text(json.dumps(summary))
    print(report)
    (work / "report.md").write_text(report + "\n")
    if args.drop_db:
        _drop_db(args)
    bad = [k for k in INVARIANTS if counts[k]]
    if bad:
        print(f"FAILED invariants: {bad}")
        sys.exit(1)


def _common(args) -> list[str]:
    return ["--annotators", str(args.annotators), "--duration", str(args.duration), "--items", str(args.items),
            "--seed", str(args.seed), "--think-min", str(args.think_min), "--think-max", str(args.think_max),
            "--batch-size", str(args.batch_size), "--refill-threshold", str(args.refill_threshold),
            "--strategy", args.strategy, "--lease-n", str(args.lease_n), "--submit-timeout", str(args.submit_timeout),
            "--pg-url", args.pg_url, "--db-name", args.db_name, "--redis-url", args.redis_url,
            "--broker-url", args.broker_url, "--workdir", args.workdir,
            "--web-processes", str(args.web_processes), "--server", args.server, "--settings", args.settings,
            "--worker-threads", str(args.worker_threads), "--db-pool-max", str(args.db_pool_max),
            "--db-pool" if args.db_pool else "--no-db-pool", "--analyze-every", str(args.analyze_every)]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("command", choices=["run", "setup", "generate", "count"])
    p.add_argument("--annotators", type=int, default=50)
    p.add_argument("--duration", type=float, default=120.0, help="seconds of load")
    p.add_argument("--items", type=int, default=10000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--think-min", type=float, default=0.5, help="seconds an annotator looks at an image, at least")
    p.add_argument("--think-max", type=float, default=1.5)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--refill-threshold", type=int, default=300)
    p.add_argument("--strategy", default="margin")
    p.add_argument("--lease-n", type=int, default=4)
    p.add_argument("--submit-timeout", type=float, default=5.0)
    p.add_argument("--pg-url", default="postgres://postgres@127.0.0.1:5432")
    p.add_argument("--db-name", default="loupe_loadtest")
    p.add_argument("--redis-url", default="redis://127.0.0.1:6379/13")
    p.add_argument("--broker-url", default="redis://127.0.0.1:6379/14")
    p.add_argument("--workdir", default=str(ROOT / "var" / "loadtest"))
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--warmup", type=float, default=3.0)
    p.add_argument("--settings", default="config.settings", help="DJANGO_SETTINGS_MODULE of the server side")
    p.add_argument("--worker-threads", type=int, default=1,
                   help="OMP_NUM_THREADS for the Celery worker (0: leave torch's default)")
    p.add_argument("--server", choices=SERVERS, default="uvicorn",
                   help="the ASGI server (default: uvicorn, the cheapest measured; docs/bench-load.md)")
    p.add_argument("--web-processes", type=int, default=2,
                   help="web server processes (Uvicorn/Granian: workers); 2, as compose runs it (WEB_CONCURRENCY)")
    p.add_argument("--db-pool", action=argparse.BooleanOptionalAction, default=True,
                   help="Daphne uses the psycopg connection pool (DB_POOL=1) and the worker keeps its connection "
                        "(DB_CONN_MAX_AGE=60); --no-db-pool: a new connection per request, as before")
    p.add_argument("--db-pool-max", type=int, default=8, help="DB_POOL_MAX_SIZE per Daphne process")
    p.add_argument("--analyze-every", type=float, default=30.0,
                   help="seconds between ANALYZEs of the growing tables during the load (autovacuum's job; 0: never)")
    p.add_argument("--drop-db", action="store_true", help="drop the database at the end")
    p.add_argument("--setup")
    p.add_argument("--log")
    p.add_argument("--out")
    args = p.parse_args(argv)
    for url in (args.pg_url, args.redis_url, args.broker_url):
        host = urlsplit(url).hostname
        if host not in ("127.0.0.1", "localhost", "::1"):
            p.error(f"{url!r}: the load test runs on loopback only")
    {"run": cmd_run, "setup": cmd_setup, "generate": cmd_generate, "count": cmd_count}[args.command](args)


if __name__ == "__main__":
    main()
