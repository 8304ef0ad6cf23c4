"""Computing a project's embeddings with a feature extractor (``selection.extractors``).

Each computation writes a new version file ``projects/<id>/embeddings/<extractor>-v<version>.npy``
(float32, one row per item in id order), then in one transaction points every item at its row and
the project at the new file.  Cached clusterings (Cluster-Margin keys them by embedding version under
``storage.cache_dir``) are dropped, and version files older than the previous one are deleted (the
previous one is kept for a round that may still be reading it).
"""
from __future__ import annotations

import logging
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
from django.db import transaction

from selection.extractors import get_extractor, make_extractor

from .. import storage
from ..models import Item, Job, Project
from . import jobs as job_services

log = logging.getLogger(__name__)

PATH_PARAMS = ("path",)  # extractor parameters holding a file; stored relative to MEDIA_ROOT


def _resolved_params(params: dict[str, Any]) -> dict[str, Any]:
    out = dict(params)
    for key in PATH_PARAMS:
        if out.get(key) and not Path(out[key]).is_absolute():
            out[key] = str(storage.media_path(out[key]))
    return out


def extractor_validate(*, name: str, params: dict[str, Any] | None) -> dict[str, Any]:
    """Validated parameters (defaults filled) of an extractor; ValueError naming the problem."""
    params = dict(params or {})
    ext = make_extractor(name, params)
    if "path" in ext.params_ and name != "precomputed" and not ext.params_["path"]:
        raise ValueError(f"extractor {name!r} needs a model file (parameter 'path')")
    return ext.params_


def embedding_request(*, project: Project, user=None, extractor: str | None = None,
                      params: dict[str, Any] | None = None) -> Job:
    """Queue an embedding job with the project's extractor (or the one given, which becomes the project's)."""
    name = extractor or project.extractor
    get_extractor(name)  # ValueError for an unknown name
    checked = extractor_validate(name=name, params=params if params is not None else project.extractor_params)
    if name == "precomputed" and not checked.get("path"):
        raise ValueError("this project's embeddings were imported (precomputed): import a new matrix, "
                         "or choose another extractor to compute them")
    job = job_services.job_create(project=project, kind=Job.Kind.EMBED,
                                  params={"extractor": name, "params": checked}, user=user)
    job_services.job_enqueue(job=job)
    return job


def embeddings_compute(*, project: Project, extractor: str, params: dict[str, Any],
                       progress: Callable[[float, str], None] | None = None) -> int:
    """Embed every item of the project; returns the new embedding version."""
    from PIL import Image  # noqa: PLC0415

    progress = progress or (lambda f, m: None)
    items = list(Item.objects.filter(project=project).order_by("id").values_list("id", "file"))
    if not items:
        raise ValueError(f"project {project.pk} has no items to embed; import images first")
    ext = make_extractor(extractor, _resolved_params(params))

    def load(i: int):
        with Image.open(storage.media_path(items[i][1])) as im:
            im.load()
            return im.copy()

    X = ext.extract(load, len(items), progress=lambda f, m: progress(0.95 * f, m))
    version = Project.objects.get(pk=project.pk).embedding_version + 1
    rel = storage.embedding_relpath(project, extractor, version)
    path = storage.media_path(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, np.ascontiguousarray(X, dtype=np.float32))
    tmp.replace(path)
    try:
        with transaction.atomic():
            p = Project.objects.select_for_update().get(pk=project.pk)
            # Clear first: (project, row) is unique and rows move between items.
            Item.objects.filter(project=p).update(row=None)
            objs = [Item(pk=item_id, row=r) for r, (item_id, _) in enumerate(items)]
            Item.objects.bulk_update(objs, ["row"], batch_size=2000)
            previous = p.embedding_file
            p.extractor = extractor
            p.extractor_params = params
            p.embedding_version = version
            p.embedding_file = rel
            p.embedding_dim = int(X.shape[1])
            p.save(update_fields=["extractor", "extractor_params", "embedding_version", "embedding_file",
                                  "embedding_dim", "updated_at"])
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    _invalidate_caches(p, keep=[rel, previous])
    progress(1.0, f"embedded {len(items)} items ({X.shape[1]} dimensions, version {version})")
    return version


def _invalidate_caches(project: Project, keep: list[str]) -> None:
    cache = storage.cache_dir(project)
    if cache.exists():
        shutil.rmtree(cache, ignore_errors=True)  # every cached clustering belongs to an older version
    emb_dir = storage.project_dir(project) / "embeddings"
    keep_abs = {storage.media_path(k) for k in keep if k}
    for f in emb_dir.glob("*-v*.npy"):
        if re.search(r"-v\d+\.npy$", f.name) and f.resolve() not in keep_abs:
            f.unlink(missing_ok=True)


def _embed(job: Job, progress: job_services.Progress) -> job_services.JobOutcome:
    version = embeddings_compute(project=job.project, extractor=job.params["extractor"],
                                 params=job.params.get("params") or {}, progress=progress)
    p = Project.objects.get(pk=job.project_id)
    return job_services.JobOutcome(
        result={"embedding_version": version, "dim": p.embedding_dim, "file": p.embedding_file},
        message=f"embeddings version {version} ready ({p.embedding_dim} dimensions)", stats_changed=True,
    )


def embedding_execute(*, job_id: str) -> Job:
    """Run an embedding job (called by its Celery task); a bad extractor set-up fails it with the reason."""
    return job_services.job_run(job_id=job_id, work=_embed, expected=(ValueError,))
