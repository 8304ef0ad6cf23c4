"""The review page: everyone's current labels, and a reviewer's corrections.

Reviewers (``annotate.permissions.project_for`` with ``role=REVIEWER``) see everyone's labels and
correct them; non-members get 404, members with too low a role 403.
"""
from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.paginator import Paginator
from django.db.models import Exists, F, OuterRef
from django.http import HttpRequest, JsonResponse
from django.shortcuts import render

from .api import api_view
from .models import Annotation, Item, Membership
from .payloads import annotation_payload, item_image_url
from .permissions import project_for
from .selectors_labels import LABEL_ACTIONS, final_labels
from .services.errors import BadInput
from .services.review import annotation_correct

REVIEW_PAGE_SIZE = 48


@login_required
def review_page(request: HttpRequest, project_id: int):
    project = project_for(user=request.user, project_id=project_id, role=Membership.Role.REVIEWER)
    annotators = (Annotation.objects.filter(item__project=project, is_current=True, action__in=LABEL_ACTIONS)
                  .values_list("annotator__username", flat=True).distinct().order_by("annotator__username"))
    return render(request, "annotate/review.html", {"project": project, "annotators": list(annotators)})


#: review orders: most suspicious label first (worker's suspect_score, services/quality.py), or newest first
REVIEW_SORTS = {"suspect": (F("suspect_score").desc(nulls_last=True), "-pk"), "newest": ("-pk",)}


def _review_rows(project, *, annotator: str, label: str, page: int, sort: str = "suspect") -> dict[str, Any]:
    if sort not in REVIEW_SORTS:
        raise BadInput(f"sort={sort!r} must be one of {sorted(REVIEW_SORTS)}")
    if label and label not in project.classes:  # an empty page would read as "nobody used this class"
        raise BadInput(f"label={label!r} is not one of the project's classes {project.classes}")
    labeled = (Annotation.objects.filter(item=OuterRef("pk"), is_current=True, action__in=LABEL_ACTIONS)
               .exclude(label=""))
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
            "item_id": item.pk, "image_url": item_image_url(item.pk), "name": item.original_name,
            "label": fl.label if fl else "", "by": fl.annotator if fl else "",
            "corrected": bool(fl and fl.action == "correct"),
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
    return JsonResponse(annotation_payload(ann), status=201)
