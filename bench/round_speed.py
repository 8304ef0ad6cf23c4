"""Round speed on the digits demo, through the app path (``round_request`` + ``round_execute``).

    python bench/round_speed.py --strategies firal,cluster_margin,badge,margin --labels 200 --repeats 6 --warm --grow

Each run happens in a fresh process (so the first round pays ``import torch`` and the head's first
fit, as after a start of the server, unless ``--warm`` imports and warms first, as the worker does at
start-up): a throwaway SQLite database and media folder under a temporary directory, the 1,797-item
demo project, ``--labels`` items labeled from the ground truth (drawn at random with ``--seed``), then
``--repeats`` rounds per strategy back to back.  ``--grow``: after each round its batch is labeled
from the ground truth (outside the round's timing), as annotators would, so every round trains on new
labels and picks from a smaller pool (without it every round sees the same labels, and the head's
warm start then converges at once).  After each round (outside its timing) the follow-up quality task
runs in the same process, as a ``cpu`` worker would once the round's queue is committed
(``quality_refresh``); "follow-up" is its median.

Prints one table, one row per strategy: the first round's wall time, then over the other rounds the
median (min-max) wall time and the median CPU time of the process (``time.process_time``: what the round
cost, whatever the machine's load), the round's phases (medians of ``Round.timings``: load / train /
quality / select / write, and "other": wall minus the phases, i.e. progress writes, the claim and the
heartbeat), FIRAL's RELAX and ROUND seconds, how many progress updates (DB writes + pushes) a round made,
and the target of issue 14 (FIRAL <= 2 s, the others <= 0.5 s after the first round) against the median.
``--profile DIR`` writes a cProfile report (top functions by cumulative CPU time) of the last round per
strategy; ``--json FILE`` writes every round's numbers.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.appkit import app_cleanup, app_env, bench_user, django_ready, label_from_truth  # noqa: E402

#: Issue 14's targets: the median round (after the first) in wall seconds.
TARGETS = {"firal": 2.0, "cluster_margin": 0.5, "badge": 0.5, "margin": 0.5}
PHASES = ("load", "train", "quality", "select", "write")


def _commit() -> str:
    try:
        return subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategies", default="firal,cluster_margin,badge,margin")
    ap.add_argument("--labels", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warm", action="store_true", help="warm the worker first (annotate.warmup), as a worker does")
    ap.add_argument("--grow", action="store_true", help="label each round's batch before the next round")
    ap.add_argument("--profile", metavar="DIR", help="write a cProfile report per strategy here")
    ap.add_argument("--json", metavar="FILE", help="write every round's numbers here")
    args = ap.parse_args(argv)

    tmp = app_env("loupe-roundbench-")  # SQLite
    django_ready()
    logging.getLogger("annotate").setLevel(logging.WARNING)  # one line per round would bury the table
    import numpy as np  # noqa: PLC0415
    from django.utils import timezone  # noqa: PLC0415

    from annotate import realtime  # noqa: PLC0415
    from annotate.models import Item, QueueEntry, Round  # noqa: PLC0415
    from annotate.services.queue_counts import queue_pending_recount  # noqa: PLC0415
    from annotate.services.demo import demo_build  # noqa: PLC0415
    from annotate.services.quality import quality_refresh  # noqa: PLC0415
    from annotate.services.rounds import round_execute, round_request  # noqa: PLC0415

    project = demo_build(batch_size=args.batch_size).project
    user = bench_user()
    rng = np.random.default_rng(args.seed)
    items = list(Item.objects.filter(project=project).order_by("row"))
    label_from_truth([items[i] for i in rng.choice(len(items), size=args.labels, replace=False)], user)
    pushes = {"n": 0}
    real_send = realtime.send_round_status

    def counting_send(rnd):
        pushes["n"] += 1
        return real_send(rnd)

    realtime.send_round_status = counting_send
    load_start = os.getloadavg()
    warm_s = None
    if args.warm:
        from annotate.warmup import worker_warmup  # noqa: PLC0415

        t = time.perf_counter()
        worker_warmup()
        warm_s = time.perf_counter() - t

    def label_batch(rnd) -> int:
        """The annotators label the round's batch (ground truth), as between two rounds in the app."""
        entries = list(QueueEntry.objects.filter(round=rnd, state=QueueEntry.State.PENDING).select_related("item"))
        label_from_truth([e.item for e in entries], user)
        QueueEntry.objects.filter(pk__in=[e.pk for e in entries]).update(state=QueueEntry.State.DONE,
                                                                         done_at=timezone.now())
        queue_pending_recount(project_id=rnd.project_id)  # entries closed past the queue services
        return len(entries)

    results = {}
    for name in args.strategies.split(","):
        project.strategy, project.strategy_params = name, {}
        project.save(update_fields=["strategy", "strategy_params"])
        rows = []
        for rep in range(args.repeats):
            rnd = round_request(project=project, reason="bench")
            assert rnd is not None
            profiler = None
            if args.profile and rep == args.repeats - 1:
                import cProfile  # noqa: PLC0415

                profiler = cProfile.Profile(time.process_time)  # CPU seconds: comparable at any load
                profiler.enable()
            pushes["n"] = 0
            t, c = time.perf_counter(), time.process_time()
            rnd = round_execute(round_id=rnd.pk)
            wall, cpu = time.perf_counter() - t, time.process_time() - c
            if profiler is not None:
                profiler.disable()
                import io  # noqa: PLC0415
                import pstats  # noqa: PLC0415

                out = Path(args.profile)
                out.mkdir(parents=True, exist_ok=True)
                buf = io.StringIO()
                pstats.Stats(profiler, stream=buf).sort_stats("cumulative").print_stats(40)
                (out / f"{name}.txt").write_text(buf.getvalue())
            assert rnd.status == Round.Status.DONE, rnd.failure
            info = (rnd.metrics or {}).get("strategy_info") or {}
            row = {"wall": wall, "cpu": cpu, "updates": pushes["n"], "labeled": rnd.labeled_count,
                   **{k: float(rnd.timings.get(k, 0.0)) for k in PHASES},
                   "relax": info.get("relax_seconds"), "round": info.get("round_seconds")}
            t = time.perf_counter()
            quality_refresh(project_id=project.pk)  # the cpu task the round sent after its commit
            row["follow_up"] = time.perf_counter() - t
            if args.grow:
                label_batch(rnd)
            rows.append(row)
        results[name] = rows

    load_end = os.getloadavg()
    print(f"round speed, demo ({len(items)} items), {args.labels} labels at the start"
          f"{' + each batch labeled before the next round' if args.grow else ''}, batch {args.batch_size}, "
          f"{args.repeats} rounds per strategy, commit {_commit()}, "
          f"BLAS threads per round {os.environ.get('LOUPE_ROUND_THREADS', '1 (default)')}")
    print(f"load average (1 min) {load_start[0]:.2f} at the start, {load_end[0]:.2f} at the end"
          + (f"; worker warm-up {warm_s:.2f} s before the first round" if warm_s is not None else
             "; no warm-up (the first round imports torch)"))
    print("times in seconds; median over the rounds after the first")
    head = (f"| {'strategy':<14} | {'first':>5} | {'median wall (min-max)':>21} | {'CPU':>5} | "
            + " | ".join(f"{k:>7}" for k in PHASES)
            + f" | {'other':>5} | {'relax/round':>11} | {'updates':>7} | {'follow-up':>9} | {'target':>6} |")
    print(head)
    print("|" + "|".join("-" * (len(c) if c else 0) for c in head.split("|")[1:-1]) + "|")
    for name, rows in results.items():
        rest = rows[1:] or rows

        def med(key, rest=rest):
            xs = [r[key] for r in rest if r[key] is not None]
            return statistics.median(xs) if xs else None

        walls = [r["wall"] for r in rest]
        other = statistics.median(r["wall"] - sum(r[k] for k in PHASES) for r in rest)
        sub = f"{med('relax'):.2f}/{med('round'):.2f}" if med("relax") is not None else "-"
        target = TARGETS.get(name)
        verdict = "-" if target is None else ("met" if statistics.median(walls) <= target else "NOT")
        span = f"{statistics.median(walls):.2f} ({min(walls):.2f}-{max(walls):.2f})"
        print(f"| {name:<14} | {rows[0]['wall']:>5.2f} | {span:>21} | {med('cpu'):>5.2f} | "
              + " | ".join(f"{med(k):>7.2f}" for k in PHASES)
              + f" | {other:>5.2f} | {sub:>11} | {med('updates'):>7.0f} | {med('follow_up'):>9.2f} | "
              f"{verdict:>6} |")
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "load_start": load_start, "load_end": load_end,
                                               "warm_s": warm_s, "commit": _commit(), "rounds": results}))
    app_cleanup(tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
