"""Pages (project list, labeling page) and the permission-checked item image view."""
from __future__ import annotations

import mimetypes

from django.contrib.auth.decorators import login_required
from django.http import FileResponse, Http404, HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from . import selectors, storage
from .api import authenticate
from .models import Item
from .payloads import project_ws_url
from .permissions import project_for, projects_of, role_of
from .services.keymap import keyed_classes


@require_GET
@login_required
def project_list(request: HttpRequest) -> HttpResponse:
    projects = list(projects_of(user=request.user).order_by("name"))
    rows = [
        {"project": p, "progress": selectors.project_progress(project=p, user=request.user),
         "role": role_of(user=request.user, project=p)}
        for p in projects
    ]
    return render(request, "annotate/project_list.html", {"rows": rows})


@require_GET
@login_required
def label_page(request: HttpRequest, project_id: int) -> HttpResponse:
    project = project_for(user=request.user, project_id=project_id)
    buttons = keyed_classes(project=project)
    return render(request, "annotate/label.html", {
        "project": project,
        "buttons": buttons,
        # "0" fits the image unless a class owns it (class keys always win).
        "zoom_reset_key": "" if any(k == "0" for _, k in buttons) else "0",
        "progress": selectors.project_progress(project=project, user=request.user),
        "ws_url": project_ws_url(project.pk),
    })


@require_GET
def item_image(request: HttpRequest, item_id: int) -> HttpResponse:
    """Stream an item's image to a member of its project (never a public media URL)."""
    failed = authenticate(request)
    if failed is not None:
        return failed
    item = Item.objects.filter(pk=item_id).only("id", "project_id", "file").first()
    if item is None:
        raise Http404(f"item {item_id} does not exist")
    project_for(user=request.user, project_id=item.project_id)
    try:
        path = storage.media_path(storage.display_relpath(item.file))
        fh = open(path, "rb")
    except (OSError, ValueError):
        raise Http404(f"the image file of item {item_id} is missing") from None
    ctype = mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    resp = FileResponse(fh, content_type=ctype)
    # Private: the browser may keep it (prefetched images show at once), shared caches may not.
    resp["Cache-Control"] = "private, max-age=3600"
    resp["X-Content-Type-Options"] = "nosniff"
    return resp
