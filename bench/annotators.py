"""Simulated annotators against the embedded default: how long a keypress waits for the next item.

    python bench/annotators.py run --strategy firal --annotators 1 --rate 1 --duration 600
    python bench/annotators.py run --strategy firal,margin --duration 20 --limit 600   # both in one server

``run`` does everything:

1. ``setup`` (a child process with Django): a fresh SQLite database and media folder under a
   temporary directory, the full digits demo (1,797 items) with ``--strategy``, its first round
   (as ``make run`` does), and one user + logged-in session per annotator.  With several
   strategies (comma-separated), one demo project each, all served by the same server and worker
   (so one project's rounds may wait behind another's), ``--annotators`` on each;
2. starts ``manage.py loupe_serve`` (Daphne + the embedded worker thread, in-memory channel layer:
   the ``make run`` path) and waits until it serves;
3. ``--annotators`` clients (asyncio, no Django) that do what ``frontend/static/label.js`` does:
   lease 6 items, preload their images, lease again when fewer than 3 are waiting and on every
   ``queue.updated`` push (WebSocket), send labels in order in the background.  Each one labels
   one item every 1/``--rate`` seconds of the item being on screen (ground truth, 10 % wrong);
4. ``report`` (a child process with Django): the rounds the run caused (how long each took from
   request to queue written, its batch size and the pace it measured) and the labels stored.

For every keypress it records the wait until the next item is on screen (leased and its image
loaded): 0 when it was preloaded.  A keypress that finds no item leased is a "dry" one: the page
would show "Waiting for the next batch" (or "Nothing to label").  Prints the wait distribution and
the round table, and writes everything as JSON (``--out``).  ``--root DIR`` runs the server and
setup from another checkout (for before/after runs of the same client).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.loadtest import Http, free_port, logged_in_session, percentile  # noqa: E402

PREFETCH = 6  # label.js: items held (current + preloaded)
REFILL_AT = 3  # label.js: lease more when fewer than this are waiting


# =========================================================================== server side (Django)
def _django(root: Path) -> None:
    sys.path.insert(0, str(root))
    os.chdir(root)
    import django  # noqa: PLC0415

    django.setup()


def cmd_setup(args) -> None:
    _django(Path(args.root))
    from django.contrib.auth import get_user_model  # noqa: PLC0415
    from django.core.management import call_command  # noqa: PLC0415

    from annotate.models import Item, Membership  # noqa: PLC0415
    from annotate.services.demo import demo_build  # noqa: PLC0415
    from annotate.services.rounds import round_execute, round_request  # noqa: PLC0415

    call_command("migrate", verbosity=0)
    out = []
    for strategy in args.strategy.split(","):
        project = demo_build(name=f"Digits demo ({strategy})", limit=args.limit, batch_size=args.batch_size,
                             refill_threshold=args.refill_threshold).project
        project.strategy, project.strategy_params = strategy, {}
        project.save(update_fields=["strategy", "strategy_params"])
        rnd = round_request(project=project, reason="initial")
        round_execute(round_id=rnd.pk)
        users = []
        for i in range(args.annotators):
            user = get_user_model().objects.create_user(f"sim{i:02d}-{project.pk}", password=None)
            Membership.objects.create(project=project, user=user, role=Membership.Role.ANNOTATOR)
            users.append({"id": user.pk, "session": logged_in_session(user)})
        truth = dict(Item.objects.filter(project=project).values_list("id", "ground_truth"))
        out.append({"strategy": strategy, "project_id": project.pk, "classes": project.classes, "users": users,
                    "truth": {str(k): v for k, v in truth.items()}})
    Path(args.out).write_text(json.dumps(out))


def cmd_report(args) -> None:
    _django(Path(args.root))
    from annotate.models import Annotation, Round  # noqa: PLC0415

    rounds = []
    for r in Round.objects.filter(project_id=args.project_id).order_by("number"):
        took = (r.finished_at - r.created_at).total_seconds() if r.finished_at else None
        rounds.append({"number": r.number, "status": r.status, "reason": r.reason, "batch_size": r.batch_size,
                       "labeled": r.labeled_count, "seconds": took, "timings": r.timings,
                       "pace": (r.metrics or {}).get("pace"), "refill_point": (r.metrics or {}).get("refill_point"),
                       "entries": (r.metrics or {}).get("entries")})
    labels = Annotation.objects.filter(item__project_id=args.project_id).count()
    Path(args.out).write_text(json.dumps({"rounds": rounds, "annotations": labels}))


# =========================================================================== client (no Django)
class Annotator:
    """One labeling page (label.js), driven by a person who labels every ``1/rate`` seconds."""

    def __init__(self, idx: int, user: dict, cfg: dict, log: dict):
        self.idx, self.cfg, self.log = idx, cfg, log
        self.rng = random.Random(cfg["seed"] * 1000 + idx)
        self.csrf = uuid.uuid4().hex
        self.cookies = {"sessionid": user["session"], "csrftoken": self.csrf}
        self.headers = {"X-CSRFToken": self.csrf}
        self.api = f"/api/projects/{cfg['project_id']}/"
        self.lease_http = Http(cfg["host"], cfg["port"], self.cookies)
        self.submit_http = Http(cfg["host"], cfg["port"], self.cookies)
        self.image_http = Http(cfg["host"], cfg["port"], self.cookies)
        self.queue: list[dict] = []  # leased items waiting, images preloading
        self.current: dict | None = None
        self.done: set[int] = set()
        self.leasing: asyncio.Task | None = None
        self.lease_again = False
        self.changed = asyncio.Event()  # set whenever an item may have become available
        self.submits: asyncio.Queue = asyncio.Queue()
        self.images: asyncio.Queue = asyncio.Queue()
        self.round_running = False

    # -- label.js: lease(), next(), preload()
    def lease(self) -> None:
        if self.leasing is not None:
            self.lease_again = True
            return
        self.leasing = asyncio.create_task(self._lease())

    async def _lease(self) -> None:
        try:
            t = time.monotonic()
            status, body = await self.lease_http.request("POST", self.api + "lease", {"n": PREFETCH}, self.headers)
            self.log["lease_ms"].append((time.monotonic() - t) * 1000)
            if status != 200:
                self.log["errors"].append(f"lease {status}: {body[:200]!r}")
                return
            data = json.loads(body)
            have = {i["item_id"] for i in self.queue} | ({self.current["item_id"]} if self.current else set())
            for item in data["items"]:
                if item["item_id"] in have or item["item_id"] in self.done:
                    continue
                item["ready"] = asyncio.Event()
                self.queue.append(item)
                self.images.put_nowait(item)
            self.log["pending_seen"].append(data["progress"]["pending"])
            if self.current is None and self.queue:
                self.next()
        except (OSError, ConnectionError, ValueError) as exc:
            self.log["errors"].append(f"lease: {type(exc).__name__}: {exc}")
            await self.lease_http.close()
        finally:
            self.leasing = None
            self.changed.set()
            if self.lease_again:
                self.lease_again = False
                self.lease()

    def next(self) -> None:
        self.current = self.queue.pop(0) if self.queue else None
        self.changed.set()
        if len(self.queue) < REFILL_AT:
            self.lease()

    async def preload_images(self) -> None:
        while True:
            item = await self.images.get()
            try:
                status, _ = await self.image_http.request("GET", item["image_url"])
                if status != 200:
                    self.log["errors"].append(f"image {status}")
            except (OSError, ConnectionError) as exc:
                self.log["errors"].append(f"image: {type(exc).__name__}")
                await self.image_http.close()
            item["ready"].set()
            self.changed.set()

    async def send_submits(self) -> None:
        while True:
            body = await self.submits.get()
            t = time.monotonic()
            try:
                status, resp = await self.submit_http.request("POST", self.api + "label", body, self.headers)
            except (OSError, ConnectionError) as exc:
                self.log["errors"].append(f"label: {type(exc).__name__}")
                await self.submit_http.close()
                continue
            self.log["submit_ms"].append((time.monotonic() - t) * 1000)
            if status in (200, 201):
                self.log["labels"] += 1
                self.log["pending_seen"].append(json.loads(resp)["progress"]["pending"])
            else:
                self.log["errors"].append(f"label {status}: {resp[:200]!r}")

    async def listen(self, ws) -> None:
        async for raw in ws:
            msg = json.loads(raw)
            if msg.get("type") == "queue.updated":
                self.log["queue_updates"] += 1
                self.lease()
            elif msg.get("type") == "round.status":
                self.log["round_status"] += 1
                self.round_running = msg["round"]["status"] in ("queued", "running")

    async def shown(self) -> dict:
        """Wait until an item is current and its image is loaded; returns it."""
        while True:
            item = self.current
            if item is not None:
                await item["ready"].wait()
                if self.current is item:
                    return item
                continue
            self.changed.clear()
            await self.changed.wait()

    async def run(self, stop_at: float) -> None:
        import websockets  # noqa: PLC0415

        cfg = self.cfg
        ws = await websockets.connect(f"ws://{cfg['host']}:{cfg['port']}/ws/projects/{cfg['project_id']}/",
                                      additional_headers={"Cookie": f"sessionid={self.cookies['sessionid']}",
                                                          "Origin": f"http://{cfg['host']}:{cfg['port']}"})
        tasks = [asyncio.create_task(c) for c in (self.listen(ws), self.preload_images(), self.send_submits())]
        self.lease()
        item = await self.shown()
        period = 1.0 / cfg["rate"]
        try:
            while True:
                await asyncio.sleep(period * self.rng.uniform(0.8, 1.2) if cfg["jitter"] else period)
                if time.monotonic() >= stop_at:
                    break
                pressed = time.monotonic()
                truth = cfg["truth"].get(str(item["item_id"]))
                label = truth if truth and self.rng.random() < 0.9 else self.rng.choice(cfg["classes"])
                self.done.add(item["item_id"])
                self.submits.put_nowait({"item_id": item["item_id"], "label": label,
                                         "client_id": str(uuid.uuid4()), "time_ms": int(period * 1000)})
                self.next()
                dry = self.current is None
                item = await self.shown()
                wait = (time.monotonic() - pressed) * 1000
                self.log["waits_ms"].append(wait)
                self.log["wait_at"].append(pressed - cfg["t0"])
                if dry:
                    self.log["dry"].append({"at_s": round(pressed - cfg["t0"], 2), "wait_ms": round(wait, 1),
                                            "round_running": self.round_running})
            while not self.submits.empty():  # let the last labels reach the server
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
        finally:
            for t in tasks:
                t.cancel()
            await ws.close()
            for h in (self.lease_http, self.submit_http, self.image_http):
                await h.close()


async def simulate(common: dict, projects: list[dict]) -> dict[str, dict]:
    """Run every project's annotators at once; one log per strategy."""
    t0 = time.monotonic()
    logs, clients = {}, []
    for proj in projects:
        cfg = {**common, **proj, "t0": t0}
        log = logs[proj["strategy"]] = {"waits_ms": [], "wait_at": [], "dry": [], "lease_ms": [], "submit_ms": [],
                                        "pending_seen": [], "errors": [], "labels": 0, "queue_updates": 0,
                                        "round_status": 0}
        clients += [Annotator(i, u, cfg, log) for i, u in enumerate(proj["users"])]
    await asyncio.gather(*(c.run(t0 + common["duration"]) for c in clients))
    return logs


# =========================================================================== run
def summary(strategy: str, log: dict, report: dict, args) -> str:
    w = log["waits_ms"]
    lines = [f"strategy {strategy}, {args.annotators} annotator(s) at {args.rate} item/s each, "
             f"{args.duration:.0f} s, {'full demo' if args.limit is None else f'{args.limit} items'}, "
             f"batch {args.batch_size}, threshold {args.refill_threshold}",
             f"keypresses {len(w)}, labels acknowledged {log['labels']}, stored {report['annotations']}, "
             f"errors {len(log['errors'])}",
             "wait for the next item (ms): " + "  ".join(
                 f"p{q} {percentile(w, q):.1f}" for q in (50, 95, 99)) + f"  max {max(w, default=float('nan')):.1f}",
             f"keypresses waiting > 100 ms: {sum(x > 100 for x in w)}; dry (no item leased): {len(log['dry'])}; "
             f"lowest pending count seen: {min(log['pending_seen'], default='-')}"]
    rounds = [r for r in report["rounds"] if r["reason"] != "initial"]
    secs = [r["seconds"] for r in rounds if r["seconds"] is not None]
    if secs:
        lines.append(f"rounds {len(rounds)}: request -> queue written p50 {percentile(secs, 50):.2f} s, "
                     f"max {max(secs):.2f} s; batch sizes {sorted({r['batch_size'] for r in rounds})}; "
                     f"last refill point {rounds[-1]['refill_point']}, last pace {rounds[-1]['pace']}")
    return "\n".join(lines)


def cmd_run(args) -> None:
    root = Path(args.root).resolve()
    tmp = Path(tempfile.mkdtemp(prefix="loupe-sim-"))
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "CELERY_BROKER_URL", "REDIS_URL")}
    env.update(LOUPE_VAR_DIR=str(tmp), DJANGO_SETTINGS_MODULE="config.settings", PYTHONUNBUFFERED="1")
    setup_json = tmp / "setup.json"
    common = ["--root", str(root)]
    subprocess.run([sys.executable, __file__, "setup", *common, "--out", str(setup_json), "--strategy", args.strategy,
                    "--annotators", str(args.annotators), "--batch-size", str(args.batch_size),
                    "--refill-threshold", str(args.refill_threshold)]
                   + (["--limit", str(args.limit)] if args.limit else []), env=env, check=True)
    projects = json.loads(setup_json.read_text())
    port = free_port()
    log_path = tmp / "serve.log"
    with open(log_path, "wb") as out:
        server = subprocess.Popen([sys.executable, "manage.py", "loupe_serve", "--port", str(port)], cwd=root,
                                  env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while b"Loupe is serving" not in log_path.read_bytes():
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.1)
        client_cfg = {"host": "127.0.0.1", "port": port, "rate": args.rate, "duration": args.duration,
                      "seed": args.seed, "jitter": args.jitter}
        logs = asyncio.run(simulate(client_cfg, projects))
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()
    reports, texts = {}, []
    for proj in projects:
        report_json = tmp / f"report-{proj['project_id']}.json"
        subprocess.run([sys.executable, __file__, "report", *common, "--project-id", str(proj["project_id"]),
                        "--out", str(report_json)], env=env, check=True)
        reports[proj["strategy"]] = json.loads(report_json.read_text())
        texts.append(summary(proj["strategy"], logs[proj["strategy"]], reports[proj["strategy"]], args))
    text = "\n\n".join(texts)
    print(text)
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "summary": text, "logs": logs, "reports": reports,
                                              "load_average": os.getloadavg()}, default=str))
    if not args.keep:
        import shutil  # noqa: PLC0415

        shutil.rmtree(tmp, ignore_errors=True)
    return logs, reports


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("--strategy", default="margin", help="one or more, comma-separated (one project each)")
    run.add_argument("--annotators", type=int, default=1)
    run.add_argument("--rate", type=float, default=1.0, help="items per second per annotator")
    run.add_argument("--duration", type=float, default=60.0)
    run.add_argument("--limit", type=int, default=None, help="only the first N digits (default: all 1,797)")
    run.add_argument("--batch-size", type=int, default=20)
    run.add_argument("--refill-threshold", type=int, default=10)
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--jitter", action="store_true", help="think times uniform in [0.8, 1.2] / rate")
    run.add_argument("--root", default=str(ROOT), help="checkout to run the server from")
    run.add_argument("--out", help="write the full log as JSON here")
    run.add_argument("--keep", action="store_true", help="keep the temporary directory (database, server log)")
    setup = sub.add_parser("setup")
    report = sub.add_parser("report")
    for p in (setup, report):
        p.add_argument("--root", required=True)
        p.add_argument("--out", required=True)
    setup.add_argument("--strategy", required=True)
    setup.add_argument("--annotators", type=int, required=True)
    setup.add_argument("--limit", type=int, default=None)
    setup.add_argument("--batch-size", type=int, default=20)
    setup.add_argument("--refill-threshold", type=int, default=10)
    report.add_argument("--project-id", type=int, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "run":
        return cmd_run(args)
    return {"setup": cmd_setup, "report": cmd_report}[args.cmd](args)


if __name__ == "__main__":
    main()
