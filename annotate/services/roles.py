"""Roles mapped on Django groups and permissions, kept in sync with ``Membership.role``.

The per-project rule lives in ``annotate.permissions`` (a Membership row per project and user).
This module mirrors it onto Django's auth system so that Django admin works for project admins
without being superusers:

- group "Loupe annotators": ``annotate.label_project``
- group "Loupe reviewers": + ``annotate.review_project`` and view rights on items and annotations
- group "Loupe admins": + ``annotate.configure_project`` and the admin model permissions
  (change projects, manage memberships, view items/rounds/jobs/queue/annotations)

A user is in the group of every role they hold in some project, and staff (may open admin) while
they are admin of at least one project.  Admin pages then show only the projects they administer
(``annotate.admin``).  Call :func:`membership_sync` after any change of memberships; the service
functions here do so themselves.
"""
from __future__ import annotations

import secrets

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group, Permission
from django.contrib.contenttypes.models import ContentType
from django.db import transaction

from ..models import Membership, Project

GROUPS = {
    Membership.Role.ANNOTATOR: "Loupe annotators",
    Membership.Role.REVIEWER: "Loupe reviewers",
    Membership.Role.ADMIN: "Loupe admins",
}
CUSTOM = {
    "label_project": "Can label items of projects they belong to",
    "review_project": "Can see and correct others' labels",
    "configure_project": "Can configure projects, import and export",
}
_ROLE_PERMS = {
    Membership.Role.ANNOTATOR: ["annotate.label_project"],
    Membership.Role.REVIEWER: ["annotate.label_project", "annotate.review_project", "annotate.view_item",
                               "annotate.view_annotation"],
    Membership.Role.ADMIN: [
        "annotate.label_project", "annotate.review_project", "annotate.configure_project",
        "annotate.view_project", "annotate.change_project",
        "annotate.view_membership", "annotate.add_membership", "annotate.change_membership",
        "annotate.delete_membership",
        "annotate.view_item", "annotate.view_round", "annotate.view_job", "annotate.view_queueentry",
        "annotate.view_annotation",
        "auth.view_user",  # to pick members in the membership inline (user autocomplete)
    ],
}


def _perm(codename_full: str) -> Permission:
    app, codename = codename_full.split(".")
    if codename in CUSTOM:
        ct = ContentType.objects.get_for_model(Project)
        perm, _ = Permission.objects.get_or_create(codename=codename, content_type=ct,
                                                   defaults={"name": CUSTOM[codename]})
        return perm
    return Permission.objects.get(content_type__app_label=app, codename=codename)


def role_groups_ensure() -> dict[str, Group]:
    """Create the three groups and their permissions (idempotent)."""
    out = {}
    for role, name in GROUPS.items():
        group, _ = Group.objects.get_or_create(name=name)
        group.permissions.set([_perm(p) for p in _ROLE_PERMS[role]])
        out[role] = group
    return out


def membership_sync(*, user) -> None:
    """Put ``user`` in exactly the Loupe groups of the roles they hold; staff iff admin somewhere."""
    groups = role_groups_ensure()
    roles = set(Membership.objects.filter(user=user).values_list("role", flat=True))
    for role, group in groups.items():
        if role in roles:
            user.groups.add(group)
        else:
            user.groups.remove(group)
    staff = user.is_superuser or Membership.Role.ADMIN in roles
    if user.is_staff != staff:
        user.is_staff = staff
        user.save(update_fields=["is_staff"])


@transaction.atomic
def membership_set(*, project: Project, user, role: str) -> Membership:
    if role not in Membership.Role.values:
        raise ValueError(f"role {role!r} is not one of {Membership.Role.values}")
    m, _ = Membership.objects.update_or_create(project=project, user=user, defaults={"role": role})
    membership_sync(user=user)
    return m


@transaction.atomic
def membership_remove(*, project: Project, user) -> None:
    Membership.objects.filter(project=project, user=user).delete()
    membership_sync(user=user)
    membership_revoked(project_id=project.pk, user_id=user.pk)


def membership_revoked(*, project_id: int, user_id: int) -> int:
    """The user left the project: their leases on it go back to the queue now (nothing is lost: a lease
    holds no label), and after commit their open WebSockets on it close (a per-member group).
    Returns the number of leases released."""
    return memberships_revoked(project_id=project_id, user_ids=[user_id])


def memberships_revoked(*, project_id: int, user_ids: list[int]) -> int:
    """:func:`membership_revoked` for several users who left the project in one transaction: their
    leases go back in one statement (``queue.queue_release_users``: one update of the kept count, so
    the transaction never holds it while it waits for a lease), then each one's sockets close."""
    from .. import realtime  # noqa: PLC0415 - realtime imports channels
    from .queue import queue_release_users  # noqa: PLC0415

    released = queue_release_users(project_id=project_id, user_ids=list(user_ids)) if user_ids else 0
    for user_id in user_ids:
        transaction.on_commit(lambda u=user_id: realtime.send_membership_revoked(project_id, u))
    return released


def user_access_revoked(*, user_id: int) -> int:
    """The user may no longer use Loupe (deactivated, or about to be deleted): their leases on every
    project go back to the queue now, and after commit every open WebSocket of theirs closes (a
    per-user group).  Returns the number of leases released."""
    from .. import realtime  # noqa: PLC0415
    from .queue import queue_release_everywhere  # noqa: PLC0415

    released = sum(queue_release_everywhere(user_id=user_id).values())
    transaction.on_commit(lambda: realtime.send_access_revoked(user_id))
    return released


@transaction.atomic
def user_deactivate(*, user) -> int:
    """Deactivate an account: no login, no API token (``token_user`` checks it), no session; its leases
    are released and its open sockets closed (:func:`user_access_revoked`).  Its labels stay."""
    if user.is_active:
        user.is_active = False
        user.save(update_fields=["is_active"])
    return user_access_revoked(user_id=user.pk)


def admin_user_ensure(*, username: str = "admin", email: str = "admin@example.com",
                      password: str | None = None) -> str | None:
    """Make sure superuser ``username`` exists.  Returns the password when this call created the user
    (a random one unless given), None when it existed already: an existing password is never changed."""
    User = get_user_model()
    if User.objects.filter(username=username).exists():
        return None
    password = password or secrets.token_urlsafe(12)
    User.objects.create_superuser(username=username, email=email, password=password)
    return password
