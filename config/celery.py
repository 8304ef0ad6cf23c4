"""Celery application (``celery -A config worker``)."""
from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init, worker_ready

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("loupe")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _warm_up_worker(**_kwargs) -> None:
    """Import torch and fit the head once in every pool process, in a thread (annotate/warmup.py)."""
    from annotate.warmup import worker_warmup_in_background  # noqa: PLC0415 - Django is set up by now

    worker_warmup_in_background()


@worker_ready.connect
def _start_sweeper(**_kwargs) -> None:
    """Sweep once at start-up (rounds and jobs a killed worker left behind), then every
    LOUPE_SWEEP_SECONDS in a thread of the worker's main process (annotate/services/liveness.py)."""
    from annotate.services.liveness import start_sweeper, sweep_safely  # noqa: PLC0415

    report = sweep_safely()
    if report:
        import logging  # noqa: PLC0415

        logging.getLogger("loupe.sweeper").warning("start-up sweep: %s", report)
    start_sweeper()
