"""A big project through the app, each step timed (issue 17): synthetic 64-d embeddings, 100 classes.

    python bench/million.py --n 1000000 --b 10000            # PostgreSQL (a throwaway database)
    python bench/million.py --n 2000 --b 20                  # the small project to compare lease/submit with

Steps, in one process on a fresh PostgreSQL database (created from LOUPE_TEST_POSTGRES_URL and dropped
at the end) and a temporary media folder:

1. import: the (n, 64) float32 ``.npy`` written where the project keeps its embeddings and the item rows
   inserted with ``items_bulk_insert`` (COPY); 100 small PNGs reused as the items' images.
2. labels: ``--labels`` current annotations (bulk), so the round is not a cold start.
3. round: ``round_request`` + ``round_execute`` with ``--strategy`` (default cluster_margin) and batch ``--b``,
   end to end including the queue writes; the round's own timings (load / train / select / write).
4. lease and submit: median of ``--lease-reps`` ``queue_lease(n=1)`` + ``annotation_submit`` calls.
5. dashboard: ``project_stats`` + ``project_progress``.
6. export: ``export_write`` (CSV), with the resident memory before and its peak during the export.
Peak RSS of the process is printed last.  Markdown table on stdout.
"""
from __future__ import annotations

import argparse
import io
import os
import resource
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=1_000_000)
    ap.add_argument("--d", type=int, default=64)
    ap.add_argument("--classes", type=int, default=100)
    ap.add_argument("--b", type=int, default=10_000)
    ap.add_argument("--labels", type=int, default=1000)
    ap.add_argument("--strategy", default="cluster_margin")
    ap.add_argument("--lease-reps", type=int, default=20)
    ap.add_argument("--sqlite", action="store_true", help="SQLite instead of PostgreSQL")
    ap.add_argument("--profile", action="store_true", help="print the top functions of submit and dashboard")
    ap.add_argument("--keep", action="store_true", help="keep the database (its name is printed; drop it yourself)")
    args = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="loupe-million-")
    os.environ.update(LOUPE_VAR_DIR=tmp, DJANGO_SETTINGS_MODULE="config.settings")
    os.environ.pop("CELERY_BROKER_URL", None)
    admin = os.environ.get("LOUPE_TEST_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")
    dbname = f"loupe_million_{secrets.token_hex(4)}"
    if args.sqlite:
        os.environ.pop("DATABASE_URL", None)
    else:
        import psycopg  # noqa: PLC0415

        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{dbname}"')
        os.environ["DATABASE_URL"] = urlsplit(admin)._replace(path=f"/{dbname}").geturl()
    try:
        return run(args)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)   # media: the embeddings .npy, images, the export
        if not args.sqlite and args.keep:
            print(f"kept database {dbname}", flush=True)
        elif not args.sqlite:
            from django.db import connections  # noqa: PLC0415

            connections.close_all()
            with psycopg.connect(admin, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def run(args) -> int:
    sys.path.insert(0, str(ROOT))
    import django  # noqa: PLC0415

    django.setup()
    import numpy as np  # noqa: PLC0415
    from django.contrib.auth import get_user_model  # noqa: PLC0415
    from django.core.management import call_command  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    from annotate import storage  # noqa: PLC0415
    from annotate.models import Annotation, Item, Membership, Project, Round  # noqa: PLC0415
    from annotate.selectors import project_progress  # noqa: PLC0415
    from annotate.selectors_stats import project_stats  # noqa: PLC0415
    from annotate.services.annotations import annotation_submit  # noqa: PLC0415
    from annotate.services.bulk_items import items_bulk_insert  # noqa: PLC0415
    from annotate.services.exports import export_write  # noqa: PLC0415
    from annotate.services.queue import queue_lease  # noqa: PLC0415
    from annotate.services.rounds import round_execute, round_request  # noqa: PLC0415

    call_command("migrate", verbosity=0)
    rows: list[tuple[str, str, str]] = []

    def rec(step, seconds, note=""):
        rows.append((step, f"{seconds:.2f}", note))
        print(f"  {step}: {seconds:.2f} s {note}", flush=True)

    n, c = args.n, args.classes
    classes = [f"class{i:03d}" for i in range(c)]
    project = Project.objects.create(name="million", classes=classes, strategy=args.strategy,
                                     strategy_params={}, batch_size=args.b, audit_rate=0.0,
                                     refill_threshold=1, seed=0, extractor="test")
    user = get_user_model().objects.create_user(username="bench", password="x")
    Membership.objects.create(project=project, user=user, role="annotator")
    rng = np.random.default_rng(0)

    t = time.perf_counter()  # 1. import
    centers = rng.normal(size=(c, args.d)).astype(np.float32) * 3 / np.sqrt(args.d)
    y = rng.integers(0, c, n)
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
    t_npy = time.perf_counter() - t
    base = f"projects/{project.pk}/images/img-"
    gen = ((f"{base}{i % 100:03d}.png", f"item-{i:07d}.png", f"{i:064x}", i, 8, 8, classes[int(y[i])])
           for i in range(n))
    t1 = time.perf_counter()
    items_bulk_insert(project=project, rows=gen)
    t_rows = time.perf_counter() - t1
    Project.objects.filter(pk=project.pk).update(embedding_file=rel, embedding_version=1, embedding_dim=args.d)
    project.refresh_from_db()
    rec("import (embeddings .npy + item rows)", time.perf_counter() - t,
        f"npy {t_npy:.1f} s, rows (COPY) {t_rows:.1f} s")

    t = time.perf_counter()  # 2. labels
    lab = Item.objects.filter(project=project, row__in=rng.choice(n, args.labels, replace=False).tolist())
    Annotation.objects.bulk_create([Annotation(item=it, annotator=user, label=it.ground_truth) for it in lab])
    rec(f"{args.labels} labels (setup)", time.perf_counter() - t)

    t = time.perf_counter()  # 3. round
    rnd = round_request(project=project, reason="bench")
    round_execute(round_id=rnd.pk)
    rnd = Round.objects.get(pk=rnd.pk)
    tm = rnd.timings or {}
    parts = ", ".join(f"{k} {v:.1f}" for k, v in tm.items() if isinstance(v, (int, float)))
    rec(f"round {args.strategy} b={args.b} ({rnd.status})", time.perf_counter() - t, parts or rnd.failure[:200])

    lease, submit = [], []  # 4. lease and submit
    for _ in range(args.lease_reps):
        t = time.perf_counter()
        got = queue_lease(project=project, user=user, n=1)
        lease.append(time.perf_counter() - t)
        if not got:
            break
        t = time.perf_counter()
        annotation_submit(project=project, user=user, item_id=got[0].item_id, label=got[0].item.ground_truth)
        submit.append(time.perf_counter() - t)
    rec("lease (median of n=1 calls)", statistics.median(lease), f"max {max(lease):.3f} s")
    if submit:
        rec("submit (median)", statistics.median(submit), f"max {max(submit):.3f} s")

    t = time.perf_counter()  # 5. dashboard
    project_stats(project=project)
    project_progress(project=project, user=user)
    rec("dashboard (project_stats + project_progress)", time.perf_counter() - t)
    if args.profile:
        import cProfile  # noqa: PLC0415
        import pstats  # noqa: PLC0415

        from django.db import connection, reset_queries  # noqa: PLC0415
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
        slow = sorted(ctx.captured_queries, key=lambda q: -float(q["time"]))[:8]
        for q in slow:
            print(f"{float(q['time']):.3f} s  {q['sql'][:300]}")
        reset_queries()

    # 6. export; resident memory sampled every 0.2 s (tracemalloc would slow the per-row Python 2-3x)
    def rss() -> int:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    base_rss, peak_rss, done = rss(), [0], threading.Event()

    def sample():
        while not done.is_set():
            peak_rss[0] = max(peak_rss[0], rss())
            time.sleep(0.2)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    t = time.perf_counter()
    out = Path(os.environ["LOUPE_VAR_DIR"]) / "export.csv"
    written = export_write(project=project, fmt="csv", path=out)
    done.set()
    th.join()
    rec("export CSV (streamed)", time.perf_counter() - t,
        f"{written} records, {out.stat().st_size / 2**20:.0f} MiB file, resident memory "
        f"{base_rss / 2**20:.0f} MiB before, peak {peak_rss[0] / 2**20:.0f} MiB during")

    print(f"\nn={n} d={args.d} classes={c} b={args.b}, load average {os.getloadavg()[0]:.1f}, "
          f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10:.0f} MiB\n")
    print("| step | seconds | notes |\n|---|---|---|")
    for r in rows:
        print(f"| {r[0]} | {r[1]} | {r[2]} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
