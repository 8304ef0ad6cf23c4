"""Where files live under MEDIA_ROOT.  Nothing under MEDIA_ROOT is served publicly."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from django.conf import settings

from .models import Project


def media_path(relative: str) -> Path:
    """Absolute path of a MEDIA_ROOT-relative path, refusing anything that escapes MEDIA_ROOT."""
    root = Path(settings.MEDIA_ROOT).resolve()
    p = (root / relative).resolve()
    if root != p and root not in p.parents:
        raise ValueError(f"path {relative!r} escapes MEDIA_ROOT")
    return p


def project_dir(project: Project) -> Path:
    return Path(settings.MEDIA_ROOT) / "projects" / str(project.pk)


def images_dir(project: Project) -> Path:
    return project_dir(project) / "images"


def embedding_relpath(project: Project, extractor: str, version: int) -> str:
    return f"projects/{project.pk}/embeddings/{extractor}-v{version}.npy"


def models_dir(project: Project) -> Path:
    return project_dir(project) / "models"


def cache_dir(project: Project) -> Path:
    """Per-project cache (e.g. Cluster-Margin's clustering, keyed by embedding version inside)."""
    return project_dir(project) / "cache"


def exports_dir(project: Project) -> Path:
    return project_dir(project) / "exports"


def load_embeddings(project: Project) -> np.ndarray:
    """The project's current embedding matrix, memory-mapped read-only: (N, d) float32."""
    if not project.embedding_file:
        raise FileNotFoundError(f"project {project.pk} has no embeddings yet; compute them first")
    return np.load(media_path(project.embedding_file), mmap_mode="r")
