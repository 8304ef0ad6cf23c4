"""Project membership and roles.

Roles are ordered: annotator < reviewer < admin.  Superusers count as admin of every project.
Views, the API, image files and WebSockets all go through :func:`project_for` so the rule lives
in one place.  A non-member gets 404 (the project's existence is not revealed); a member whose
role is too low gets 403.
"""
from __future__ import annotations

from django.core.exceptions import PermissionDenied
from django.http import Http404

from .models import Membership, Project

ROLE_ORDER = {Membership.Role.ANNOTATOR: 0, Membership.Role.REVIEWER: 1, Membership.Role.ADMIN: 2}


def role_of(*, user, project: Project) -> str | None:
    """The user's role in the project, or None for a non-member (or an anonymous user)."""
    if user is None or not user.is_authenticated or not user.is_active:
        return None
    if user.is_superuser:
        return Membership.Role.ADMIN
    m = Membership.objects.filter(project=project, user=user).only("role").first()
    return m.role if m else None


def has_role(*, user, project: Project, role: str = Membership.Role.ANNOTATOR) -> bool:
    have = role_of(user=user, project=project)
    return have is not None and ROLE_ORDER[have] >= ROLE_ORDER[role]


def project_for(*, user, project_id: int, role: str = Membership.Role.ANNOTATOR) -> Project:
    """Load a project the user may act on with at least ``role``; 404 for non-members, 403 for too low a role.

    One statement: the project with the user's role joined in, read fresh on every request so a role
    change or a removal counts at once; the session and the user come from the cache
    (``cached_auth.py``).  Written as SQL once per process: every API request runs it, and the ORM
    spent more CPU building the same query (a sub-query annotation) than the database answering it."""
    if user is None or not user.is_authenticated or not user.is_active:
        raise Http404(f"project {project_id} does not exist")
    try:
        pid = int(project_id)
    except (ValueError, TypeError):
        raise Http404(f"project {project_id} does not exist") from None
    found = list(Project.objects.raw(_project_role_sql(), [user.pk, pid]))
    if not found:
        raise Http404(f"project {project_id} does not exist")
    project = found[0]
    have = Membership.Role.ADMIN if user.is_superuser else project.member_role
    if have is None:
        raise Http404(f"project {project_id} does not exist")
    if ROLE_ORDER[have] < ROLE_ORDER[role]:
        raise PermissionDenied(f"this needs the {role} role in project {project_id}; you are {have}")
    return project


_PROJECT_ROLE_SQL: str | None = None


def _project_role_sql() -> str:
    global _PROJECT_ROLE_SQL
    if _PROJECT_ROLE_SQL is None:
        cols = ", ".join(f'p."{f.column}"' for f in Project._meta.concrete_fields)
        _PROJECT_ROLE_SQL = (
            f'SELECT {cols}, m."role" AS member_role FROM "{Project._meta.db_table}" p '
            f'LEFT JOIN "{Membership._meta.db_table}" m ON m."project_id" = p."id" AND m."user_id" = %s '
            'WHERE p."id" = %s')
    return _PROJECT_ROLE_SQL


def projects_of(*, user):
    """Projects the user is a member of (all of them for a superuser)."""
    if not user.is_authenticated:
        return Project.objects.none()
    if user.is_superuser:
        return Project.objects.all()
    return Project.objects.filter(memberships__user=user).distinct()
