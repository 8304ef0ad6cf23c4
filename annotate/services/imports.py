"""Importing images into a project: folder or zip, optional manifest, labels and embeddings.

An import either lands whole or not at all, apart from files it reports as skipped:

1. *Plan*: list the candidate files (folder walk or zip listing; zip entries that escape the
   target folder and archives over ``LOUPE_MAX_UPLOAD_BYTES`` reject the whole import), read the
   manifest (CSV / JSON / Label Studio / COCO; a path, ``file://`` or ``http(s)://`` URL), check
   every label against the project's classes and the embedding matrix's shape and values.  Any
   problem here raises :class:`ImportRejected` before a byte is written.
2. *Stage*: each file is size-checked, hashed (SHA-256), verified with Pillow (``verify`` then a
   full ``load``) and written to a staging folder.  Unreadable files and duplicates are reported
   by name and skipped.
3. *Commit*: in one transaction the items, pre-labels, classes and the new embedding version are
   written and the staged files moved to their content-addressed place; if anything fails the
   moved files and the new embedding file are removed again.  The staging folder always goes.

Re-running an import is safe: files whose checksum the project already has are skipped.
"""
from __future__ import annotations

import hashlib
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from .. import storage
from ..models import Annotation, Item, Job, Project
from . import jobs as job_services
from .import_plan import import_embeddings_load, import_plan
from .import_sources import ImportRejected, _Entry, check_image
from .import_sources import check_public_url, class_labels  # noqa: F401 - this module's API (forms, tests)
from .item_counts import item_counts_add
from .keymap import keymap_sync
from .label_counts import label_counts_add

log = logging.getLogger(__name__)

LABELS_AS = ("ground_truth", "prelabels")
IMPORT_USERNAME = "loupe-import"
_MAX_REPORTED_SKIPS = 1000


@dataclass
class ImportOptions:
    """What to import.  Paths are on the server; the admin page saves uploads first.

    source      : a folder or a .zip of images ("" when the manifest alone lists the images).
    manifest    : CSV/JSON manifest: a path, file:// or http(s):// URL ("" for none).
    embeddings  : .npy matrix, one row per manifest row (or per image file in sorted path order).
    class_folders : read ``<class>/<file>`` (the first folder under the root) as the label.
    labels_as   : "ground_truth" (kept apart, for evaluation) or "prelabels" (annotations).
    server_paths : whether a manifest may name files on the server (absolute paths, ``..``,
                  ``file://``).  Off for imports started by project admins who are not superusers:
                  their manifest may only name files inside the uploaded zip/folder or http(s) URLs.
    """

    source: str = ""
    manifest: str = ""
    embeddings: str = ""
    class_folders: bool = False
    labels_as: str = "ground_truth"
    server_paths: bool = True

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ImportOptions":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known - {"cleanup_dir"})
        if unknown:
            raise ImportRejected(f"unknown import option(s) {unknown}; allowed: {sorted(known)}")
        opts = cls(**{k: v for k, v in data.items() if k in known})
        if opts.labels_as not in LABELS_AS:
            raise ImportRejected(f"labels_as={opts.labels_as!r} is not one of {list(LABELS_AS)}")
        if not opts.source and not opts.manifest:
            raise ImportRejected("nothing to import: give a folder or zip of images, or a manifest listing images")
        if opts.embeddings and not os.path.isfile(opts.embeddings):
            raise ImportRejected(f"embeddings file {opts.embeddings!r} does not exist")
        if opts.source and not os.path.exists(opts.source):
            raise ImportRejected(f"source {opts.source!r} does not exist (a folder or a .zip of images)")
        return opts

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass
class ImportResult:
    imported: int = 0
    already_present: int = 0
    skipped: list[dict[str, str]] = field(default_factory=list)
    skipped_count: int = 0
    classes: list[str] = field(default_factory=list)
    new_classes: list[str] = field(default_factory=list)
    embedding_version: int | None = None
    embedding_job: str | None = None
    embedding_error: str = ""
    embeddings_replaced: str = ""

    def skip(self, name: str, reason: str) -> None:
        self.skipped_count += 1
        if len(self.skipped) < _MAX_REPORTED_SKIPS:
            self.skipped.append({"name": name, "reason": reason})

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _import_user(job_user):
    if job_user is not None:
        return job_user
    User = get_user_model()
    user, created = User.objects.get_or_create(username=IMPORT_USERNAME, defaults={"is_active": False})
    if created:
        user.set_unusable_password()
        user.save(update_fields=["password"])
    return user


# ----------------------------------------------------------------------------- the import
def import_images(
    *, project: Project, options: ImportOptions, user=None, job_id: str | None = None,
    progress: Callable[[float, str], None] | None = None,
) -> ImportResult:
    """Run an import (see the module docstring).  Raises ImportRejected, leaving the database unchanged."""
    progress = progress or (lambda f, m: None)
    project = Project.objects.get(pk=project.pk)  # the caller's copy may be stale
    result = ImportResult()
    entries, ignored, closer = import_plan(project, options)
    try:
        for name, reason in ignored:
            result.skip(name, reason)
        X, conflict = import_embeddings_load(project, options, len(entries))
        progress(0.05, f"checking {len(entries)} files")
        staging = storage.project_dir(project) / "staging" / (job_id or uuid.uuid4().hex)
        staging.mkdir(parents=True, exist_ok=True)
        try:
            present: dict[str, int] = {}
            staged = _stage(project, entries, staging, result, progress, present=present)
            replace = _replacement(project, conflict, present) if X is not None and conflict else None
            return _commit(project, options, staged, X, staging, result, user, progress, replace=replace)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    finally:
        if closer is not None:
            closer.close()


@dataclass
class _Staged:
    entry: _Entry
    checksum: str
    ext: str
    width: int
    height: int


def _stage(project, entries, staging: Path, result: ImportResult, progress,
           present: dict[str, int] | None = None) -> list[_Staged]:
    """Check and stage the new files; ``present`` gets the embedding row of each file the project
    already has (checksum -> row of the import's matrix)."""
    limit = settings.LOUPE_MAX_IMAGE_BYTES
    existing = set(Item.objects.filter(project=project).values_list("checksum", flat=True))
    seen: dict[str, str] = {}
    staged: list[_Staged] = []
    n = len(entries)
    for k, e in enumerate(entries):
        if k % 20 == 0:
            progress(0.05 + 0.8 * k / n, f"checked {k}/{n} files")
        if e.size is not None and e.size > limit:
            result.skip(e.name, f"larger than LOUPE_MAX_IMAGE_BYTES={limit} bytes")
            continue
        try:
            data = e.read(limit + 1)
        except (OSError, ImportRejected) as exc:
            result.skip(e.name, f"cannot be read: {getattr(exc, 'strerror', None) or exc}")
            continue
        if len(data) > limit:
            result.skip(e.name, f"larger than LOUPE_MAX_IMAGE_BYTES={limit} bytes")
            continue
        checksum = hashlib.sha256(data).hexdigest()
        if checksum in existing:
            result.already_present += 1
            if present is not None and e.emb_row is not None:
                present.setdefault(checksum, e.emb_row)
            continue
        if checksum in seen:
            result.skip(e.name, f"duplicate of {seen[checksum]!r} (same SHA-256)")
            continue
        try:
            ext, width, height = check_image(data)
        except ValueError as exc:
            result.skip(e.name, str(exc))
            continue
        seen[checksum] = e.name
        (staging / (checksum + ext)).write_bytes(data)
        staged.append(_Staged(e, checksum, ext, width, height))
    progress(0.85, f"{len(staged)} new images checked")
    return staged


def _replacement(project: Project, conflict: str, present: dict[str, int]) -> dict[str, int]:
    """The import's rows for the project's items when its matrix replaces their embeddings; or
    ImportRejected saying why it cannot (``conflict``) and what to do, when some item has no row."""
    have = set(Item.objects.filter(project=project).values_list("checksum", flat=True))
    missing = len(have - set(present))
    if missing:
        raise ImportRejected(
            f"{conflict}, and one project cannot mix two kinds of embeddings. To use yours, import every "
            f"image of the project again together with this import's images and one .npy row for each "
            f"(images already in the project are recognised by their content and only take their row); "
            f"this import lacks {missing} of the project's {len(have)} images. Or import without the .npy: "
            f"the new images are then embedded like the others")
    return {c: present[c] for c in have}


def _commit(project, opts, staged, X, staging, result, user, progress, *,
            replace: dict[str, int] | None = None) -> ImportResult:
    moved: list[Path] = []
    new_emb: Path | None = None
    try:
        with transaction.atomic():
            # FOR NO KEY UPDATE: one import at a time, yet the reference checks of other transactions
            # (a first label inserting its counts row, an overlap copy) do not wait for it while they
            # hold the label counts this import waits for (services/label_counts.py)
            project = Project.objects.select_for_update(no_key=True).get(pk=project.pk)
            # A concurrent import may have landed the same files meanwhile.
            taken = set(Item.objects.filter(project=project, checksum__in=[s.checksum for s in staged])
                        .values_list("checksum", flat=True))
            if taken:
                result.already_present += len(taken)
                staged = [s for s in staged if s.checksum not in taken]
            labels = sorted({s.entry.label for s in staged if s.entry.label})
            if not project.classes and labels:
                project.classes = labels
                result.new_classes = labels
            result.classes = list(project.classes)

            rows = None
            if replace is not None:
                before = f"{project.extractor!r} embeddings ({project.embedding_dim} columns)"
                new_emb, rows = _replace_embeddings(project, X, replace, [s.entry.emb_row for s in staged])
                result.embedding_version = project.embedding_version
                result.embeddings_replaced = (f"replaced the project's {before} with the imported ones "
                                              f"({project.embedding_dim} columns), version {project.embedding_version}")
            elif X is not None and staged:
                new_emb, rows = _write_embeddings(project, X, [s.entry.emb_row for s in staged])
                result.embedding_version = project.embedding_version

            items = []
            for k, s in enumerate(staged):
                rel = f"projects/{project.pk}/images/{s.checksum[:2]}/{s.checksum}{s.ext}"
                items.append(Item(
                    project=project, file=rel, original_name=s.entry.name[:500], checksum=s.checksum,
                    width=s.width, height=s.height, row=None if rows is None else rows[k],
                    ground_truth=s.entry.label if opts.labels_as == "ground_truth" else "",
                ))
            Item.objects.bulk_create(items, batch_size=1000)
            item_counts_add(project_id=project.pk, items=len(items),
                            embedded=sum(it.row is not None for it in items))
            if opts.labels_as == "prelabels":
                annotator = _import_user(user)
                fresh = Item.objects.filter(project=project, checksum__in=[s.checksum for s in staged])
                created = {i.checksum: i for i in fresh}
                prelabels = Annotation.objects.bulk_create(
                    [Annotation(item=created[s.checksum], annotator=annotator, action=Annotation.Action.LABEL,
                                label=s.entry.label, origin=Annotation.Origin.PRELABEL)
                     for s in staged if s.entry.label],
                    batch_size=1000,
                )
                # new items, one label each: as many labeled items (services/label_counts.py)
                label_counts_add(project_id=project.pk, labeled=len(prelabels), mine={annotator.pk: len(prelabels)})
            project.save()
            keymap_sync(project=project)  # classes set by this import get their keys now, fixed from here on
            progress(0.95, "moving files into place")
            for s in staged:
                dest = storage.media_path(f"projects/{project.pk}/images/{s.checksum[:2]}/{s.checksum}{s.ext}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                if not dest.exists():
                    os.replace(staging / (s.checksum + s.ext), dest)
                    moved.append(dest)
            result.imported = len(staged)
    except BaseException:
        for p in moved:
            p.unlink(missing_ok=True)
        if new_emb is not None:
            new_emb.unlink(missing_ok=True)
        raise
    progress(1.0, f"imported {result.imported} images")
    return result


def _write_embeddings(project: Project, X: np.ndarray, emb_rows: list[int]) -> tuple[Path, list[int]]:
    """Write the next precomputed version: the old rows followed by the new ones.  Updates ``project``."""
    old = None
    n_old = 0
    if project.embedding_file and project.items.filter(row__isnull=False).exists():
        old = storage.load_embeddings(project)
        n_old = old.shape[0]
    version = project.embedding_version + 1
    rel = storage.embedding_relpath(project, "precomputed", version)
    path = storage.media_path(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n_old + len(emb_rows), X.shape[1]))
    for a in range(0, n_old, 8192):
        b = min(a + 8192, n_old)
        out[a:b] = old[a:b]
    idx = np.asarray(emb_rows, dtype=np.int64)
    for a in range(0, len(idx), 8192):
        out[n_old + a:n_old + a + 8192] = X[idx[a:a + 8192]]
    out.flush()
    del out
    project.extractor = "precomputed"
    project.extractor_params = {}
    project.embedding_version = version
    project.embedding_file = rel
    project.embedding_dim = int(X.shape[1])
    return path, list(range(n_old, n_old + len(emb_rows)))


def _replace_embeddings(project: Project, X: np.ndarray, present: dict[str, int],
                        emb_rows: list[int]) -> tuple[Path, list[int]]:
    """Write the next precomputed version from the import's matrix alone: the project's items first (in
    id order, each its row of ``X`` by checksum; their ``row`` is updated here), then the new ones.
    Updates ``project`` (extractor ``precomputed``) like :func:`_write_embeddings`."""
    items = list(Item.objects.filter(project=project).order_by("id").only("id", "checksum", "row", "original_name"))
    lacking = [it.original_name for it in items if it.checksum not in present]
    if lacking:  # imported by another import meanwhile
        raise ImportRejected(f"{len(lacking)} image(s) joined the project during this import (first "
                             f"{lacking[0]!r}) and have no row in it: run the import again")
    version = project.embedding_version + 1
    rel = storage.embedding_relpath(project, "precomputed", version)
    path = storage.media_path(rel)
    path.parent.mkdir(parents=True, exist_ok=True)
    order = np.asarray([present[it.checksum] for it in items] + list(emb_rows), dtype=np.int64)
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(len(order), X.shape[1]))
    for a in range(0, len(order), 8192):
        out[a:a + 8192] = X[order[a:a + 8192]]
    out.flush()
    del out
    unembedded = 0
    for k, it in enumerate(items):
        unembedded += it.row is None
        it.row = k
    Item.objects.filter(project=project).update(row=None)  # first: (project, row) is unique, rows move
    Item.objects.bulk_update(items, ["row"], batch_size=1000)
    if unembedded:
        item_counts_add(project_id=project.pk, items=0, embedded=unembedded)
    project.extractor = "precomputed"
    project.extractor_params = {}
    project.embedding_version = version
    project.embedding_file = rel
    project.embedding_dim = int(X.shape[1])
    return path, list(range(len(items), len(order)))


# ----------------------------------------------------------------------------- job entry points
def import_request(*, project: Project, options: dict[str, Any], user=None) -> Job:
    """Validate the options, create the import Job and enqueue it after commit."""
    opts = ImportOptions.from_dict(options)
    job = job_services.job_create(project=project, kind=Job.Kind.IMPORT,
                                  params={**opts.as_dict(), **({"cleanup_dir": options["cleanup_dir"]}
                                                              if options.get("cleanup_dir") else {})}, user=user)
    job_services.job_enqueue(job=job)
    return job


def _import(job: Job, progress: job_services.Progress) -> job_services.JobOutcome:
    cleanup = job.params.get("cleanup_dir")
    try:
        opts = ImportOptions.from_dict({k: v for k, v in job.params.items() if k != "cleanup_dir"})
        result = import_images(project=job.project, options=opts, user=job.created_by, job_id=str(job.pk),
                               progress=progress)
        if result.imported and not opts.embeddings and job.project.extractor != "precomputed":
            from .embeddings import embedding_request  # noqa: PLC0415

            try:
                emb_job = embedding_request(project=Project.objects.get(pk=job.project_id), user=job.created_by)
            except ValueError as exc:  # the import stands; the admin fixes the extractor and re-embeds
                result.embedding_error = f"embeddings not computed: {exc}"
            else:
                result.embedding_job = str(emb_job.pk)
    finally:
        if cleanup:
            shutil.rmtree(storage.media_path(cleanup), ignore_errors=True)
    message = f"imported {result.imported} images"
    if result.already_present:
        message += f", {result.already_present} already present"
    if result.skipped_count:
        message += f", skipped {result.skipped_count}"
    if result.embeddings_replaced:
        message += f"; {result.embeddings_replaced}"
    if result.embedding_error:
        message += f"; {result.embedding_error}"
    return job_services.JobOutcome(result=result.as_dict(), message=message, stats_changed=True)


def import_execute(*, job_id: str) -> Job:
    """Run an import job (called by its Celery task).  A rejected import fails the job with its reason."""
    return job_services.job_run(job_id=job_id, work=_import, expected=(ImportRejected,))
