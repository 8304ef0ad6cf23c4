"""Round speed on the digits demo, through the app path (``round_request`` + ``round_execute``).

    python bench/round_speed.py --strategies firal,cluster_margin,badge,margin --labels 40 --repeats 5

Each run happens in a fresh process (so the first round pays ``import torch`` and the head's first
fit, as after a start of the server, unless ``--warm`` imports and warms first, as the worker now
does at start-up): a throwaway SQLite database and media folder under a temporary directory, the
1,797-item demo project, ``--labels`` items labeled from the ground truth (``--labels`` / 10 per class
on average, drawn at random with ``--seed``), then ``--repeats`` rounds per strategy back to back.
Prints per strategy: the first round's wall time, the median (min–max) of the rest, the round's own
timings (load / train / quality / select / write), and how many progress updates (DB writes + pushes) a round
made.  After each round (outside its timing) the follow-up quality task runs in the same process, as a
``cpu`` worker would once the round's queue is committed (``quality_refresh``: consensus, suspect scores,
the calibration the next round applies); "follow-up s" is its median.
``--profile DIR`` writes a cProfile report (top functions by cumulative time) of the last round per
strategy.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--strategies", default="firal,cluster_margin,badge,margin")
    ap.add_argument("--labels", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--batch-size", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--warm", action="store_true", help="warm the worker first (annotate.warmup), as a worker does")
    ap.add_argument("--profile", metavar="DIR", help="write a cProfile report per strategy here")
    args = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="loupe-roundbench-")
    os.environ.update(LOUPE_VAR_DIR=tmp, DJANGO_SETTINGS_MODULE="config.settings")
    os.environ.pop("DATABASE_URL", None)
    os.environ.pop("CELERY_BROKER_URL", None)
    sys.path.insert(0, str(ROOT))
    import django  # noqa: PLC0415

    django.setup()
    import numpy as np  # noqa: PLC0415
    from django.contrib.auth import get_user_model  # noqa: PLC0415
    from django.core.management import call_command  # noqa: PLC0415

    from annotate import realtime  # noqa: PLC0415
    from annotate.models import Annotation, Item, Round  # noqa: PLC0415
    from annotate.services.demo import demo_build  # noqa: PLC0415
    from annotate.services.quality import quality_refresh  # noqa: PLC0415
    from annotate.services.rounds import round_execute, round_request  # noqa: PLC0415

    call_command("migrate", verbosity=0)
    project = demo_build(batch_size=args.batch_size).project
    user = get_user_model().objects.create_user(username="bench", password="x")
    rng = np.random.default_rng(args.seed)
    items = list(Item.objects.filter(project=project).order_by("row"))
    picked = rng.choice(len(items), size=args.labels, replace=False)
    Annotation.objects.bulk_create([
        Annotation(item=items[i], annotator=user, action=Annotation.Action.LABEL, label=items[i].ground_truth,
                   is_current=True) for i in picked
    ])
    pushes = {"n": 0}
    real_send = realtime.send_round_status

    def counting_send(rnd):
        pushes["n"] += 1
        return real_send(rnd)

    realtime.send_round_status = counting_send
    if args.warm:
        from annotate.warmup import worker_warmup  # noqa: PLC0415

        t = time.perf_counter()
        worker_warmup()
        print(f"warm-up {time.perf_counter() - t:.2f} s (import torch, first fit)")

    print(f"demo: {len(items)} items, {args.labels} labeled, batch {args.batch_size}, "
          f"{args.repeats} rounds per strategy, load average {os.getloadavg()[0]:.2f}")
    print(f"{'strategy':<16} {'first s':>8} {'median s':>9} {'min-max s':>12} {'load':>6} {'train':>6} "
          f"{'quality':>7} {'select':>7} {'write':>6} {'updates':>8} {'cpu s':>6} {'follow-up s':>11}")
    for name in args.strategies.split(","):
        project.strategy, project.strategy_params = name, {}
        project.save(update_fields=["strategy", "strategy_params"])
        walls, cpus, rows, updates, follow = [], [], [], [], []
        for rep in range(args.repeats):
            rnd = round_request(project=project, reason="bench")
            assert rnd is not None
            profiler = None
            if args.profile and rep == args.repeats - 1:
                import cProfile  # noqa: PLC0415

                profiler = cProfile.Profile()
                profiler.enable()
            pushes["n"] = 0
            t, c = time.perf_counter(), time.process_time()
            rnd = round_execute(round_id=rnd.pk)
            walls.append(time.perf_counter() - t)
            cpus.append(time.process_time() - c)
            updates.append(pushes["n"])
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
            rows.append(rnd.timings)
            t = time.perf_counter()
            quality_refresh(project_id=project.pk)  # the cpu task the round sent after its commit
            follow.append(time.perf_counter() - t)
        rest = walls[1:] or walls
        phases = ("load", "train", "quality", "select", "write")
        med = {k: statistics.median(r.get(k, 0.0) for r in rows[1:] or rows) for k in phases}
        print(f"{name:<16} {walls[0]:>8.2f} {statistics.median(rest):>9.2f} {min(rest):>5.2f}-{max(rest):<6.2f} "
              f"{med['load']:>6.2f} {med['train']:>6.2f} {med['quality']:>7.2f} {med['select']:>7.2f} "
              f"{med['write']:>6.2f} {statistics.median(updates):>8.0f} {statistics.median(cpus[1:] or cpus):>6.2f} "
              f"{statistics.median(follow):>11.2f}")
    import shutil  # noqa: PLC0415

    shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
