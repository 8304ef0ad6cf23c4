"""What the in-process app benchmarks (``million.py``, ``round_speed.py``) share: this process set up as a
Loupe app process on throwaway storage, and labels taken from the ground truth."""
from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def app_env(prefix: str, *, database_url: str | None = None) -> Path:
    """Point this process at a new temporary folder (``LOUPE_VAR_DIR``: media, the SQLite file) and at
    ``database_url`` (None: the embedded SQLite database there), with no broker, so tasks run in the
    process.  Call before :func:`django_ready`; remove the folder with :func:`app_cleanup`."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    os.environ.update(LOUPE_VAR_DIR=str(tmp), DJANGO_SETTINGS_MODULE="config.settings")
    os.environ.pop("CELERY_BROKER_URL", None)
    if database_url is None:
        os.environ.pop("DATABASE_URL", None)
    else:
        os.environ["DATABASE_URL"] = database_url
    return tmp


def django_ready() -> None:
    """Set Django up for the environment :func:`app_env` made, and migrate its database."""
    sys.path.insert(0, str(ROOT))
    import django  # noqa: PLC0415

    django.setup()
    from django.core.management import call_command  # noqa: PLC0415

    call_command("migrate", verbosity=0)


def app_cleanup(tmp: Path) -> None:
    shutil.rmtree(tmp, ignore_errors=True)


def bench_user():
    from django.contrib.auth import get_user_model  # noqa: PLC0415

    return get_user_model().objects.create_user(username="bench", password="x")


def label_from_truth(items, user) -> int:
    """``user``'s current label on each item: its ground truth (as a perfect annotator); returns how many."""
    from annotate.models import Annotation  # noqa: PLC0415
    from annotate.services.label_counts import label_counts_recount_many  # noqa: PLC0415

    rows = [Annotation(item=it, annotator=user, action=Annotation.Action.LABEL, label=it.ground_truth,
                       is_current=True) for it in items]
    Annotation.objects.bulk_create(rows)
    # rows written past the label services: recount the kept label counts (services/label_counts.py)
    label_counts_recount_many(project_ids={it.project_id for it in items})
    return len(rows)
