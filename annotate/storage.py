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


# --------------------------------------------------------------------------- images for browsers
#: Formats an import accepts but browsers do not all show (Chromium and Firefox decode no TIFF: the
#: labeling page showed a broken image).  The pages get a PNG copy made beside the file on first use;
#: exports keep the original.
BROWSER_COPY_SUFFIXES = frozenset({".tif", ".tiff"})


def display_relpath(relative: str) -> str:
    """The MEDIA_ROOT-relative file a browser is sent for an item's image ``relative``: the file itself,
    or for a TIFF a PNG copy beside it (``<file>.png``; its first page), written here the first time.
    A missing or unreadable original gives ``relative`` back (the image views then answer 404)."""
    if Path(relative).suffix.lower() not in BROWSER_COPY_SUFFIXES:
        return relative
    copy = relative + ".png"
    dest = media_path(copy)
    if dest.exists():
        return copy
    try:
        _write_png_copy(media_path(relative), dest)
    except (OSError, ValueError) as exc:
        import logging  # noqa: PLC0415

        logging.getLogger(__name__).warning("no PNG copy of %s: %s", relative, exc)
        return relative
    return copy


def _write_png_copy(src: Path, dest: Path) -> None:
    import os  # noqa: PLC0415
    import threading  # noqa: PLC0415

    from PIL import Image  # noqa: PLC0415 - Pillow only when a TIFF is shown

    with Image.open(src) as im:  # checked at import (format, pixel count, a full decode)
        im.seek(0)
        if im.mode in ("1", "L", "LA", "P", "RGB", "RGBA"):
            view = im.copy()
        elif im.mode.startswith(("I", "F")):  # 16/32-bit integer or float samples: stretched to 0..255
            a = np.asarray(im, dtype=np.float64)
            lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
            scaled = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
            view = Image.fromarray(np.nan_to_num(scaled).astype(np.uint8), mode="L")
        else:  # CMYK, YCbCr, LAB, ...
            view = im.convert("RGB")
    tmp = dest.with_name(f"{dest.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    view.save(tmp, "PNG")
    os.replace(tmp, dest)  # atomic: a second request at the same moment writes the same copy
