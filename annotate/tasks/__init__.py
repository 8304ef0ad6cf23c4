"""Celery tasks.  Task names are explicit ("annotate.tasks.<name>") so routes in settings stay stable.

- ``rounds``: ``round_run`` (queue ``gpu``): train the head, select the next batch.
- ``quality``: ``quality_refresh`` (queue ``cpu``): consensus, agreement, annotator accuracies.
- ``jobs``:   ``import_run``, ``export_run`` (queue ``cpu``), ``embedding_compute`` (queue ``gpu``).
"""
import importlib

for _mod in ("rounds", "jobs", "quality"):
    try:
        importlib.import_module(f"{__name__}.{_mod}")
    except ModuleNotFoundError as exc:  # a module not written yet is skipped; any other import error is raised
        if exc.name != f"{__name__}.{_mod}":
            raise
