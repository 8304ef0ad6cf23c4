"""The project dashboard: its page, the statistics API, exports and the job APIs, export downloads.

Roles (``annotate.permissions.project_for``): any member sees the dashboard and statistics;
admins start exports and download them.  Non-members get 404, members with too low a role 403.
"""
from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.http import FileResponse, Http404, HttpRequest, JsonResponse
from django.shortcuts import render

from . import storage
from .api import api_view, authenticate
from .models import Job, Membership
from .payloads import job_payload, project_ws_url
from .permissions import has_role, project_for, role_of
from .selectors_alignment import alignment_history
from .selectors_stats import project_stats
from .services import exports as export_services
from .services.errors import BadInput


# ----------------------------------------------------------------------------- pages
@login_required
def dashboard(request: HttpRequest, project_id: int):
    project = project_for(user=request.user, project_id=project_id)
    role = role_of(user=request.user, project=project)
    return render(request, "annotate/dashboard.html", {
        "project": project,
        "role": role,
        "is_admin": role == Membership.Role.ADMIN,
        "is_reviewer": has_role(user=request.user, project=project, role=Membership.Role.REVIEWER),
        "stats": project_stats(project=project),
        "ws_url": project_ws_url(project.pk),
        "formats": [(k, v[1]) for k, v in export_services.FORMATS.items()],
        "alignments": alignment_history(project=project),
    })


# ----------------------------------------------------------------------------- JSON API
@api_view("GET")
def stats(request: HttpRequest, project_id: int):
    project = project_for(user=request.user, project_id=project_id)
    return JsonResponse(project_stats(project=project))


@api_view("POST")
def export_create(request: HttpRequest, project_id: int):
    project = project_for(user=request.user, project_id=project_id, role=Membership.Role.ADMIN)
    data = request.json
    fmt = data.get("format")
    if not isinstance(fmt, str) or fmt not in export_services.FORMATS:
        raise BadInput(f"format {fmt!r} is not one of {sorted(export_services.FORMATS)}")
    predictions = data.get("predictions", False)
    if not isinstance(predictions, bool):
        raise BadInput(f"predictions={predictions!r} must be true or false")
    job = export_services.export_request(project=project, fmt=fmt, predictions=predictions, user=request.user)
    return JsonResponse(job_payload(job), status=202)


def _job_for(request: HttpRequest, job_id) -> Job:
    try:
        job = Job.objects.select_related("project").get(pk=job_id)
    except Job.DoesNotExist:
        raise Http404(f"job {job_id} does not exist") from None
    if job.project_id is None:
        if not request.user.is_superuser:
            raise Http404(f"job {job_id} does not exist")
        return job
    project_for(user=request.user, project_id=job.project_id, role=Membership.Role.ADMIN)
    return job


@api_view("GET")
def job_status(request: HttpRequest, job_id):
    return JsonResponse(job_payload(_job_for(request, job_id)))


def job_download(request: HttpRequest, job_id):
    """The export file, for project admins; a browser session or ``Authorization: Token <key>``."""
    if request.headers.get("Authorization"):
        failed = authenticate(request)
        if failed is not None:
            return failed
    elif not request.user.is_authenticated:
        return redirect_to_login(request.get_full_path())
    job = _job_for(request, job_id)
    if job.kind not in (Job.Kind.EXPORT, Job.Kind.FINAL) or job.status != Job.Status.DONE or not job.result_file:
        raise Http404(f"job {job_id} has no file to download")
    try:
        path = storage.media_path(job.result_file)
    except ValueError:
        raise PermissionDenied("the job's file is outside the media folder") from None
    if not path.is_file():
        raise Http404(f"the export file of job {job_id} is gone; export again")
    return FileResponse(open(path, "rb"), as_attachment=True, filename=job.result.get("filename") or path.name)
