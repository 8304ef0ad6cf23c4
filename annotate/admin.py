"""Django admin for Loupe: project configuration, round history, import/export/re-embed/start-round.

Project admins need not be superusers: ``services.roles`` puts them in the "Loupe admins" group
(the model permissions) and makes them staff; every admin page here then shows only the projects
(and their rows) the user administers.  Views stay thin: validate with a form, call one service.
"""
from __future__ import annotations


from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import HttpResponseRedirect
from django.urls import reverse
from django.utils.html import format_html

from .admin_pages import ProjectPages
from .admin_parts import RoundHistoryInline
from .forms import EP, SP, build_project_form, extractor_warning
from .models import Annotation, Item, Job, Membership, Project, QueueEntry, Round
from .payloads import item_image_url, job_download_url
from .permissions import has_role
from .services import embeddings as embedding_services
from .services import projects as project_services
from .services import roles as role_services
from .services.dispatch import BrokerUnavailable
from .services.label_counts import label_counts_recount_many
from .services.queue_counts import queue_counts_recount


def _warning_html(extractor: str) -> str:
    """The extractor's warning as a red admin note (fieldset descriptions are rendered as HTML)."""
    text = extractor_warning(extractor)
    return format_html('<p class="errornote">{}</p>', text) if text else ""


def _admin_project_ids(user):
    return Membership.objects.filter(user=user, role=Membership.Role.ADMIN).values("project_id")


class ProjectScoped:
    """Non-superusers see only rows of projects they administer."""

    project_path = "project"

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if request.user.is_superuser:
            return qs
        if self.project_path == "":
            return qs.filter(pk__in=_admin_project_ids(request.user))
        return qs.filter(**{f"{self.project_path}__in": _admin_project_ids(request.user)})


class RefusedIs400:
    """A change form posted with errors (a bad value, a refused upload) comes back with status 400, not 200:
    every user input error is a 4xx, for scripts and tests as for people."""

    def render_change_form(self, request, context, add=False, change=False, form_url="", obj=None):
        response = super().render_change_form(request, context, add=add, change=change, form_url=form_url,
                                              obj=obj)
        if request.method == "POST" and context.get("errors"):
            response.status_code = 400
        return response


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(RefusedIs400, ProjectScoped, ProjectPages, admin.ModelAdmin):
    project_path = ""
    list_display = ["name", "strategy", "batch_size", "audit_rate", "extractor", "embedding_version", "item_count",
                    "links"]
    search_fields = ["name"]
    inlines = [MembershipInline, RoundHistoryInline]
    actions = ["start_round", "reembed", "align", "final_model", "export", "reassign_keys"]
    change_form_template = "admin/annotate/project/change_form.html"

    class Media:
        js = ["admin-strategy.js"]

    # ------------------------------------------------------------------ list
    @admin.display(description="items")
    def item_count(self, obj):
        return obj.items.count()

    @admin.display(description="")
    def links(self, obj):
        return format_html('<a href="{}">dashboard</a> · <a href="{}">import</a> · <a href="{}">export</a>',
                           reverse("dashboard", args=[obj.pk]), reverse("admin:annotate_project_import", args=[obj.pk]),
                           reverse("admin:annotate_project_export", args=[obj.pk]))

    # ------------------------------------------------------------------ permissions
    def _is_admin(self, request, obj):
        return obj is None or has_role(user=request.user, project=obj, role=Membership.Role.ADMIN)

    def has_change_permission(self, request, obj=None):
        return super().has_change_permission(request, obj) and self._is_admin(request, obj)

    def has_delete_permission(self, request, obj=None):
        return request.user.is_superuser and super().has_delete_permission(request, obj)

    def has_add_permission(self, request):
        return request.user.is_superuser

    # ------------------------------------------------------------------ the generated form
    def get_form(self, request, obj=None, change=False, **kwargs):
        kwargs["form"] = build_project_form(user=request.user)
        kwargs["fields"] = None
        return super().get_form(request, obj, change, **kwargs)

    def get_fieldsets(self, request, obj=None):
        form = build_project_form()
        sets = [
            (None, {"fields": ["name", "description", "classes_text"]}),
            ("Strategy", {"fields": ["strategy"],
                          "description": "Parameters of the chosen strategy; changes apply from the next round."}),
        ]
        for key, fields in form.generated.items():
            prefix, owner = key.split(":", 1)
            if prefix == SP:
                sets.append((f"{owner} parameters", {"fields": [n for n, _ in fields],
                                                     "classes": [f"loupe-params loupe-{SP}-{owner}"]}))
        sets.append(("Batches and refill", {"fields": ["batch_size", "refill_policy", "refill_threshold",
                                                      "retrain_every", "audit_rate", "audit_target_halfwidth",
                                                      "l2", "seed",
                                                      "selection_ranks"]}))
        sets.append(("Overlap and agreement", {
            "fields": ["overlap_rate", "overlap_k"],
            "description": "A share of each batch is labeled by k different annotators; their Dawid-Skene "
                           "consensus becomes the item's label and feeds agreement on the dashboard."}))
        sets.append(("Feature alignment", {
            "fields": ["align_every", "align_threshold", "finetune_params"],
            "description": "For 'hf' backbones (ASVP): every N new labels a worker fine-tunes the backbone on the "
                           "labels and re-embeds the pool when LogME-PED improves by more than the threshold. "
                           "Also used by the 'Train the final model' action. See docs/feature-alignment.md."}))
        sets.append(("Labeling page", {"fields": ["suggestions", "suggest_min_accuracy", "candidate_coverage"],
                                       "description": "The model's guess and its likely classes, shown to annotators "
                                                      "(never on the random audit items)."}))
        embeddings_note = "Changing the extractor or its parameters re-embeds all items."
        if obj is not None and _warning_html(obj.extractor):  # e.g. retired: said where it is always seen
            embeddings_note = format_html("{}{}", embeddings_note, _warning_html(obj.extractor))
        sets.append(("Embeddings", {"fields": ["extractor"], "description": embeddings_note}))
        for key, fields in form.generated.items():
            prefix, owner = key.split(":", 1)
            if prefix == EP:
                sets.append((f"{owner} extractor parameters", {"fields": [n for n, _ in fields],
                                                                 "description": _warning_html(owner),
                                                                 "classes": [f"loupe-params loupe-{EP}-{owner}"]}))
        return sets

    def save_model(self, request, obj, form, change):
        previous = (Project.objects.filter(pk=obj.pk).values_list("extractor", "extractor_params").first()
                    if change else None)
        res = project_services.project_configure(project=obj, user=request.user, previous=previous,
                                                 uploads=form.uploads())
        if res.reembed_error:
            self.message_user(request, f"embeddings not recomputed: {res.reembed_error}", messages.ERROR)
        elif res.reembed_job is not None:
            job = res.reembed_job
            self.message_user(request, format_html(
                'Extractor changed: re-embedding all items (<a href="{}">job {}</a>).',
                reverse("admin:annotate_project_job", args=[obj.pk, job.pk]), str(job.pk)[:8]))

    def save_related(self, request, form, formsets, change):
        before = set(Membership.objects.filter(project=form.instance).values_list("user_id", flat=True))
        super().save_related(request, form, formsets, change)
        after = set(Membership.objects.filter(project=form.instance).values_list("user_id", flat=True))
        from django.contrib.auth import get_user_model  # noqa: PLC0415

        for user in get_user_model().objects.filter(pk__in=before | after):
            role_services.membership_sync(user=user)
        # all at once: one release, one update of the kept pending count (services/queue_counts.py)
        role_services.memberships_revoked(project_id=form.instance.pk, user_ids=sorted(before - after))

    # ------------------------------------------------------------------ actions
    def _per_project(self, request, queryset, run, errors: type[Exception] | tuple = ()) -> None:
        """``run(project)`` for each chosen project (only an admin of it may), showing the (message, level)
        it returns; an exception of ``errors`` is that project's error message and the others go on."""
        for project in queryset:
            if not self._is_admin(request, project):
                raise PermissionDenied
            try:
                text, level = run(project)
            except errors as exc:
                text, level = f"{project}: {exc}", messages.ERROR
            self.message_user(request, text, level)

    @admin.action(description="Start a round now")
    def start_round(self, request, queryset):
        from .services.rounds import round_request  # noqa: PLC0415

        def run(project):
            rnd = round_request(project=project, reason="admin")
            if rnd is None:
                return f"{project}: a round is already queued or running", messages.WARNING
            return f"{project}: round {rnd.number} queued", messages.INFO

        self._per_project(request, queryset, run, BrokerUnavailable)

    @admin.action(description="Re-embed (recompute embeddings)")
    def reembed(self, request, queryset):
        def run(project):
            job = embedding_services.embedding_request(project=project, user=request.user)
            return format_html('{}: embedding job <a href="{}">{}</a> queued', str(project),
                               reverse("admin:annotate_project_job", args=[project.pk, job.pk]),
                               str(job.pk)[:8]), messages.INFO

        self._per_project(request, queryset, run, (ValueError, BrokerUnavailable))

    @admin.action(description="Reassign keyboard keys (from the class names)")
    def reassign_keys(self, request, queryset):
        from .services.keymap import keymap_reset  # noqa: PLC0415

        def run(project):
            keys = keymap_reset(project=project)
            shown = ", ".join(f"{k} {c}" for c, k in keys.items())
            return f"{project}: keys reassigned ({shown})"[:500], messages.INFO

        self._per_project(request, queryset, run)

    @admin.action(description="Check feature alignment now (fine-tune, compare LogME-PED)")
    def align(self, request, queryset):
        from .services.alignment import alignment_request  # noqa: PLC0415

        def run(project):
            job = alignment_request(project=project, user=request.user)
            if job is None:
                return f"{project}: an alignment check is already queued or running", messages.WARNING
            return f"{project}: alignment job {str(job.pk)[:8]} queued", messages.INFO

        self._per_project(request, queryset, run, (ValueError, BrokerUnavailable))

    @admin.action(description="Train the final model (LP-FT or FT, measured on the audit items)")
    def final_model(self, request, queryset):
        from .services.final_model import final_model_request  # noqa: PLC0415

        def run(project):
            job = final_model_request(project=project, user=request.user)
            return (f"{project}: final-model job {str(job.pk)[:8]} queued; its download appears under Jobs on the "
                    "dashboard"), messages.INFO

        self._per_project(request, queryset, run, (ValueError, BrokerUnavailable))

    @admin.action(description="Export labels")
    def export(self, request, queryset):
        if queryset.count() != 1:
            self.message_user(request, "choose one project to export", messages.WARNING)
            return None
        return HttpResponseRedirect(reverse("admin:annotate_project_export", args=[queryset.first().pk]))


@admin.register(Membership)
class MembershipAdmin(RefusedIs400, ProjectScoped, admin.ModelAdmin):
    list_display = ["project", "user", "role", "created_at"]
    list_filter = ["role", "project"]
    autocomplete_fields = ["user"]

    def formfield_for_foreignkey(self, db_field, request, **kwargs):
        if db_field.name == "project" and not request.user.is_superuser:
            kwargs["queryset"] = Project.objects.filter(pk__in=_admin_project_ids(request.user))
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        role_services.membership_sync(user=obj.user)

    def delete_model(self, request, obj):
        user, project_id = obj.user, obj.project_id
        super().delete_model(request, obj)
        role_services.membership_sync(user=user)
        role_services.membership_revoked(project_id=project_id, user_id=user.pk)

    def delete_queryset(self, request, queryset):
        gone = [(m.user, m.project_id) for m in queryset.select_related("user")]
        super().delete_queryset(request, queryset)
        for user, project_id in gone:
            role_services.membership_sync(user=user)
            role_services.membership_revoked(project_id=project_id, user_id=user.pk)


class RecountsKept:
    """Deleting these rows deletes queue entries (and, with items, labels) by cascade, past the
    services: the kept pending and label counts of the projects concerned are recounted after the
    delete, in its transaction (services/queue_counts.py, services/label_counts.py)."""

    def _recount(self, project_ids) -> None:
        queue_counts_recount(project_ids=project_ids)
        label_counts_recount_many(project_ids=project_ids)

    def delete_model(self, request, obj):
        super().delete_model(request, obj)
        self._recount({obj.project_id})

    def delete_queryset(self, request, queryset):
        project_ids = set(queryset.values_list("project_id", flat=True))
        super().delete_queryset(request, queryset)
        self._recount(project_ids)


@admin.register(Item)
class ItemAdmin(RecountsKept, ProjectScoped, admin.ModelAdmin):
    list_display = ["id", "project", "original_name", "row", "ground_truth", "width", "height", "created_at"]
    list_filter = ["project"]
    search_fields = ["original_name", "checksum"]
    readonly_fields = ["project", "file", "checksum", "row", "width", "height", "created_at", "preview"]

    @admin.display(description="image")
    def preview(self, obj):
        return format_html('<img src="{}" style="max-width:320px;max-height:320px">', item_image_url(obj.pk))


@admin.register(Round)
class RoundAdmin(RecountsKept, ProjectScoped, admin.ModelAdmin):
    list_display = ["project", "number", "status", "strategy_used", "labeled_count", "batch_size", "created_at",
                    "finished_at"]
    list_filter = ["status", "project"]
    readonly_fields = [f.name for f in Round._meta.fields]

    def has_add_permission(self, request):
        return False

    @admin.display(description="strategy", ordering="strategy")
    def strategy_used(self, obj):
        return obj.strategy_used


@admin.register(QueueEntry)
class QueueEntryAdmin(RecountsKept, ProjectScoped, admin.ModelAdmin):
    """Read-only (deletes allowed): entries are written by rounds and change state only through the
    queue services, which keep the leases' invariants and the pending count."""

    list_display = ["id", "project", "round", "item", "rank", "state", "is_audit", "predicted_label", "leased_by"]
    list_filter = ["state", "is_audit", "project"]
    raw_id_fields = ["item", "round", "leased_by"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(Annotation)
class AnnotationAdmin(ProjectScoped, admin.ModelAdmin):
    project_path = "item__project"
    list_display = ["id", "item", "annotator", "action", "label", "is_current", "created_at"]
    list_filter = ["action", "is_current"]
    raw_id_fields = ["item", "supersedes", "queue_entry", "annotator"]

    def has_add_permission(self, request):
        return False  # labels come through the label services, which keep the label counts (services/label_counts.py)

    def has_change_permission(self, request, obj=None):
        return False  # history is append-only; corrections go through the review page

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(Job)
class JobAdmin(ProjectScoped, admin.ModelAdmin):
    list_display = ["id", "project", "kind", "status", "progress", "message", "created_at", "finished_at", "download"]
    list_filter = ["kind", "status"]
    readonly_fields = [f.name for f in Job._meta.fields]

    def has_add_permission(self, request):
        return False

    @admin.display(description="result")
    def download(self, obj):
        url = job_download_url(obj)
        return format_html('<a href="{}">download</a>', url) if url else "-"

from . import admin_accounts  # noqa: E402, F401  - users scoped to one's projects, API tokens, login form
