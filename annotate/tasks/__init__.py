"""Celery tasks.  Task names are explicit ("annotate.tasks.<name>") so routes in settings stay stable,
and services send them by name (``services.dispatch.enqueue_after_commit``): tasks import services, not the reverse.

- ``rounds``: ``round_run`` (queue ``gpu``): train the head, select the next batch.
- ``quality``: ``quality_refresh`` (queue ``cpu``): consensus, agreement, annotator accuracies.
- ``jobs``:   ``import_run``, ``export_run`` (queue ``cpu``), ``embedding_compute``, ``alignment_run``,
  ``final_model_run`` (queue ``gpu``).
"""
from . import jobs, quality, rounds

__all__ = ["jobs", "quality", "rounds"]
