"""Warm a worker up at start: import torch and the selection library (strategies, quality), fit the head once.

``import torch`` alone took 3.2 s on the development machine, and the head's first fit pays
torch's lazy set-up; done inside the first round after every start of the worker, that made the
first round 5-8 s while annotators waited (issue 14).  The worker does it before taking tasks:

* a ``celery worker`` process: the ``worker_process_init`` signal (``config/celery.py``), which
  Celery sends in every pool process (prefork children; the solo pool sends it in the worker
  itself), so nothing heavy is imported before a fork.  The warm-up runs in a thread of that
  process (:func:`worker_warmup_in_background`): the prefork parent kills a child that has not
  reported "up" within 4 s (``worker_proc_alive_timeout``), and on a busy machine the import
  alone takes longer; measured: a blocking warm-up there made the parent kill and restart
  children forever.  A task that arrives during the warm-up waits for the import lock of the
  module being imported, so the work is never done twice;
* the embedded worker thread of ``loupe_serve`` calls :func:`worker_warmup` before it starts
  consuming (it runs once per process; a second call returns at once).

``LOUPE_WORKER_WARMUP=0`` turns it off (a worker that only imports and exports, for example).
"""
from __future__ import annotations

import logging
import threading
import time

log = logging.getLogger(__name__)

_lock = threading.Lock()
_done = False


def worker_warmup() -> float | None:
    """Import torch and the strategies, fit and apply a tiny head.  Returns the seconds it took,
    or None when this process was warmed up before (or warm-up is turned off)."""
    global _done
    from django.conf import settings  # noqa: PLC0415

    if not getattr(settings, "LOUPE_WORKER_WARMUP", True):
        return None
    with _lock:
        if _done:
            return None
        t = time.perf_counter()
        import numpy as np  # noqa: PLC0415

        import selection.quality.correctness  # noqa: PLC0415 - the round's quality step (services/quality_scores.py)
        import selection.strategies  # noqa: F401, PLC0415 - registers every strategy (imports their modules)
        from selection.head import LogisticHead  # noqa: PLC0415 - imports torch

        rng = np.random.default_rng(0)
        X = rng.normal(size=(64, 8)).astype(np.float32)
        y = np.arange(64) % 4
        head = LogisticHead(4, device=settings.SELECTION_DEVICE, random_state=0).fit(X, y)
        head.predict_proba(X)
        _done = True
        seconds = time.perf_counter() - t
    log.info("worker warmed up in %.2f s (torch imported, head fitted once)", seconds)
    return seconds


def worker_warmup_in_background() -> threading.Thread:
    """Run :func:`worker_warmup` in a daemon thread (from Celery's ``worker_process_init``)."""
    thread = threading.Thread(target=worker_warmup, name="loupe-warmup", daemon=True)
    thread.start()
    return thread
