"""A big project through the app, each step timed (issue 17): synthetic 64-d embeddings, 100 classes.

    python bench/million.py --n 1000000 --b 10000            # PostgreSQL (a throwaway database)
    python bench/million.py --n 2000 --b 20                  # the small project to compare lease/submit with

Steps, in one process on a fresh PostgreSQL database (created from LOUPE_TEST_POSTGRES_URL and dropped
at the end) and a temporary media folder:

1. import: the (n, 64) float32 ``.npy`` written where the project keeps its embeddings and the item rows
   inserted with ``items_bulk_insert`` (COPY); 100 small PNGs reused as the items' images.
2. labels: ``--labels`` current annotations (bulk), so the round is not a cold start.
3. round: ``round_request`` + ``round_execute`` with ``--strategy`` (default cluster_margin) and batch ``--b``,
   end to end; its queue writes are a row of their own (the round's ``write`` timing).
4. a ``firal`` round (``--firal-b``, ``--firal-params``, e.g. a ``pool_sample``; ``--firal-b 0`` skips it).
5. lease and submit: median of ``--lease-reps`` ``queue_lease(n=1)`` + ``annotation_submit`` calls, taken
   in turn with the same calls on a small project (``--small`` items, its own round) in the same database,
   so both medians see the same machine load.
6. dashboard: ``project_stats`` + ``project_progress``: the first call of the process, then the median of 5.
7. export: ``export_write`` (CSV, streamed).
Every step: wall and CPU seconds (all threads), and the peak resident memory of the process during the
step (sampled every 50 ms; a step that frees what it allocated still shows its peak).  Markdown table.
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import secrets
import statistics
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.appkit import app_cleanup, app_env, bench_user, django_ready, label_from_truth  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--b", type=int, default=10_000)
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--strategy", default="cluster_margin")
    ap.add_argument("--firal-b", type=int, default=200, help="batch of the firal round (0: no firal round)")
    ap.add_argument("--firal-params", default='{"pool_sample": 50000}', help="JSON parameters of that round")
    ap.add_argument("--small", type=int, default=2000, help="items of the small project (0: none)")
    ap.add_argument("--lease-reps", type=int, default=20)
    ap.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    ap.add_argument("--profile", action="store_true", help="print the top functions of submit and dashboard")
    ap.add_argument("--no-export", action="store_true", help="skip the export (the slowest step)")
    ap.add_argument("--keep", action="store_true", help="keep the database (its name is printed; drop it yourself)")
    args = ap.parse_args(argv)

    admin = os.environ.get("LOUPE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    dbname = f"loupe_million_{secrets.token_hex(4)}"
    if not args.sqlite:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
    tmp = app_env("loupe-million-", database_url=None if args.sqlite else
                  urlsplit(admin)._replace(path=f"/{dbname}").geturl())
    try:
        return run(args)
    finally:
        app_cleanup(tmp)  # media: the embeddings .npy, images, the export
        if not args.sqlite and args.keep:
            print(f"kept database {dbname}", flush=True)
        elif not args.sqlite:
            from django.db import connections  # noqa: PLC0415

            connections.close_all()
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


class Peak:
    """The process's peak resident memory, sampled every 50 ms by a thread; ``take()`` returns the peak
    since the last ``take()`` and starts a new interval."""

    def __init__(self):
        self.peak = self.now()
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True).start()

    @staticmethod
    def now() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self.now())
            time.sleep(0.05)

    def take(self) -> int:
        peak, self.peak = max(self.peak, self.now()), self.now()
        return peak


def run(args) -> int:
    import json  # noqa: PLC0415

    django_ready()
    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    from annotate import storage  # noqa: PLC0415
    from annotate.models import Item, Membership, Project, Round  # noqa: PLC0415
    from annotate.selectors import project_progress  # noqa: PLC0415
    from annotate.selectors_stats import project_stats  # noqa: PLC0415
    from annotate.services.annotations import annotation_submit  # noqa: PLC0415
    from annotate.services.bulk_items import items_bulk_insert  # noqa: PLC0415
    from annotate.services.exports import export_write  # noqa: PLC0415
    from annotate.services.queue import queue_lease  # noqa: PLC0415
    from annotate.services.rounds import round_execute, round_request  # noqa: PLC0415

    rows: list[tuple[str, float, float, int, str]] = []
    peak = Peak()
    mark = [time.perf_counter(), cpu()]

    def start():
        peak.take()
        mark[:] = [time.perf_counter(), cpu()]

    def rec(step, note="", seconds=None, cpu_s=None, mem=None):
        wall = time.perf_counter() - mark[0] if seconds is None else seconds
        c = cpu() - mark[1] if cpu_s is None else cpu_s
        m = peak.take() if mem is None else mem
        rows.append((step, wall, c, m, note))
        print(f"  {step}: {wall:.2f} s wall, {c:.2f} s CPU, peak RSS {m / 2**20:.0f} MiB  {note}", flush=True)
        start()

    user = bench_user()
    rng = np.random.default_rng(0)

    def make_project(name, n, b):
        classes = [f"class{i:03d}" for i in range(args.classes)]
        project = Project.objects.create(name=name, classes=classes, strategy=args.strategy, strategy_params={},
                                         batch_size=b, audit_rate=0.0, refill_threshold=1, seed=0,
                                         extractor="test")
        Membership.objects.create(project=project, user=user, role="annotator")
        t_npy = time.perf_counter()
        centers = rng.normal(size=(args.classes, args.d)).astype(np.float32) * 3 / np.sqrt(args.d)
        y = rng.integers(0, args.classes, n)
        X = centers[y]
        X += rng.normal(size=(n, args.d)).astype(np.float32) / np.float32(np.sqrt(args.d))
        rel = storage.embedding_relpath(project, "test", 1)
        path = storage.media_path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, X)
        del X
        img_dir = storage.images_dir(project)
        img_dir.mkdir(parents=True, exist_ok=True)
        for k in range(100):
            buf = io.BytesIO()
            Image.new("RGB", (8, 8), (k * 2, 100, 200 - k)).save(buf, "PNG")
            (img_dir / f"img-{k:03d}.png").write_bytes(buf.getvalue())
        t_npy = time.perf_counter() - t_npy
        base = f"projects/{project.pk}/images/img-"
        gen = ((f"{base}{i % 100:03d}.png", f"item-{i:07d}.png", f"{project.pk:08d}{i:056x}", i, 8, 8,
                classes[int(y[i])]) for i in range(n))
        t_rows = time.perf_counter()
        items_bulk_insert(project=project, rows=gen)
        t_rows = time.perf_counter() - t_rows
        Project.objects.filter(pk=project.pk).update(embedding_file=rel, embedding_version=1,
                                                     embedding_dim=args.d)
        project.refresh_from_db()
        return project, t_npy, t_rows

    def add_labels(project, n, k):
        label_from_truth(Item.objects.filter(project=project, row__in=rng.choice(n, k, replace=False).tolist()), user)

    def round_run(project, b=None):
        rnd = round_request(project=project, reason="bench", batch_size=b)
        round_execute(round_id=rnd.pk)
        return Round.objects.get(pk=rnd.pk)

    def timings(rnd):
        tm = rnd.timings or {}
        return ", ".join(f"{k} {v:.1f}" for k, v in tm.items() if isinstance(v, (int, float)))

    n = args.n
    start()  # 1. import
    project, t_npy, t_rows = make_project("million", n, args.b)
    rec("import: embeddings .npy + item rows (COPY)", f"npy {t_npy:.1f} s, rows {t_rows:.1f} s")

    add_labels(project, n, args.labels)  # 2. labels
    rec(f"{args.labels} labels (setup, bulk)")

    rnd = round_run(project)  # 3. round
    rec(f"round {args.strategy} b={args.b} end to end ({rnd.status})", timings(rnd) or rnd.failure[:200])
    w = (rnd.timings or {}).get("write")
    if isinstance(w, (int, float)):
        rows.append((f"  of which queue writes ({args.b} entries)", w, float("nan"), 0, "the round's write timing"))

    if args.firal_b:  # 4. firal round
        params = json.loads(args.firal_params)
        Project.objects.filter(pk=project.pk).update(strategy="firal", strategy_params=params)
        project.refresh_from_db()
        rnd = round_run(project, b=args.firal_b)
        info = (rnd.metrics or {}).get("strategy_info", {}) if isinstance(rnd.metrics, dict) else {}
        keep = ", ".join(f"{k} {info[k]:.1f}" if isinstance(info[k], float) else f"{k} {info[k]}"
                         for k in ("pool_sample", "pool_size", "relax_seconds", "round_seconds",
                                   "cg_iterations_total", "round_candidates") if k in info)
        rec(f"round firal b={args.firal_b} {args.firal_params} ({rnd.status})",
            (timings(rnd) + f"; {keep}") if rnd.status == "done" else rnd.failure[:200])
        Project.objects.filter(pk=project.pk).update(strategy=args.strategy, strategy_params={})
        project.refresh_from_db()

    small = None
    if args.small:  # the small project, for the latencies of the same calls under the same load
        small, *_ = make_project("small", args.small, max(args.small // 40, 6))
        add_labels(small, args.small, min(args.labels, args.small // 2))
        round_run(small)
        rec(f"small project: {args.small} items, labels, one round (setup)")

    lat: dict[str, dict[str, list[float]]] = {"big": {"lease": [], "submit": []}, "small": {"lease": [], "submit": []}}
    for _ in range(args.lease_reps):  # 5. lease and submit, the two projects in turn
        for key, p in (("big", project), ("small", small)):
            if p is None:
                continue
            t0 = time.perf_counter()
            got = queue_lease(project=p, user=user, n=1)
            lat[key]["lease"].append(time.perf_counter() - t0)
            if got:
                t0 = time.perf_counter()
                annotation_submit(project=p, user=user, item_id=got[0].item_id, label=got[0].item.ground_truth)
                lat[key]["submit"].append(time.perf_counter() - t0)
    mem = peak.take()
    for what in ("lease", "submit"):
        big = statistics.median(lat["big"][what])
        note = f"max {max(lat['big'][what]):.3f} s"
        if lat["small"][what]:
            sm = statistics.median(lat["small"][what])
            note += f"; {args.small}-item project in turn: median {sm:.3f} s, ratio {big / sm:.2f}"
        rows.append((f"{what} (median of {len(lat['big'][what])}, n=1)" if what == "lease"
                     else f"submit (median of {len(lat['big'][what])})", big, float("nan"), mem, note))
        print(f"  {what}: {big:.3f} s  {note}", flush=True)
    start()

    project_stats(project=project)  # 6. dashboard: the first call of the process pays imports
    project_progress(project=project, user=user)
    first = time.perf_counter() - mark[0]
    dash = []
    for _ in range(5):
        t0 = time.perf_counter()
        project_stats(project=project)
        project_progress(project=project, user=user)
        dash.append(time.perf_counter() - t0)
    rec("dashboard (project_stats + project_progress), median of 5", f"first call of the process {first:.2f} s",
        seconds=statistics.median(dash))
    if args.profile:
        import cProfile  # noqa: PLC0415
        import pstats  # noqa: PLC0415

        from django.db import connection  # noqa: PLC0415
        from django.test.utils import CaptureQueriesContext  # noqa: PLC0415

        prof = cProfile.Profile()
        with CaptureQueriesContext(connection) as ctx:
            prof.enable()
            project_stats(project=project)
            project_progress(project=project, user=user)
            got = queue_lease(project=project, user=user, n=1)
            if got:
                annotation_submit(project=project, user=user, item_id=got[0].item_id, label=got[0].item.ground_truth)
            prof.disable()
        pstats.Stats(prof).sort_stats("cumulative").print_stats(25)
        for q in sorted(ctx.captured_queries, key=lambda q: -float(q["time"]))[:8]:
            print(f"{float(q['time']):.3f} s  {q['sql'][:300]}")
        start()

    if not args.no_export:  # 7. export
        out = Path(os.environ["LOUPE_VAR_DIR"]) / "export.csv"
        before = Peak.now()
        written = export_write(project=project, fmt="csv", path=out)
        rec("export CSV (streamed)", f"{written} records, {out.stat().st_size / 2**20:.0f} MiB file; resident "
            f"{before / 2**20:.0f} MiB before")

    print(f"\nn={n} d={args.d} classes={args.classes} b={args.b}, load average {os.getloadavg()[0]:.1f}, "
          f"peak RSS of the run {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB\n")
    print("| step | wall s | CPU s | peak RSS MiB | notes |\n|---|---|---|---|---|")
    for step, wall, c, m, note in rows:
        cs = "" if c != c else f"{c:.1f}"
        ms = f"{m / 2**20:.0f}" if m else ""
        print(f"| {step} | {wall:.2f} | {cs} | {ms} | {note} |")
    return 0


def cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


if __name__ == "__main__":
    sys.exit(main())
