"""Admin for accounts: users scoped to one's projects, API tokens, throttle-aware login forms.

- Users (issue 12, row 11): a project admin who is not a superuser sees only the members of the
  projects they administer, without the superuser/staff flags or permissions.  The user picker of
  the membership inline (autocomplete) finds those members, and any other user only by their exact
  username, so the user list cannot be enumerated through it.
- API tokens (row 12): listed per user (prefix, name, created, last used), revoked by an action;
  keys are never shown (only their SHA-256 is stored).  ``manage.py loupe_token`` does the same.
- Deactivating a user (or deleting one) ends their access at once: ``services.roles.user_access_revoked``
  closes their open WebSockets and returns their leases to the queue.
- Login forms (row 12): when ``annotate.throttle`` refuses a login, the form says so instead of
  "wrong password".
"""
from __future__ import annotations

from django import forms
from django.contrib import admin, messages
from django.contrib.admin.forms import AdminAuthenticationForm
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin
from django.contrib.auth.forms import AuthenticationForm

from .models import ApiToken, Membership
from .services import roles as role_services
from .services.tokens import token_revoke

User = get_user_model()

THROTTLED = "Too many failed logins for this username or from this address; try again in a few minutes."


def _throttle_aware(form_class):
    class Form(form_class):
        def get_invalid_login_error(self):
            if getattr(self.request, "loupe_login_throttled", False):
                return forms.ValidationError(THROTTLED, code="throttled")
            return super().get_invalid_login_error()

    Form.__name__ = f"Throttled{form_class.__name__}"
    return Form


LoginForm = _throttle_aware(AuthenticationForm)
AdminLoginForm = _throttle_aware(AdminAuthenticationForm)
admin.site.login_form = AdminLoginForm


def _members_of_my_projects(user):
    mine = Membership.objects.filter(user=user, role=Membership.Role.ADMIN).values("project_id")
    return Membership.objects.filter(project_id__in=mine).values("user_id")


if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class LoupeUserAdmin(UserAdmin):
    _limited_fieldsets = ((None, {"fields": ("username", "first_name", "last_name", "email", "is_active",
                                             "last_login", "date_joined")}),)

    def get_queryset(self, request):
        qs = super().get_queryset(request)
        if request.user.is_superuser:
            return qs
        if self._is_autocomplete(request):
            return qs.filter(is_active=True)  # narrowed by get_search_results
        return qs.filter(pk__in=_members_of_my_projects(request.user))

    @staticmethod
    def _is_autocomplete(request) -> bool:
        return request.path.rstrip("/").endswith("/autocomplete")

    def get_list_display(self, request):
        if request.user.is_superuser:
            return super().get_list_display(request)
        return ("username", "first_name", "last_name", "email")

    def get_list_filter(self, request):
        return super().get_list_filter(request) if request.user.is_superuser else ()

    def get_fieldsets(self, request, obj=None):
        if request.user.is_superuser or obj is None:
            return super().get_fieldsets(request, obj)
        return self._limited_fieldsets

    def save_model(self, request, obj, form, change):
        super().save_model(request, obj, form, change)
        if change and "is_active" in form.changed_data and not obj.is_active:
            released = role_services.user_access_revoked(user_id=obj.pk)
            self.message_user(request, f"{obj.username} deactivated: open pages disconnected, "
                                       f"{released} leased item(s) returned to the queue", messages.INFO)

    def delete_model(self, request, obj):
        role_services.user_access_revoked(user_id=obj.pk)  # before the row goes (leases point at it)
        super().delete_model(request, obj)

    def delete_queryset(self, request, queryset):
        for pk in queryset.values_list("pk", flat=True):
            role_services.user_access_revoked(user_id=pk)
        super().delete_queryset(request, queryset)

    def get_search_results(self, request, queryset, search_term):
        if request.user.is_superuser or not self._is_autocomplete(request):
            return super().get_search_results(request, queryset, search_term)
        # The membership picker: members of my projects by the usual search, anyone else by exact username.
        members, dup = super().get_search_results(
            request, queryset.filter(pk__in=_members_of_my_projects(request.user)), search_term)
        term = search_term.strip()
        exact = queryset.filter(username__iexact=term) if term else queryset.none()
        return (members | exact).distinct(), dup


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    list_display = ["prefix", "user", "name", "created_at", "last_used_at", "revoked"]
    list_filter = ["revoked"]
    search_fields = ["user__username", "name", "prefix"]
    readonly_fields = ["user", "name", "prefix", "created_at", "last_used_at", "revoked"]
    exclude = ["key_hash"]
    actions = ["revoke"]

    def has_add_permission(self, request):
        return False  # keys are made by `manage.py loupe_token` and shown once there

    @admin.action(description="Revoke selected tokens")
    def revoke(self, request, queryset):
        n = token_revoke(tokens=queryset)
        self.message_user(request, f"{n} token(s) revoked", messages.SUCCESS)
