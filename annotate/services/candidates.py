"""What the model offers the annotator: its top classes per queued item, the calibrated candidate set,
and whether it is good enough to suggest its guess.

A round stores, with each entry it writes, the model's top :data:`TOP_K` classes and probabilities
(``QueueEntry.top_classes``) and how many of them form the candidate set (``candidate_count``).
The set is split-conformal (``selection.candidates``): its threshold is calibrated on the project's
earlier entries, each scored by the model that was current when it was served (prequential), against
the label it got.  Labels that came from an accepted suggestion or a picked candidate are left out of
the calibration and of the accuracy that turns suggestions on: they were shown the model's answer, so
they would agree with it more than an independent label does (leaving them out errs on the side of
larger sets and later suggestions).
"""
from __future__ import annotations

from typing import Any

import numpy as np

from selection.candidates import confidence_gate, lac_threshold, set_sizes, top_k

from ..models import Annotation, Project, QueueEntry

#: classes stored per queue entry (a true class outside them counts as probability 0 in the calibration)
TOP_K = 20
#: most candidates the page shows (keys Shift+1..9)
MAX_SHOWN = 9
#: the latest served-and-labeled entries used for calibration: recent ones only, since the model improves
#: from round to round and the predictions of its first rounds (few labels) say little about today's
CALIBRATION_WINDOW = 200
#: fewer calibrating labels than this: no suggestion yet
MIN_CALIBRATION = 20


def calibration_read(*, project: Project, labels: dict[int, str], classes: list[str]) -> dict[str, Any]:
    """Threshold and prequential accuracy from the project's labeled entries that carried predictions.

    ``labels``: item id -> final label (the round has read it already).  Returns a dict for the round's
    metrics: ``candidate_threshold``, ``prequential_accuracy``, ``prequential_n``.
    """
    rows = list(
        QueueEntry.objects.filter(project=project, state=QueueEntry.State.DONE)
        .exclude(top_classes=[]).order_by("-done_at", "-id")
        .values_list("item_id", "top_classes")[:CALIBRATION_WINDOW]
    )
    shown = set(
        Annotation.objects.filter(item_id__in=[i for i, _ in rows], is_current=True)
        .exclude(origin=Annotation.Origin.MANUAL).values_list("item_id", flat=True)
    )
    index = {c: k for k, c in enumerate(classes)}
    p_true, hits, conf = [], [], []
    for item_id, top in rows:
        label = labels.get(item_id)
        if label is None or label not in index or item_id in shown or not top:
            continue
        names = [c for c, _ in top]
        p_true.append(float(dict(top).get(label, 0.0)))
        hits.append(names[0] == label)
        conf.append(float(top[0][1]))
    n = len(p_true)
    return {
        "prequential_n": n,
        "prequential_accuracy": float(np.mean(hits)) if n else None,
        "candidate_threshold": lac_threshold(np.array(p_true), float(project.candidate_coverage)) if n else 0.0,
        "suggest_target": float(project.suggest_min_accuracy),
        "suggest_confidence": confidence_gate(np.array(conf), np.array(hits, dtype=bool),
                                              float(project.suggest_min_accuracy), min_n=MIN_CALIBRATION),
    }


def entry_predictions(probs: np.ndarray, classes: list[str], threshold: float) -> list[dict[str, Any]]:
    """Per row of ``probs`` (n, c): the predicted class, its confidence, the top classes and the set size."""
    if len(probs) == 0:
        return []
    idx, p = top_k(probs, TOP_K)
    sizes = set_sizes(p, threshold)
    return [
        {"predicted_label": classes[int(i[0])], "predicted_confidence": float(pp[0]),
         "top_classes": [[classes[int(a)], round(float(b), 5)] for a, b in zip(i, pp)],
         "candidate_count": int(s)}
        for i, pp, s in zip(idx, p, sizes)
    ]


def suggestions_on(*, project: Project, metrics: dict[str, Any] | None, confidence: float | None = None) -> bool:
    """Does the page show the model's guess for an entry of a round with these metrics?

    Per item: the guess is shown when the entry's confidence reaches the round's ``suggest_confidence``,
    the lowest top-1 confidence above which the model's earlier guesses were right at least
    ``suggest_min_accuracy`` of the time (:func:`selection.candidates.confidence_gate`).  Rounds written
    before that cut-off existed, or for another ``suggest_min_accuracy`` than the project's now, fall
    back to the round-wide prequential accuracy until the next round.
    """
    m = metrics or {}
    if not project.suggestions or m.get("prequential_n", 0) < MIN_CALIBRATION:
        return False
    if "suggest_confidence" in m and m.get("suggest_target") == float(project.suggest_min_accuracy):
        cut = m["suggest_confidence"]
        return cut is not None and confidence is not None and confidence >= cut
    acc = m.get("prequential_accuracy")
    return acc is not None and acc >= project.suggest_min_accuracy


def offer(entry: QueueEntry, *, project: Project) -> dict[str, Any]:
    """The labeling page's ``candidates`` and ``suggestion`` for a leased entry (nothing on audit items:
    their labels estimate the model's accuracy, and a shown guess would pull them towards it)."""
    if entry.is_audit or not entry.top_classes:
        return {}
    n = min(entry.candidate_count or 1, MAX_SHOWN, len(entry.top_classes))
    out: dict[str, Any] = {"candidates": [{"label": c, "p": p} for c, p in entry.top_classes[:n]]}
    if entry.round_id is not None and suggestions_on(project=project, metrics=entry.round.metrics,
                                                     confidence=entry.predicted_confidence):
        out["suggestion"] = {"label": entry.predicted_label, "confidence": entry.predicted_confidence}
    return out
