"""The embedded default (``loupe_serve`` with the memory broker) runs one worker lane per queue, as the
production workers do: a ``gpu`` task (a round) starts while a ``cpu`` task (the previous round's quality
follow-up, an import, an export) is still running.  Found by QA: with one lane for both queues, a round
waited behind the quality task (docs/bench-rounds.md, "Left open").

The workers run in a subprocess (their threads never stop, and must not take other tests' tasks)."""
import json
import os
import subprocess
import sys
import textwrap

from tests.support import ROOT

SCRIPT = textwrap.dedent("""
    import json, os, threading, time
    import django
    django.setup()
    from config.celery import app
    from annotate.management.commands.loupe_serve import start_embedded_worker

    seen = {}
    release = threading.Event()

    @app.task(name="qa.slow_cpu_task")
    def slow():
        seen["cpu_started"] = time.monotonic()
        release.wait(60)  # holds its lane until the gpu task ran (or the test gave up)

    @app.task(name="qa.gpu_task")
    def quick():
        seen["gpu_ran"] = time.monotonic()

    lanes = start_embedded_worker(loglevel="WARNING")
    slow.apply_async(queue="cpu")
    t = time.monotonic()
    while "cpu_started" not in seen and time.monotonic() - t < 30:
        time.sleep(0.02)
    quick.apply_async(queue="gpu")
    t = time.monotonic()
    while "gpu_ran" not in seen and time.monotonic() - t < 10:
        time.sleep(0.02)
    still_busy = not release.is_set() and "cpu_started" in seen
    release.set()
    print("RESULT " + json.dumps({"lanes": sorted(lanes), "seen": sorted(seen), "cpu_still_running": still_busy,
                                  "threads": sorted(th.name for th in threading.enumerate()
                                                    if th.name.startswith("loupe-embedded"))}))
""")


def test_a_round_on_the_gpu_lane_does_not_wait_for_a_running_cpu_task(tmp_path):
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "LOUPE_WORKER_WARMUP": "0",
           "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}", "MEDIA_ROOT": str(tmp_path / "media"),
           "LOUPE_SWEEP_SECONDS": "0"}
    env.pop("CELERY_BROKER_URL", None)  # the embedded default: the memory broker
    proc = subprocess.run([sys.executable, "-c", SCRIPT], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=120)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, (proc.returncode, proc.stdout[-2000:], proc.stderr[-4000:])
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["lanes"] == ["cpu", "gpu"]
    assert result["threads"] == ["loupe-embedded-worker-cpu", "loupe-embedded-worker-gpu"]
    # The gpu task ran while the cpu task still held its lane.
    assert result["seen"] == ["cpu_started", "gpu_ran"], result
    assert result["cpu_still_running"]
