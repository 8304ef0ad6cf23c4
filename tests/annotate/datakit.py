"""Small builders for the data-in/out tests: image files, folders, zips (rows: tests/factories.py)."""
from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

from annotate.models import Annotation, Item, Project

FORMATS = {".png": "PNG", ".jpg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tiff": "TIFF"}


def image_bytes(seed: int, ext: str = ".png", size: int = 8) -> bytes:
    """A small distinct image (content depends on ``seed``) in the format of ``ext``."""
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    buf = io.BytesIO()
    kw = {"lossless": True} if ext == ".webp" else {}
    Image.fromarray(arr, "RGB").save(buf, FORMATS[ext], **kw)
    return buf.getvalue()


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for rel, data in files.items():
            zf.writestr(rel, data)
    return path


def class_tree(n_per_class: int = 3, classes=("cat", "dog"), start_seed: int = 0) -> dict[str, bytes]:
    exts = list(FORMATS)
    files = {}
    seed = start_seed
    for c in classes:
        for i in range(n_per_class):
            ext = exts[seed % len(exts)]
            files[f"{c}/img{i}{ext}"] = image_bytes(seed, ext)
            seed += 1
    return files


def db_snapshot(project) -> dict:
    """Everything an import may touch, to compare before/after a rejected import."""
    p = Project.objects.get(pk=project.pk)
    return {
        "items": sorted(Item.objects.filter(project=p).values_list("checksum", "row", "ground_truth", "file")),
        "annotations": sorted(Annotation.objects.filter(item__project=p).values_list("item_id", "label", "action")),
        "project": (list(p.classes), p.extractor, p.embedding_version, p.embedding_file, p.embedding_dim),
    }


def media_files(media_root: Path) -> list[str]:
    return sorted(str(p.relative_to(media_root)) for p in media_root.rglob("*") if p.is_file())


def imported_project(tmp_path: Path, n: int):
    """A two-class project (``factories.empty_project``) holding ``n`` distinct images, imported."""
    from annotate.services.imports import ImportOptions, import_images  # noqa: PLC0415
    from tests.factories import empty_project  # noqa: PLC0415

    src = write_tree(tmp_path / "src", {f"{i:02d}.png": image_bytes(i) for i in range(n)})
    project = empty_project()
    import_images(project=project, options=ImportOptions(source=str(src)))
    return project
