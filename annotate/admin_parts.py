"""Pieces of the project admin page that read well: the round history as one compact table, the key map
of the labeling page, and what a job page says in words.  ``admin.py`` wires them in."""
from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.urls import NoReverseMatch, reverse

from .models import Job, Project, Round


class RoundHistoryInline(admin.TabularInline):
    """The latest rounds, newest first, one line each (``round_history.html``); all of them are under Rounds."""

    model = Round
    extra = 0
    can_delete = False
    fields = ["number"]
    readonly_fields = fields
    ordering = ["-number"]
    template = "admin/annotate/project/round_history.html"
    verbose_name_plural = "round history"
    shown = 30

    def has_add_permission(self, request, obj=None):
        return False

    def get_formset(self, request, obj=None, **kwargs):
        self._project = obj  # inline instances are made per request
        return super().get_formset(request, obj, **kwargs)

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        project = getattr(self, "_project", None)
        if project is not None:
            last = qs.filter(project=project).order_by("-number").values_list("number", flat=True).first() or 0
            qs = qs.filter(number__gt=last - self.shown)
        return qs


def round_row(rnd: Round) -> dict[str, Any]:
    """One line of the round history: what a person wants to see first; the rest in ``details``."""
    m = rnd.metrics if isinstance(rnd.metrics, dict) else {}
    t = rnd.timings if isinstance(rnd.timings, dict) else {}
    run = (rnd.finished_at - rnd.started_at).total_seconds() if rnd.finished_at and rnd.started_at else None
    acc = m.get("prequential_accuracy")
    params = rnd.params if isinstance(rnd.params, dict) else {}
    details = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                        for k, v in {**params, **m, **{f"{k} s": v for k, v in t.items()}}.items()
                        if isinstance(v, (int, float, str, bool)))
    return {
        "number": rnd.number,
        "status": rnd.status,
        "strategy": rnd.strategy_used,
        "labels": rnd.labeled_count,
        "added": m.get("entries"),
        "seconds": run,
        "accuracy": acc,
        "accuracy_n": m.get("prequential_n"),
        "when": rnd.finished_at or rnd.created_at,
        "note": (rnd.failure.splitlines()[0] if rnd.failure else rnd.reason),
        "details": details,
        "url": reverse("admin:annotate_round_change", args=[rnd.pk]),
    }


def keymap_rows(project: Project) -> list[tuple[str, str | None]]:
    """(class, key) as the labeling page will show them (the stored map, completed for new classes)."""
    from .services.keymap import keyed_classes  # noqa: PLC0415 - admin_parts is imported by the template tags

    return keyed_classes(project=project)


def job_story(job: Job) -> dict[str, Any]:
    """A job in words for its admin page: what it did, the counts as a table, and links to what followed."""
    r = job.result if isinstance(job.result, dict) else {}
    counts = [(k.replace("_", " "), v) for k, v in r.items()
              if isinstance(v, (int, float, str)) and not k.endswith("_job") and k not in ("filename",)]
    skipped = r.get("skipped") if isinstance(r.get("skipped"), list) else []
    follow = []
    for key, value in r.items():
        if key.endswith("_job") and value:
            other = Job.objects.filter(pk=value).only("id", "kind", "status", "project_id").first()
            if other is not None and other.project_id:
                try:
                    url = reverse("admin:annotate_project_job", args=[other.project_id, other.pk])
                except NoReverseMatch:
                    continue
                follow.append({"kind": other.kind, "status": other.status, "url": url})
    return {"counts": counts, "skipped": skipped[:50], "skipped_more": max(0, len(skipped) - 50),
            "follow": follow, "classes": r.get("classes") if isinstance(r.get("classes"), list) else None}
