"""Django admin for Loupe (basic registrations; strategy form, actions and import page follow)."""
from __future__ import annotations

from django.contrib import admin

from .models import Annotation, Item, Job, Membership, Project, QueueEntry, Round


class MembershipInline(admin.TabularInline):
    model = Membership
    extra = 0
    autocomplete_fields = ["user"]


@admin.register(Project)
class ProjectAdmin(admin.ModelAdmin):
    list_display = ["name", "strategy", "batch_size", "audit_rate", "embedding_version", "created_at"]
    search_fields = ["name"]
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin):
    list_display = ["project", "user", "role", "created_at"]
    list_filter = ["role", "project"]
    autocomplete_fields = ["user"]


@admin.register(Item)
class ItemAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "original_name", "row", "ground_truth", "created_at"]
    list_filter = ["project"]
    search_fields = ["original_name", "checksum"]
    readonly_fields = ["checksum", "created_at"]


@admin.register(Round)
class RoundAdmin(admin.ModelAdmin):
    list_display = ["project", "number", "status", "strategy", "labeled_count", "created_at", "finished_at"]
    list_filter = ["status", "project"]


@admin.register(QueueEntry)
class QueueEntryAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "round", "item", "rank", "state", "is_audit", "leased_by"]
    list_filter = ["state", "is_audit", "project"]
    raw_id_fields = ["item", "round"]


@admin.register(Annotation)
class AnnotationAdmin(admin.ModelAdmin):
    list_display = ["id", "item", "annotator", "action", "label", "is_current", "created_at"]
    list_filter = ["action", "is_current"]
    raw_id_fields = ["item", "supersedes", "queue_entry"]


@admin.register(Job)
class JobAdmin(admin.ModelAdmin):
    list_display = ["id", "project", "kind", "status", "progress", "created_at", "finished_at"]
    list_filter = ["kind", "status"]
    readonly_fields = ["id", "created_at", "finished_at"]
