"""Reads of the feature-alignment history (services/alignment.py) for the dashboard."""
from __future__ import annotations

from typing import Any

from .models import AlignmentDecision, Project


def alignment_history(*, project: Project, limit: int = 20) -> list[dict[str, Any]]:
    """The newest ``limit`` alignment decisions, newest first, as rows for the dashboard table."""
    rows = []
    for d in AlignmentDecision.objects.filter(project=project).select_related("embed_job")[:limit]:
        rows.append({
            "created_at": d.created_at, "labeled": d.labeled_count, "method": d.method,
            "score_current": d.score_current, "score_finetuned": d.score_finetuned, "delta": d.delta,
            "threshold": d.threshold, "val_accuracy": d.val_accuracy, "realigned": d.realigned,
            "embed_status": d.embed_job.status if d.embed_job else "",
        })
    return rows
