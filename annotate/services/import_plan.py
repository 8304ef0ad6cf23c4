"""What an import will bring in, read before anything is written: the candidate images (from a
folder, a zip and/or a manifest, with their labels and embedding rows) and the embeddings matrix.
Bad input raises ``ImportRejected`` naming the problem (``imports.py`` runs the import itself).
"""
from __future__ import annotations

import os
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

import numpy as np
from django.conf import settings

from .. import storage
from ..models import Project
from .import_sources import (
    IMAGE_EXTENSIONS,
    ImportRejected,
    _Entry,
    _fetch,
    _file_reader,
    _folder_entries,
    _missing,
    _safe_member_name,
    _size,
    _zip_entries,
    class_labels,
    parse_manifest,
)

if TYPE_CHECKING:
    from .imports import ImportOptions


def import_plan(project: Project, opts: ImportOptions) -> tuple[list[_Entry], list[tuple[str, str]], Any]:
    """Candidate entries (with labels and embedding rows) and non-image files; ImportRejected on bad input."""
    closer = None
    entries: list[_Entry] = []
    ignored: list[tuple[str, str]] = []
    if opts.source:
        if os.path.isdir(opts.source):
            entries = _folder_entries(opts.source)
        elif zipfile.is_zipfile(opts.source):
            entries, closer = _zip_entries(opts.source)
        else:
            raise ImportRejected(f"source {os.path.basename(opts.source)!r} is neither a folder nor a zip archive")
    by_name = {e.name: e for e in entries}
    uploads = str(storage.media_path("uploads")) + os.sep
    if opts.source and not opts.server_paths and not os.path.abspath(opts.source).startswith(uploads):
        raise ImportRejected("only an uploaded zip may be the source here (server folders need a superuser)")

    if opts.manifest:
        manifest_is_upload = os.path.abspath(opts.manifest).startswith(uploads)
        data = _fetch(opts.manifest, settings.LOUPE_MAX_UPLOAD_BYTES, what="manifest",
                      public_only=not opts.server_paths and not manifest_is_upload)
        rows = parse_manifest(data, os.path.basename(urllib.parse.urlsplit(opts.manifest).path) or opts.manifest)
        man_dir = None
        if urllib.parse.urlsplit(opts.manifest).scheme in ("", "file"):
            path = (urllib.request.url2pathname(urllib.parse.urlsplit(opts.manifest).path)
                    if opts.manifest.startswith("file:") else opts.manifest)
            man_dir = os.path.dirname(os.path.abspath(path))
        listed: list[_Entry] = []
        for ref, label in rows:
            if "\x00" in ref:  # no file system or URL takes it: name the entry, skip it, import the rest
                shown = ref.replace("\x00", "\\x00")
                listed.append(_Entry(name=shown, read=_missing(shown, "its path contains a NUL byte")))
                continue
            scheme = urllib.parse.urlsplit(ref).scheme.lower()
            if opts.source:
                try:
                    key = _safe_member_name(ref) if not scheme else ref
                except ImportRejected:  # "../x.png", "/etc/x": skipped by name like a missing file
                    listed.append(_Entry(name=ref, read=_missing(ref, "it points outside the source folder/zip "
                                                                      "(manifest paths are relative to it)")))
                    continue
                e = by_name.get(key)
                if e is None:
                    e = _Entry(name=key, read=_missing(key, "not found in the source folder/zip"))
                listed.append(_Entry(name=e.name, read=e.read, size=e.size, label=label))
            elif not opts.server_paths and (scheme == "file" or os.path.isabs(ref) or ".." in PurePosixPath(ref).parts):
                raise ImportRejected(f"manifest entry {ref!r} names a file on the server; only paths inside the "
                                     "uploaded zip or http(s) URLs are allowed here")
            elif scheme in ("http", "https", "file"):
                listed.append(_Entry(name=ref, read=lambda lim, ref=ref: _fetch(ref, lim, what="image",
                                                                             public_only=not opts.server_paths),
                                      label=label))
            else:
                full = ref if os.path.isabs(ref) else os.path.join(man_dir or ".", ref)
                listed.append(_Entry(name=ref, read=_file_reader(full), size=_size(full), label=label))
        if opts.source:
            listed_names = {e.name for e in listed}
            for e in entries:
                if e.name not in listed_names and Path(e.name).suffix.lower() in IMAGE_EXTENSIONS:
                    ignored.append((e.name, "not listed in the manifest"))
        entries = listed
    else:
        images = []
        for e in entries:
            if Path(e.name).suffix.lower() in IMAGE_EXTENSIONS:
                images.append(e)
            else:
                ignored.append((e.name, "not an image file (allowed: jpg, png, webp, bmp, tiff)"))
        entries = images
        if opts.class_folders:
            for e, label in zip(entries, class_labels([e.name for e in entries])):
                e.label = label

    if not entries:
        raise ImportRejected("no images found to import (allowed: jpg, png, webp, bmp, tiff)")

    # Labels: every label must be a class of the project (a project without classes takes them all).
    labels = sorted({e.label for e in entries if e.label})
    if project.classes:
        unknown = [lab for lab in labels if lab not in project.classes]
        if unknown:
            first = next(e for e in entries if e.label == unknown[0])
            raise ImportRejected(
                f"unknown class {unknown[0]!r} (for {first.name!r})"
                + (f" and {len(unknown) - 1} more ({unknown[1:6]})" if len(unknown) > 1 else "")
                + f"; the project's classes are {project.classes}"
            )
    for i, e in enumerate(entries):
        e.emb_row = i
    return entries, ignored, closer


def import_embeddings_load(project: Project, opts: ImportOptions, n_rows: int) -> tuple[np.ndarray | None, str]:
    """The import's embedding matrix (None without one), checked, and why it cannot join the project's
    current embeddings ("" when it can: the project has none yet, or precomputed ones of the same width).

    A matrix that cannot join them (the project's rows come from another extractor, such as the
    demo's ``pixels``, or have another width) replaces them instead, when the import covers every item
    of the project: ``imports.py`` checks that after hashing the files and otherwise rejects the import
    with this reason and what to do.  One project never mixes two embedding spaces.
    """
    from selection.extractors import check_matrix  # noqa: PLC0415

    if not opts.embeddings:
        if (project.extractor == "precomputed" and project.embedding_file
                and project.items.filter(row__isnull=False).exists()):
            raise ImportRejected(
                "this project uses precomputed embeddings; an import into it must supply an embeddings .npy "
                "for its images"
            )
        return None, ""
    try:
        X = np.load(opts.embeddings, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise ImportRejected(f"cannot read embeddings {os.path.basename(opts.embeddings)!r}: {exc}") from None
    try:
        X = check_matrix(X, n_rows, name=f"embeddings {os.path.basename(opts.embeddings)!r}")
    except ValueError as exc:
        raise ImportRejected(f"{exc} (rows follow the manifest, or the image files in sorted path order)") from None
    has_rows = project.items.filter(row__isnull=False).exists()
    if has_rows and project.embedding_file:
        if project.extractor != "precomputed":
            return X, f"the project's embeddings come from extractor {project.extractor!r}"
        if project.embedding_dim != X.shape[1]:
            return X, (f"embeddings have {X.shape[1]} columns but the project's embeddings have "
                       f"{project.embedding_dim}")
    return X, ""
