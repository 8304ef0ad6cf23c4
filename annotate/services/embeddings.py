"""Computing a project's embeddings with a feature extractor (``selection.extractors``).

Each computation writes a new version file ``projects/<id>/embeddings/<extractor>-v<version>.npy``
(float32, one row per item in id order; with PCA, the fitted axes beside it as ``...-v<version>.pca.npz``),
then in one transaction points every item at its row and the project at the new file.  Cached
clusterings (Cluster-Margin keys them by embedding version under ``storage.cache_dir``) are dropped,
and version files older than the previous one are deleted (the previous one is kept for a round
that may still be reading it).

Long runs keep chunked checkpoints under ``embeddings/partial/<fingerprint>``; the fingerprint covers
the extractor, its parameters, the model file and the item list, so a killed job run again (the
broker redelivers it, or the admin re-embeds with the same settings) resumes where it stopped.

Who may configure what (no uploaded file may run code on a worker): nobody may configure or run a
retired extractor (``torch``: a TorchScript file is a program), not even a superuser; a project set
up with it earlier keeps its embeddings and is told to export its model to ONNX.  Local server
folders as ``hf`` models are for superusers only; everyone else picks an ``hf`` model id, uploads an
``.onnx`` file or a matrix.
"""
from __future__ import annotations

import hashlib
import json
import logging
import re
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
from django.db import transaction

from selection.extractors import Checkpoint, ExtractorError, get_extractor, make_extractor
from selection.extractors.hf import is_local_path

from .. import storage
from ..models import Item, Job, Project
from . import jobs as job_services
from .item_counts import item_counts_refresh

log = logging.getLogger(__name__)


class ExtractorNotAllowed(ValueError):
    """The user may not configure this extractor (it is retired, or it would read server folders)."""


def extractor_check_allowed(*, user, name: str, params: dict[str, Any], stored: bool = False) -> None:
    """ExtractorNotAllowed unless ``user`` (None: the operator's own command line) may use this configuration.

    A retired extractor (TorchScript) is refused for everyone, the operator included, with its
    message.  ``stored``: the project's own configuration, as a superuser may have set it; re-running
    a server folder a superuser chose is fine (it runs no code).
    """
    ext = get_extractor(name)
    if ext.retired:
        raise ExtractorNotAllowed(ext.retired)
    if user is None or user.is_superuser:
        return
    if name == "hf" and not stored and is_local_path(str(params.get("model") or "")):
        raise ExtractorNotAllowed("only a superuser may point 'hf' at a folder on the server; give a model id "
                                  "(e.g. facebook/dinov2-small) that is in the workers' Hugging Face cache")


def _resolved_params(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """File parameters are stored relative to MEDIA_ROOT; the extractor gets absolute paths."""
    out = dict(params)
    for key in get_extractor(name).file_params:
        if out.get(key) and not Path(out[key]).is_absolute():
            out[key] = str(storage.media_path(out[key]))
    return out


def extractor_validate(*, name: str, params: dict[str, Any] | None, user=None, stored: bool = False) -> dict[str, Any]:
    """Validated parameters (defaults filled) of an extractor; ValueError naming the problem."""
    params = dict(params or {})
    ext = make_extractor(name, params)
    if ext.retired:  # before "needs a model file": the answer is the same with or without one
        raise ExtractorNotAllowed(ext.retired)
    for key in ext.file_params:
        if name != "precomputed" and not ext.params_[key]:
            raise ExtractorError(f"extractor {name!r} needs a model file (parameter {key!r})")
    if name == "hf" and not ext.params_["model"].strip():
        raise ExtractorError("extractor 'hf' needs a model: a Hugging Face id (e.g. facebook/dinov2-small) "
                             "or, for a superuser, the path of a model folder on the workers")
    extractor_check_allowed(user=user, name=name, params=ext.params_, stored=stored)
    return ext.params_


def embedding_request(*, project: Project, user=None, extractor: str | None = None,
                      params: dict[str, Any] | None = None) -> Job:
    """Queue an embedding job with the project's extractor (or the one given, which becomes the project's)."""
    name = extractor or project.extractor
    get_extractor(name)  # ValueError for an unknown name
    stored = params is None and name == project.extractor
    checked = extractor_validate(name=name, params=project.extractor_params if stored else params, user=user,
                                 stored=stored)
    if name == "precomputed" and not checked.get("path"):
        raise ValueError("this project's embeddings were imported (precomputed): import a new matrix, "
                         "or choose another extractor to compute them")
    job = job_services.job_create(project=project, kind=Job.Kind.EMBED,
                                  params={"extractor": name, "params": checked}, user=user)
    job_services.job_enqueue(job=job)
    return job


def embedding_fingerprint(*, extractor: str, params: dict[str, Any], items: list[tuple[int, str, str]]) -> str:
    """SHA-256 over what decides the rows: extractor, parameters, model files (size, mtime) and items."""
    h = hashlib.sha256(json.dumps({"extractor": extractor, "params": params}, sort_keys=True, default=str).encode())
    for key in get_extractor(extractor).file_params:
        value = params.get(key)
        if value and Path(value).is_file():
            st = Path(value).stat()
            h.update(f"{key}:{st.st_size}:{st.st_mtime_ns}".encode())
    for item_id, _, checksum in items:
        h.update(f"{item_id}:{checksum};".encode())
    return h.hexdigest()


def _partial_root(project: Project) -> Path:
    return storage.project_dir(project) / "embeddings" / "partial"


def embeddings_compute(*, project: Project, extractor: str, params: dict[str, Any],
                       progress: Callable[[float, str], None] | None = None) -> int:
    """Embed every item of the project; returns the new embedding version."""
    from PIL import Image  # noqa: PLC0415

    progress = progress or (lambda f, m: None)
    items = list(Item.objects.filter(project=project).order_by("id").values_list("id", "file", "checksum"))
    if not items:
        raise ExtractorError(f"project {project.pk} has no items to embed; import images first")
    resolved = _resolved_params(extractor, params)
    ext = make_extractor(extractor, resolved)
    fingerprint = embedding_fingerprint(extractor=extractor, params=resolved, items=items)
    checkpoint = Checkpoint(_partial_root(project) / fingerprint[:24], fingerprint=fingerprint)

    def load(i: int):
        with Image.open(storage.media_path(items[i][1])) as im:
            im.load()
            return im.copy()

    X = ext.extract(load, len(items), progress=lambda f, m: progress(0.95 * f, m), checkpoint=checkpoint)
    version = Project.objects.get(pk=project.pk).embedding_version + 1
    rel = storage.embedding_relpath(project, extractor, version)
    path = storage.media_path(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, np.ascontiguousarray(X, dtype=np.float32))
    tmp.replace(path)
    pca = getattr(ext, "pca_", None)
    if pca is not None:
        np.savez(path.with_suffix(".pca.npz"), **pca.state())
    try:
        with transaction.atomic():
            # FOR NO KEY UPDATE: the reference checks of labels (key-share locks) do not wait for it
            # while they hold the project's label counts (services/label_counts.py)
            p = Project.objects.select_for_update(no_key=True).get(pk=project.pk)
            # Clear first: (project, row) is unique and rows move between items.
            Item.objects.filter(project=p).update(row=None)
            objs = [Item(pk=item_id, row=r) for r, (item_id, _, _) in enumerate(items)]
            Item.objects.bulk_update(objs, ["row"], batch_size=2000)
            item_counts_refresh(project_id=p.pk)
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
        path.with_suffix(".pca.npz").unlink(missing_ok=True)
        raise
    _invalidate_caches(p, keep=[rel, previous])
    progress(1.0, f"embedded {len(items)} items ({X.shape[1]} dimensions, version {version})")
    return version


def _invalidate_caches(project: Project, keep: list[str]) -> None:
    cache = storage.cache_dir(project)
    if cache.exists():
        shutil.rmtree(cache, ignore_errors=True)  # every cached clustering belongs to an older version
    shutil.rmtree(_partial_root(project), ignore_errors=True)  # checkpoints of finished or abandoned runs
    emb_dir = storage.project_dir(project) / "embeddings"
    keep_abs = {storage.media_path(k).with_suffix("") for k in keep if k}
    for f in emb_dir.glob("*-v*.*"):
        m = re.search(r"^(.*-v\d+)(\.pca\.npz|\.npy)$", f.name)
        if m and (f.parent / m.group(1)).resolve() not in keep_abs:
            f.unlink(missing_ok=True)


def _embed(job: Job, progress: job_services.Progress) -> job_services.JobOutcome:
    version = embeddings_compute(project=job.project, extractor=job.params["extractor"],
                                 params=job.params.get("params") or {}, progress=progress)
    p = Project.objects.get(pk=job.project_id)
    result = {"embedding_version": version, "dim": p.embedding_dim, "file": p.embedding_file}
    pca_file = storage.media_path(p.embedding_file).with_suffix(".pca.npz")
    if pca_file.is_file():
        with np.load(pca_file) as z:
            result["pca"] = {"from_dim": int(z["components"].shape[1]), "to_dim": int(z["components"].shape[0]),
                             "explained_variance_ratio": round(float(z["explained_variance_ratio"].sum()), 4)}
    return job_services.JobOutcome(
        result=result, message=f"embeddings version {version} ready ({p.embedding_dim} dimensions)",
        stats_changed=True,
    )


def embedding_execute(*, job_id: str) -> Job:
    """Run an embedding job (called by its Celery task).  ``ExtractorError`` is Loupe's own message
    (names the problem, never file contents): the job fails with it."""
    return job_services.job_run(job_id=job_id, work=_embed, expected=(ExtractorError,))
