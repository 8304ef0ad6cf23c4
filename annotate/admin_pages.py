"""The project admin's own pages: import, export, a job's progress (in words), and the start-round,
re-embed and reassign-keys buttons.  Thin views: validate with a form, call one service, redirect to the job page.
"""
from __future__ import annotations

import uuid
from pathlib import Path

from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.shortcuts import get_object_or_404
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.views.decorators.http import require_POST

from .admin_parts import job_story, keymap_rows
from .forms_io import ExportForm, ImportForm
from .models import Job, Project
from .payloads import project_ws_url
from .services import exports as export_services
from .services import imports as import_services
from .services import projects as project_services
from .services.dispatch import BrokerUnavailable


class ProjectPages:
    """Mixed into ``ProjectAdmin``: the extra URLs under ``admin/annotate/project/<id>/``."""

    def get_urls(self):
        wrap = self.admin_site.admin_view
        return [
            path("<int:project_id>/import/", wrap(self.import_view), name="annotate_project_import"),
            path("<int:project_id>/export/", wrap(self.export_view), name="annotate_project_export"),
            path("<int:project_id>/start-round/", wrap(require_POST(self.start_round_view)),
                 name="annotate_project_start_round"),
            path("<int:project_id>/reembed/", wrap(require_POST(self.reembed_view)), name="annotate_project_reembed"),
            path("<int:project_id>/reassign-keys/", wrap(require_POST(self.reassign_keys_view)),
                 name="annotate_project_reassign_keys"),
            path("<int:project_id>/jobs/<uuid:job_id>/", wrap(self.job_view), name="annotate_project_job"),
        ] + super().get_urls()

    def _project(self, request, project_id) -> Project:
        project = get_object_or_404(self.get_queryset(request), pk=project_id)
        if not self._is_admin(request, project):
            raise PermissionDenied
        return project

    def _context(self, request, project, **extra):
        return {**self.admin_site.each_context(request), "opts": self.model._meta, "original": project,
                "project": project, "has_view_permission": True, **extra}

    def import_view(self, request, project_id):
        project = self._project(request, project_id)
        form = ImportForm(request.POST or None, request.FILES or None, user=request.user)
        status = 400 if request.method == "POST" else 200  # re-shown after a post: the form refused it
        if request.method == "POST" and form.is_valid():
            d = form.cleaned_data
            upload_dir = f"uploads/{uuid.uuid4().hex}"
            options = {"class_folders": d["class_folders"], "labels_as": d["labels_as"], "cleanup_dir": upload_dir,
                       "server_paths": request.user.is_superuser}

            def keep(upload) -> str:
                return str(project_services.upload_save(upload, f"{upload_dir}/{Path(upload.name).name}"))

            options["source"] = keep(d["zip_file"]) if d.get("zip_file") else (d.get("folder") or "")
            options["manifest"] = keep(d["manifest_file"]) if d.get("manifest_file") else (d.get("manifest_url") or "")
            options["embeddings"] = keep(d["embeddings"]) if d.get("embeddings") else ""
            try:
                job = import_services.import_request(project=project, options=options, user=request.user)
            except (import_services.ImportRejected, BrokerUnavailable) as exc:
                form.add_error(None, str(exc))
                status = 503 if isinstance(exc, BrokerUnavailable) else 400
            else:
                return HttpResponseRedirect(reverse("admin:annotate_project_job", args=[project.pk, job.pk]))
        return TemplateResponse(request, "admin/annotate/project/import.html",
                                self._context(request, project, form=form, title=f"Import images into {project}"),
                                status=status)

    def export_view(self, request, project_id):
        project = self._project(request, project_id)
        form = ExportForm(request.POST or None)
        status = 400 if request.method == "POST" else 200
        if request.method == "POST" and form.is_valid():
            try:
                job = export_services.export_request(project=project, fmt=form.cleaned_data["format"],
                                                     predictions=form.cleaned_data["predictions"], user=request.user)
            except BrokerUnavailable as exc:
                form.add_error(None, str(exc))
                status = 503
            else:
                return HttpResponseRedirect(reverse("admin:annotate_project_job", args=[project.pk, job.pk]))
        recent = Job.objects.filter(project=project, kind=Job.Kind.EXPORT).order_by("-created_at")[:10]
        return TemplateResponse(request, "admin/annotate/project/export.html",
                                self._context(request, project, form=form, recent=recent,
                                              title=f"Export {project}"),
                                status=status)

    def start_round_view(self, request, project_id):
        project = self._project(request, project_id)
        self.start_round(request, Project.objects.filter(pk=project.pk))
        return HttpResponseRedirect(reverse("admin:annotate_project_change", args=[project.pk]))

    def reembed_view(self, request, project_id):
        project = self._project(request, project_id)
        self.reembed(request, Project.objects.filter(pk=project.pk))
        return HttpResponseRedirect(reverse("admin:annotate_project_change", args=[project.pk]))

    def reassign_keys_view(self, request, project_id):
        project = self._project(request, project_id)
        self.reassign_keys(request, Project.objects.filter(pk=project.pk))
        return HttpResponseRedirect(reverse("admin:annotate_project_change", args=[project.pk]))

    def change_view(self, request, object_id, form_url="", extra_context=None):
        project = Project.objects.filter(pk=object_id).first() if str(object_id).isdigit() else None
        extra = {"keymap": keymap_rows(project)} if project is not None else {}
        return super().change_view(request, object_id, form_url, {**extra, **(extra_context or {})})

    def job_view(self, request, project_id, job_id):
        project = self._project(request, project_id)
        job = get_object_or_404(Job, pk=job_id, project=project)
        return TemplateResponse(request, "admin/annotate/project/job.html",
                                self._context(request, project, job=job, ws_url=project_ws_url(project.pk),
                                              story=job_story(job), title=f"{job.kind} job for {project}"))
