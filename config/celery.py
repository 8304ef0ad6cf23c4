"""Celery application (``celery -A config worker``)."""
from __future__ import annotations

import os

from celery import Celery
from celery.signals import worker_process_init

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("loupe")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@worker_process_init.connect
def _warm_up_worker(**_kwargs) -> None:
    """Import torch and fit the head once in every pool process, in a thread (annotate/warmup.py)."""
    from annotate.warmup import worker_warmup_in_background  # noqa: PLC0415 - Django is set up by now

    worker_warmup_in_background()
