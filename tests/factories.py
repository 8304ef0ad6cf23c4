"""Rows for tests, made the way the app makes them: one ``make_user``, ``make_project`` and ``add_member``.

The fixtures of the same names in tests/conftest.py hand these out; helper modules import them.
Memberships go through the service (``services.roles.membership_set``), so the Django groups and
staff flags follow as they do in the app.
"""
from __future__ import annotations

import functools
import hashlib
import io
import itertools

import numpy as np
from django.contrib.auth import get_user_model
from PIL import Image

from annotate import storage
from annotate.models import Item, Project
from annotate.services.item_counts import item_counts_add
from annotate.services.roles import membership_set

_serial = itertools.count(1)


def make_user(username: str | None = None, *, password: str = "pw-loupe-test", superuser: bool = False, **fields):
    username = username or f"user{next(_serial)}"
    User = get_user_model()
    if superuser:
        return User.objects.create_superuser(username=username, password=password, email=f"{username}@example.com",
                                             **fields)
    return User.objects.create_user(username=username, password=password, **fields)


def add_member(project: Project, user, role: str = "annotator"):
    """Give ``user`` (a user, or a username: created when new) ``role`` in ``project``; returns the user."""
    if isinstance(user, str):
        user = get_user_model().objects.filter(username=user).first() or make_user(user)
    membership_set(project=project, user=user, role=role)
    return user


@functools.cache
def tiny_png(shade: int = 128, size: int = 4) -> bytes:
    buf = io.BytesIO()
    Image.new("L", (size, size), color=shade).save(buf, format="PNG")
    return buf.getvalue()


def clustered_embeddings(n: int, n_classes: int, dim: int, rng: np.random.Generator, spread: float = 0.6):
    """(n, dim) float32 points around one well-separated centre per class, and their class indices."""
    centres = rng.normal(size=(n_classes, dim)) * 3.0
    y = np.arange(n) % n_classes
    X = centres[y] + spread * rng.normal(size=(n, dim))
    return X.astype(np.float32), y


def make_project(*, classes=("cat", "dog", "fox"), n_items: int = 30, dim: int = 4, members=(), batch_size: int = 6,
                 refill_threshold: int = 2, strategy: str = "margin", strategy_params=None, audit_rate: float = 0.0,
                 seed: int = 0, name: str | None = None, serial: int | None = None, **fields) -> Project:
    """A project with ``n_items`` items (tiny PNGs, ground truth) and a clustered ``(n_items, dim)``
    embedding file; with ``n_items=0`` a bare project that an import fills.  ``members``: ``(user, role)``
    pairs.  ``serial`` (the n-th project of the test; the fixture counts) names the project and varies the
    embeddings.  ``project.test_X`` / ``test_y`` hold the embeddings and class indices."""
    serial = next(_serial) if serial is None else serial
    project = Project.objects.create(
        name=name or f"project {serial}", classes=list(classes), strategy=strategy,
        strategy_params=strategy_params or {}, batch_size=batch_size, refill_threshold=refill_threshold,
        audit_rate=audit_rate, seed=seed, **fields,
    )
    X, y = clustered_embeddings(n_items, max(len(classes), 1), dim, np.random.default_rng(seed + 1000 * serial))
    if n_items:
        rel = storage.embedding_relpath(project, "test", 1)
        path = storage.media_path(rel)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, X)
        project.embedding_file, project.embedding_version, project.embedding_dim = rel, 1, dim
        project.extractor = "test"
        project.save()
        img_dir = storage.images_dir(project)
        img_dir.mkdir(parents=True, exist_ok=True)
        items = []
        for row in range(n_items):
            name_ = f"img-{row:04d}.png"
            (img_dir / name_).write_bytes(tiny_png(int(y[row]) * 40 % 256))
            items.append(Item(project=project, file=f"projects/{project.pk}/images/{name_}", original_name=name_,
                              checksum=hashlib.sha256(f"{project.pk}-{row}".encode()).hexdigest(), row=row,
                              width=4, height=4, ground_truth=classes[int(y[row])]))
        Item.objects.bulk_create(items)
        item_counts_add(project_id=project.pk, items=len(items), embedded=len(items))
    for user, role in members:
        add_member(project, user, role)
    project.test_X, project.test_y = X, y  # for tests that need the ground truth arrays
    return project


def empty_project(*, classes=("cat", "dog"), name: str = "p", **fields) -> Project:
    """A bare project for the data-in/out tests, which import their own images: the model's defaults
    (strategy, batch size, refill, audit share) unless given, two classes, no items."""
    defaults = {f: Project._meta.get_field(f).get_default()
                for f in ("batch_size", "refill_threshold", "strategy", "strategy_params", "audit_rate", "seed")}
    return make_project(classes=classes, name=name, n_items=0, **{**defaults, **fields})
