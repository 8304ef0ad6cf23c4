"""Reviewers see and correct other people's labels.

A correction is a new Annotation row (``action="correct"``) by the reviewer; the corrected row is
kept (history) and referenced by ``supersedes``.  The final label of an item prefers corrections
(``selectors_labels.final_labels``), so exports, statistics and review all show the corrected label.
"""
from __future__ import annotations

from typing import Any

from django.db import transaction

from ..models import Annotation, Item, Membership, Project
from ..permissions import has_role
from ..selectors_labels import final_labels
from .annotations import parse_item_id
from .errors import BadInput, NotFound, ServiceError
from .label_counts import label_change
from .rounds import round_maybe_request


def annotation_correct(*, project: Project, reviewer, item_id: Any, label: Any) -> Annotation:
    """Record ``reviewer``'s correction of item ``item_id`` to ``label``; returns the new row.

    The same correction sent again (a double submit, a retried request) stores nothing and returns the
    row already current.  Then the refill policy runs, as after any label (``annotations.annotation_submit``)."""
    if not has_role(user=reviewer, project=project, role=Membership.Role.REVIEWER):
        raise ServiceError(f"correcting labels needs the reviewer role in project {project.pk}", status=403)
    item_id = parse_item_id(item_id)  # the label API's rule: a JSON integer, not true, 1708.9 or " 1708 "
    if not isinstance(label, str) or label not in project.classes:
        raise BadInput(f"label {label!r} is not one of the project's classes {project.classes}")
    with transaction.atomic():
        if not Item.objects.filter(project=project, pk=item_id).exists():
            raise NotFound(f"item {item_id} is not in project {project.pk}")
        current = final_labels([item_id]).get(item_id)
        if current is None:
            raise BadInput(f"item {item_id} has no label yet; only labeled items can be corrected")
        prev = (Annotation.objects.select_for_update()
                .filter(item_id=item_id, annotator=reviewer, is_current=True).first())
        if prev is not None and prev.action == Annotation.Action.CORRECT and prev.label == label:
            return prev  # already this reviewer's current correction: nothing to add
        if prev is not None:
            Annotation.objects.filter(pk=prev.pk).update(is_current=False)
        ann = Annotation.objects.create(
            item_id=item_id, annotator=reviewer, action=Annotation.Action.CORRECT, label=label,
            is_current=True, supersedes_id=current.annotation_id,
        )
        label_change(project_id=project.pk, item_id=item_id, annotator_id=reviewer.pk,
                     before=prev.action if prev is not None else None, after=ann.action)
    round_maybe_request(project=project)
    return ann
