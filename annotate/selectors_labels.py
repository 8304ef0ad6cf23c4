"""Reads of the labels an item ends up with (exports, statistics, review).

The *final label* of an item: among its current annotation rows that carry a label (actions
``label`` and ``correct``), a reviewer's correction wins over annotators' labels, and among rows of
the same kind the latest wins.  Undo and skip rows carry no label, so an undone label is no label.
An item labeled by two or more annotators (overlap) takes its Dawid-Skene consensus instead
(``Item.consensus_label``, written by the quality worker, services/quality.py), unless a reviewer
corrected it: the correction still wins.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Iterable

from .models import Annotation

#: Annotation actions whose current row gives an item its label.
LABEL_ACTIONS = (Annotation.Action.LABEL, Annotation.Action.CORRECT)


@dataclass(frozen=True)
class FinalLabel:
    label: str
    annotator: str
    annotator_id: int
    annotation_id: int
    action: str
    created_at: datetime
    n_annotations: int  # how many current labeled rows the item has (agreement context)
    origin: str = Annotation.Origin.MANUAL  # manual, suggestion, candidate or prelabel (Annotation.Origin)
    consensus: bool = False  # the label is the annotators' consensus, not the latest row's


def final_labels(item_ids: Iterable[int]) -> dict[int, FinalLabel]:
    """item id -> its final label, for the items that have one.  One query."""
    ids = list(item_ids)
    if not ids:
        return {}
    rows = (
        Annotation.objects.filter(item_id__in=ids, is_current=True, action__in=LABEL_ACTIONS)
        .exclude(label="")
        .order_by("item_id", "id")
        .values_list("item_id", "label", "annotator__username", "annotator_id", "id", "action", "created_at",
                     "item__consensus_label", "origin")
    )
    out: dict[int, FinalLabel] = {}
    counts: dict[int, int] = {}
    consensus: dict[int, str] = {}
    for item_id, label, user, user_id, ann_id, action, created, agreed, origin in rows:
        counts[item_id] = counts.get(item_id, 0) + 1
        if agreed:
            consensus[item_id] = agreed
        prev = out.get(item_id)
        # Rows come oldest first: a later row replaces an earlier one unless it would put a plain
        # label over a correction.
        if prev is not None and prev.action == Annotation.Action.CORRECT and action != Annotation.Action.CORRECT:
            continue
        out[item_id] = FinalLabel(label, user, user_id, ann_id, action, created, 0, origin=origin)
    for k, v in out.items():
        if k in consensus and counts[k] >= 2 and v.action != Annotation.Action.CORRECT:
            out[k] = FinalLabel(**{**v.__dict__, "label": consensus[k], "consensus": True})
    return {k: FinalLabel(**{**v.__dict__, "n_annotations": counts[k]}) for k, v in out.items()}
