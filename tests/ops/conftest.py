"""Fixtures for the production/reliability tests (tests/ops); helpers live in ops_support.py.

``world``: the projects and users of the security tests (test_security*.py).

Rows come from the shared fixtures of tests/conftest.py (``make_project``, ``make_user``, ``add_member``,
``make_round``).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from tests.ops.ops_support import seed_queue


@pytest.fixture
def world(make_project, add_member, settings):
    """Two projects; users: admin/reviewer/annotator of A, an admin of B (an outsider to A)."""
    from annotate.models import Job, Membership  # noqa: PLC0415
    from annotate.services.annotations import annotation_submit  # noqa: PLC0415
    from annotate.services.queue import queue_lease  # noqa: PLC0415

    media_root = Path(settings.MEDIA_ROOT)
    a = make_project(name="A", n_items=12, batch_size=10)
    b = make_project(name="B", n_items=3, seed=1)
    users = {
        "admin": add_member(a, "a-admin", Membership.Role.ADMIN),
        "reviewer": add_member(a, "a-reviewer", Membership.Role.REVIEWER),
        "annotator": add_member(a, "a-annotator", Membership.Role.ANNOTATOR),
        "outsider": add_member(b, "b-admin", Membership.Role.ADMIN),
    }
    # Something to undo for each member of A (so that "undo" answers them with success, not "nothing to undo").
    seed_queue(a)
    for key in ("admin", "reviewer", "annotator"):
        for _ in range(2):
            entry = queue_lease(project=a, user=users[key], n=1)[0]
            annotation_submit(project=a, user=users[key], item_id=entry.item_id, label="cat")
    export = Path(media_root) / "projects" / str(a.pk) / "exports" / "labels.json"
    export.parent.mkdir(parents=True, exist_ok=True)
    export.write_text("[]")
    job = Job.objects.create(project=a, kind=Job.Kind.EXPORT, status=Job.Status.DONE, progress=1.0,
                             result_file=str(export.relative_to(media_root)), created_by=users["admin"])
    return {"a": a, "b": b, "job": job, "item": a.items.first(), **users}


