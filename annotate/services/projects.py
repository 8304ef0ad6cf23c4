"""Configuring a project: the rules that follow from a settings change, whoever makes it.

:func:`project_configure` saves a project's settings, stores the extractor files that came with
them, and re-embeds every item when the feature extractor or its parameters changed (the admin
form calls it; so can a script).  Uploaded files are written in one place, :func:`upload_save`.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import storage
from ..models import Job, Project
from .dispatch import BrokerUnavailable
from selection.extractors import make_extractor

from .embeddings import embedding_request, extractor_check_allowed
from .keymap import keymap_sync


def upload_save(upload, rel: str) -> Path:
    """Write an uploaded file (Django ``UploadedFile``) to MEDIA_ROOT/``rel`` in chunks; returns the path."""
    dest = storage.media_path(rel)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with open(dest, "wb") as fh:
        for chunk in upload.chunks():
            fh.write(chunk)
    return dest


def _normalised(name: str, params: dict[str, Any]) -> dict[str, Any]:
    """Parameters with defaults filled in ({} and the defaults mean the same); as given when invalid.

    Only the schema is applied (not who may run what), so a retired extractor's stored settings
    compare equal to the same settings submitted again."""
    try:
        return make_extractor(name, params).params_
    except ValueError:
        return dict(params or {})


def extractor_changed(*, old: tuple[str, dict[str, Any]], new: tuple[str, dict[str, Any]]) -> bool:
    """Whether going from extractor ``old`` to ``new`` ((name, params) each) changes the embeddings."""
    return old[0] != new[0] or _normalised(*old) != _normalised(*new)


@dataclass
class ConfigureResult:
    reembed_job: Job | None = None  # the embedding job started because the extractor changed
    reembed_error: str = ""  # why the embeddings were not recomputed although it changed


def project_configure(*, project: Project, user, previous: tuple[str, dict[str, Any]] | None,
                      uploads: dict[str, Any] | None = None) -> ConfigureResult:
    """Save ``project`` (its new settings set on the instance) and apply what follows from them.

    ``uploads``: extractor parameter name -> uploaded file; each is stored under the project and its
    path becomes the parameter's value.  ``previous``: the (extractor, params) the project had before,
    or None for a new project.  When those changed and the project has items, every item is
    re-embedded in a background job; an extractor that cannot run (or a broker that is down) leaves
    the settings saved and says why in ``reembed_error``.

    Configuring an extractor the user may not (a retired one such as TorchScript, for anyone; a
    server folder as a model, for a non-superuser: ``extractor_check_allowed``) raises
    ``ExtractorNotAllowed`` before anything is saved or written.  A project that already has a
    retired extractor keeps it, and its other settings can still be changed.
    """
    new = (project.extractor, project.extractor_params)
    if previous is None or uploads or extractor_changed(old=previous, new=new):
        extractor_check_allowed(user=user, name=project.extractor, params=_normalised(*new))
    project.save()
    keymap_sync(project=project)  # classes added here get their keys now; kept classes keep theirs
    if uploads:
        params = dict(project.extractor_params)
        for name, upload in uploads.items():
            rel = f"projects/{project.pk}/extractors/{uuid.uuid4().hex[:12]}-{Path(upload.name).name}"
            upload_save(upload, rel)
            params[name] = rel
        project.extractor_params = params
        project.save(update_fields=["extractor_params", "updated_at"])
    new = (project.extractor, project.extractor_params)
    if previous is None or not extractor_changed(old=previous, new=new) or not project.items.exists():
        return ConfigureResult()
    try:
        return ConfigureResult(reembed_job=embedding_request(project=project, user=user))
    except (ValueError, BrokerUnavailable) as exc:
        return ConfigureResult(reembed_error=str(exc))
