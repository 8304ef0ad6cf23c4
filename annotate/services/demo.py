"""The demo project: scikit-learn's bundled handwritten digits (1,797 images of 8x8 pixels, 10 classes).

Images are written as PNGs upscaled with nearest-neighbour sampling (each source pixel becomes a
sharp square, dark ink on white) so a person can read them; the embeddings are the 64 pixel
values standardised per pixel (zero mean, unit variance; constant pixels left at zero), saved as
the project's float32 ``.npy``; the true digit goes to ``Item.ground_truth`` (evaluation only,
never shown as a label).  Classes are ordered like the keyboard's number row, "1".."9" then "0",
so the key of each class is its own digit.

Building is idempotent: a second run finds the project complete and changes nothing; a run
interrupted half-way is completed by the next one.
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass

import numpy as np
from django.db import transaction
from selection import DEFAULT_PARAMS, DEFAULT_STRATEGY

from .. import storage
from ..models import Item, Project
from .item_counts import item_counts_add

DEMO_NAME = "Digits demo"
DEMO_CLASSES = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"]
EXTRACTOR = "pixels"
EMBEDDING_VERSION = 1


@dataclass
class DemoResult:
    project: Project
    created_items: int
    wrote_embeddings: bool


def _digit_png(pixels: np.ndarray, size: int) -> bytes:
    from PIL import Image  # noqa: PLC0415

    # sklearn's digits hold ink intensity 0..16; show dark ink on a white ground.
    gray = (255 - np.clip(pixels, 0, 16) * (255 / 16)).round().astype(np.uint8)
    img = Image.fromarray(gray, mode="L").resize((size, size), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=False)
    return buf.getvalue()


def standardised_pixels(images: np.ndarray) -> np.ndarray:
    """(n, 8, 8) intensities -> (n, 64) float32, each pixel at zero mean and unit variance."""
    X = images.reshape(len(images), -1).astype(np.float64)
    mu = X.mean(axis=0)
    sd = X.std(axis=0)
    sd[sd == 0] = 1.0
    return ((X - mu) / sd).astype(np.float32)


def demo_build(*, name: str = DEMO_NAME, size: int = 128, limit: int | None = None,
               batch_size: int = 20, refill_threshold: int = 10) -> DemoResult:
    """Create (or complete) the digits project; returns what was added."""
    from sklearn.datasets import load_digits  # noqa: PLC0415

    if size < 8 or size > 1024:
        raise ValueError(f"size={size} must be between 8 and 1024 pixels")
    digits = load_digits()
    images, target = digits.images, digits.target
    if limit is not None:
        if limit < 10:
            raise ValueError(f"limit={limit} must be at least 10")
        images, target = images[:limit], target[:limit]
    project, _ = Project.objects.get_or_create(
        name=name,
        defaults=dict(
            description="Handwritten digits (scikit-learn's bundled copy of the UCI set), 8x8 pixels upscaled.",
            classes=DEMO_CLASSES,
            strategy=DEFAULT_STRATEGY,
            strategy_params=dict(DEFAULT_PARAMS),
            batch_size=batch_size,
            refill_threshold=refill_threshold,
            extractor=EXTRACTOR,
        ),
    )
    # Embeddings first: the file is complete before any row points at it.
    rel = storage.embedding_relpath(project, EXTRACTOR, EMBEDDING_VERSION)
    path = storage.media_path(rel)
    X = standardised_pixels(images)
    wrote = False
    if not path.exists() or np.load(path, mmap_mode="r").shape != X.shape:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp.npy")
        np.save(tmp, X)
        tmp.replace(path)
        wrote = True
    if (project.embedding_file, project.embedding_version, project.embedding_dim) != (rel, EMBEDDING_VERSION, 64):
        project.embedding_file, project.embedding_version, project.embedding_dim = rel, EMBEDDING_VERSION, 64
        project.save(update_fields=["embedding_file", "embedding_version", "embedding_dim", "updated_at"])

    have = set(Item.objects.filter(project=project).values_list("row", flat=True))
    img_dir = storage.images_dir(project)
    img_dir.mkdir(parents=True, exist_ok=True)
    new_items = []
    for row, (pixels, label) in enumerate(zip(images, target)):
        if row in have:
            continue
        data = _digit_png(pixels, size)
        fname = f"digit-{row:04d}.png"
        (img_dir / fname).write_bytes(data)
        new_items.append(Item(
            project=project,
            file=f"projects/{project.pk}/images/{fname}",
            original_name=fname,
            checksum=hashlib.sha256(data).hexdigest(),
            row=row,
            width=size,
            height=size,
            ground_truth=str(int(label)),
        ))
    with transaction.atomic():
        Item.objects.bulk_create(new_items, batch_size=500)
        item_counts_add(project_id=project.pk, items=len(new_items), embedded=len(new_items))
    return DemoResult(project, len(new_items), wrote)
