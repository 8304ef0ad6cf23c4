"""Dashboard, review page, statistics and job APIs, export download.

Roles (``annotate.permissions.project_for``): any member sees the dashboard and statistics;
reviewers see everyone's labels and correct them; admins start imports, exports and embedding
jobs and download exports.  Non-members get 404, members with too low a role 403.
"""
from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import redirect_to_login
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Exists, F, OuterRef
from django.http import FileResponse, Http404, HttpRequest, JsonResponse
from django.shortcuts import render

from . import storage
from .api import api_view, authenticate
from .models import Annotation, Item, Job, Membership
from .permissions import has_role, project_for, role_of
from .selectors_labels import LABEL_ACTIONS, final_labels
from .selectors_stats import project_stats
from .services import exports as export_services
from .services.errors import BadInput
from .services.jobs import job_payload
from .services.review import annotation_correct

REVIEW_PAGE_SIZE = 48


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
        "formats": [(k, v[1]) for k, v in export_services.FORMATS.items()],
    })


@login_required
def review_page(request: HttpRequest, project_id: int):
    project = project_for(user=request.user, project_id=project_id, role=Membership.Role.REVIEWER)
    annotators = (Annotation.objects.filter(item__project=project, is_current=True, action__in=LABEL_ACTIONS)
                  .values_list("annotator__username", flat=True).distinct().order_by("annotator__username"))
    return render(request, "annotate/review.html", {"project": project, "annotators": list(annotators)})


# ----------------------------------------------------------------------------- JSON API
@api_view("GET")
def stats(request: HttpRequest, project_id: int):
    project = project_for(user=request.user, project_id=project_id)
    return JsonResponse(project_stats(project=project))


#: review orders: most suspicious label first (worker's suspect_score, services/quality.py), or newest first
REVIEW_SORTS = {"suspect": (F("suspect_score").desc(nulls_last=True), "-pk"), "newest": ("-pk",)}


def _review_rows(project, *, annotator: str, label: str, page: int, sort: str = "suspect") -> dict[str, Any]:
    if sort not in REVIEW_SORTS:
        raise BadInput(f"sort={sort!r} must be one of {sorted(REVIEW_SORTS)}")
    labeled = Annotation.objects.filter(item=OuterRef("pk"), is_current=True, action__in=LABEL_ACTIONS).exclude(label="")
    items = Item.objects.filter(project=project).filter(Exists(labeled))
    if annotator:
        items = items.filter(Exists(labeled.filter(annotator__username=annotator)))
    if label:
        items = items.filter(Exists(labeled.filter(label=label)))
    paginator = Paginator(items.order_by(*REVIEW_SORTS[sort]), REVIEW_PAGE_SIZE)
    if page < 1 or (page > paginator.num_pages and paginator.count):
        raise BadInput(f"page {page} is out of range 1..{paginator.num_pages}")
    pg = paginator.page(min(page, paginator.num_pages))
    ids = [i.pk for i in pg.object_list]
    finals = final_labels(ids)
    history: dict[int, list[dict[str, Any]]] = {}
    for a in (Annotation.objects.filter(item_id__in=ids, is_current=True, action__in=LABEL_ACTIONS)
              .select_related("annotator").order_by("id")):
        history.setdefault(a.item_id, []).append({"annotator": a.annotator.username, "label": a.label,
                                                  "action": a.action, "created_at": a.created_at.isoformat()})
    rows = []
    for item in pg.object_list:
        fl = finals.get(item.pk)
        rows.append({
            "item_id": item.pk, "image_url": f"/items/{item.pk}/image", "name": item.original_name,
            "label": fl.label if fl else "", "by": fl.annotator if fl else "", "corrected": bool(fl and fl.action == "correct"),
            "labels": history.get(item.pk, []), "suspect_score": item.suspect_score,
            "consensus": bool(fl and fl.consensus),
        })
    return {"count": paginator.count, "page": pg.number, "pages": paginator.num_pages, "items": rows}


@api_view("GET")
def review_items(request: HttpRequest, project_id: int):
    project = project_for(user=request.user, project_id=project_id, role=Membership.Role.REVIEWER)
    try:
        page = int(request.GET.get("page", "1"))
    except ValueError:
        raise BadInput(f"page={request.GET.get('page')!r} is not an integer") from None
    return JsonResponse(_review_rows(project, annotator=request.GET.get("annotator", ""),
                                     label=request.GET.get("label", ""), page=page,
                                     sort=request.GET.get("sort", "suspect")))


@api_view("POST")
def review_correct(request: HttpRequest, project_id: int):
    project = project_for(user=request.user, project_id=project_id, role=Membership.Role.REVIEWER)
    data = request.json
    unknown = sorted(set(data) - {"item_id", "label"})
    if unknown:
        raise BadInput(f"unknown field(s) {unknown}; allowed: ['item_id', 'label']")
    ann = annotation_correct(project=project, reviewer=request.user, item_id=data.get("item_id"),
                             label=data.get("label"))
    return JsonResponse({"id": ann.pk, "item_id": ann.item_id, "label": ann.label, "action": ann.action,
                         "created_at": ann.created_at.isoformat()}, status=201)


@api_view("POST")
def export_create(request: HttpRequest, project_id: int):
    project = project_for(user=request.user, project_id=project_id, role=Membership.Role.ADMIN)
    data = request.json
    fmt = data.get("format")
    if fmt not in export_services.FORMATS:
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
    if job.kind != Job.Kind.EXPORT or job.status != Job.Status.DONE or not job.result_file:
        raise Http404(f"job {job_id} has no file to download")
    try:
        path = storage.media_path(job.result_file)
    except ValueError:
        raise PermissionDenied("the job's file is outside the media folder") from None
    if not path.is_file():
        raise Http404(f"the export file of job {job_id} is gone; export again")
    return FileResponse(open(path, "rb"), as_attachment=True, filename=job.result.get("filename") or path.name)
